// The service graph view: cytoscape canvas, legend and the side panel.
import cytoscape from "cytoscape";
import type { Core, ElementDefinition, NodeSingular } from "cytoscape";
import { api, APIError, type Detail, type Graph, type GraphEdge, type GraphNode } from "./api";
import { fmtMs, fmtPct, fmtRate, h } from "./format";
import { sparkline } from "./sparkline";

const healthColor: Record<string, string> = {
  healthy: "#16a34a",
  degraded: "#d97706",
  failing: "#dc2626",
  idle: "#94a3b8",
};

function edgeColor(e: GraphEdge): string {
  if (e.requests === 0) return "#cbd5e1";
  if (e.errorRate >= 0.2) return "#dc2626";
  if (e.errorRate > 0.001) return "#d97706";
  return "#64748b";
}

function edgeLabel(e: GraphEdge): string {
  if (e.requests === 0) return e.mtls ? "idle · mTLS" : "idle";
  const first = `${fmtRate(e.rps)} rps · ${fmtPct(e.errorRate)} err`;
  const second = `p99 ${fmtMs(e.p99Ms)}${e.mtls ? " · mTLS" : ""}`;
  return `${first}\n${second}`;
}

function nodeName(n: GraphNode | undefined, id: string): string {
  return n ? n.name : id;
}

// layered places nodes left to right by their longest distance from a root.
function layered(g: Graph): Map<string, { x: number; y: number }> {
  const out = new Map<string, string[]>();
  const indeg = new Map<string, number>();
  for (const n of g.nodes) {
    out.set(n.id, []);
    indeg.set(n.id, 0);
  }
  for (const e of g.edges) {
    if (e.source === e.target) continue;
    out.get(e.source)?.push(e.target);
    indeg.set(e.target, (indeg.get(e.target) ?? 0) + 1);
  }
  const depth = new Map<string, number>();
  let roots = g.nodes.filter((n) => (indeg.get(n.id) ?? 0) === 0).map((n) => n.id);
  if (roots.length === 0 && g.nodes.length > 0) roots = [g.nodes[0].id];
  const queue: Array<[string, number]> = roots.map((r) => [r, 0]);
  const limit = g.nodes.length;
  while (queue.length > 0) {
    const [id, d] = queue.shift()!;
    if ((depth.get(id) ?? -1) >= d || d > limit) continue;
    depth.set(id, d);
    for (const t of out.get(id) ?? []) queue.push([t, d + 1]);
  }
  for (const n of g.nodes) if (!depth.has(n.id)) depth.set(n.id, 0);
  const layers = new Map<number, string[]>();
  for (const n of g.nodes) {
    const d = depth.get(n.id)!;
    if (!layers.has(d)) layers.set(d, []);
    layers.get(d)!.push(n.id);
  }
  const pos = new Map<string, { x: number; y: number }>();
  for (const [d, ids] of layers) {
    ids.sort();
    ids.forEach((id, i) => pos.set(id, { x: d * 260, y: (i - (ids.length - 1) / 2) * 150 }));
  }
  return pos;
}

export class GraphView {
  readonly el: HTMLElement;
  private cyInstance: Core | null = null;
  private canvas: HTMLElement;
  private panel: HTMLElement;
  private summary: HTMLElement;
  private meta: HTMLElement;
  private empty: HTMLElement;
  private graph: Graph | null = null;
  private selected: string | null = null;
  private shape = "";

  constructor() {
    this.canvas = h("div", { class: "graph-canvas", id: "graph-canvas" });
    this.panel = h("aside", { class: "side-panel", id: "side-panel", hidden: true, "aria-live": "polite" });
    this.summary = h("ul", { class: "visually-hidden", id: "graph-summary", "aria-label": "Graph edges" });
    this.meta = h("div", { class: "graph-meta" });
    this.empty = h(
      "div",
      { class: "graph-empty", hidden: true },
      h("strong", {}, "No traffic yet"),
      h("p", {}, "Send requests through the mesh; edges appear after the next scrape of the proxies' metrics."),
    );
    const fit = h("button", { class: "btn", type: "button", title: "Fit graph to view" }, "Fit");
    fit.addEventListener("click", () => this.fitView());
    const legend = h(
      "div",
      { class: "legend" },
      ...["healthy", "degraded", "failing", "idle"].map((k) =>
        h("span", { class: "legend-item" }, h("i", { class: `dot ${k}` }), k),
      ),
      h("span", { class: "legend-item" }, h("i", { class: "line solid" }), "mTLS"),
      h("span", { class: "legend-item" }, h("i", { class: "line dashed" }), "plaintext"),
    );
    this.el = h(
      "section",
      { class: "graph-view" },
      h("div", { class: "graph-stage" }, h("div", { class: "graph-toolbar" }, this.meta, fit), this.canvas, this.empty, legend),
      this.panel,
      this.summary,
    );
  }

  // cy creates the cytoscape instance on first use, once the canvas is in
  // the document (cytoscape measures its container when it starts).
  private get cy(): Core {
    if (this.cyInstance) return this.cyInstance;
    const cy = cytoscape({
      container: this.canvas,
      minZoom: 0.2,
      maxZoom: 3,
      style: [
        {
          selector: "node",
          style: {
            shape: "ellipse",
            width: 46,
            height: 46,
            "background-color": "#ffffff",
            "border-width": 4,
            "border-color": "data(color)",
            label: "data(label)",
            "text-valign": "bottom",
            "text-margin-y": 8,
            "text-wrap": "wrap",
            "font-family": "Inter, system-ui, sans-serif",
            "font-size": 13,
            "font-weight": 600,
            color: "#0f172a",
            "text-background-color": "#f8fafc",
            "text-background-opacity": 0.85,
            "text-background-padding": "2px",
            "text-background-shape": "roundrectangle",
          },
        },
        { selector: "node[kind = 'workload']", style: { shape: "round-rectangle" } },
        { selector: "node[kind = 'unknown']", style: { shape: "diamond", "border-style": "dashed" } },
        {
          selector: "node:selected",
          style: { "background-color": "#eef2ff", "overlay-color": "#4f46e5", "overlay-opacity": 0.12, "overlay-padding": 8 },
        },
        {
          selector: "edge",
          style: {
            width: "data(width)",
            "curve-style": "bezier",
            "line-color": "data(color)",
            "target-arrow-color": "data(color)",
            "target-arrow-shape": "triangle",
            "arrow-scale": 1.1,
            label: "data(label)",
            "text-wrap": "wrap",
            "font-size": 11,
            "font-family": "Inter, system-ui, sans-serif",
            color: "#334155",
            "text-background-color": "#ffffff",
            "text-background-opacity": 0.95,
            "text-background-padding": "3px",
            "text-background-shape": "roundrectangle",
            "text-border-width": 1,
            "text-border-color": "#e2e8f0",
            "text-border-opacity": 1,
          },
        },
        { selector: "edge[!mtls]", style: { "line-style": "dashed" } },
      ],
    });
    cy.on("tap", "node", (ev) => this.select((ev.target as NodeSingular).id()));
    cy.on("tap", (ev) => {
      if (ev.target === cy) this.select(null);
    });
    // Tests and curious users can reach the graph from the console.
    (window as unknown as { weft: { cy: Core } }).weft = { cy };
    this.cyInstance = cy;
    return cy;
  }

  async refresh(): Promise<void> {
    const g = await api.graph();
    this.render(g);
    if (this.selected) await this.renderPanel();
  }

  // fitView shows the whole graph, but never blown up past 1.5x.
  private fitView(): void {
    const cy = this.cy;
    cy.fit(undefined, 80);
    if (cy.zoom() > 1.5) {
      cy.zoom(1.5);
      cy.center();
    }
  }

  resize(): void {
    if (this.cyInstance) this.cyInstance.resize();
  }

  private render(g: Graph): void {
    this.graph = g;
    const byId = new Map(g.nodes.map((n) => [n.id, n]));
    const services = g.nodes.filter((n) => n.kind === "service").length;
    this.meta.replaceChildren(
      h("strong", {}, `${services} services`),
      h("span", {}, ` · ${g.edges.length} edges · last ${g.window.replace(/0s$/, "").replace(/m0$/, "m")}`),
    );
    this.empty.hidden = g.nodes.length > 0;

    const shape = g.nodes.map((n) => n.id).join("|") + "#" + g.edges.map((e) => e.id).join("|");
    const maxRps = Math.max(1, ...g.edges.map((e) => e.rps));
    const els: ElementDefinition[] = [
      ...g.nodes.map((n) => ({
        group: "nodes" as const,
        data: {
          id: n.id,
          kind: n.kind,
          label: n.kind === "unknown" ? "unknown" : `${n.name}\n${n.namespace}`,
          color: healthColor[n.health] ?? "#94a3b8",
          health: n.health,
        },
      })),
      ...g.edges.map((e) => ({
        group: "edges" as const,
        data: {
          id: e.id,
          source: e.source,
          target: e.target,
          label: edgeLabel(e),
          color: edgeColor(e),
          width: 1.5 + 3.5 * Math.sqrt(e.rps / maxRps),
          mtls: e.mtls,
          rps: e.rps,
          errorRate: e.errorRate,
          p99Ms: e.p99Ms,
        },
      })),
    ];
    if (shape !== this.shape) {
      const pos = layered(g);
      this.cy.batch(() => {
        this.cy.elements().remove();
        this.cy.add(
          els.map((el) => (el.group === "nodes" ? { ...el, position: pos.get(el.data.id as string) } : el)),
        );
      });
      this.cy.layout({ name: "preset", fit: false }).run();
      this.fitView();
      if (this.selected) this.cy.getElementById(this.selected).select();
      this.shape = shape;
    } else {
      this.cy.batch(() => {
        for (const el of els) this.cy.getElementById(el.data.id as string).data(el.data);
      });
    }

    this.summary.replaceChildren(
      ...g.nodes.map((n) => h("li", { "data-node": n.id }, `${n.kind} ${n.name} (${n.namespace || "-"}): ${n.health}`)),
      ...g.edges.map((e) =>
        h(
          "li",
          { "data-edge": e.id },
          `${nodeName(byId.get(e.source), e.source)} → ${nodeName(byId.get(e.target), e.target)}: ` +
            `${fmtRate(e.rps)} rps, ${fmtPct(e.errorRate)} errors, p99 ${fmtMs(e.p99Ms)}${e.mtls ? ", mTLS" : ""}`,
        ),
      ),
    );
  }

  private select(id: string | null): void {
    this.selected = id;
    const wasHidden = this.panel.hidden;
    this.panel.hidden = !id;
    if (wasHidden !== this.panel.hidden) {
      // The canvas changed width: let cytoscape measure it and keep all in view.
      this.cy.resize();
      this.fitView();
    }
    if (!id) {
      this.cy.elements().unselect();
      return;
    }
    void this.renderPanel();
  }

  private async renderPanel(): Promise<void> {
    const id = this.selected;
    const node = this.graph?.nodes.find((n) => n.id === id);
    if (!id || !node) return;
    let detail: Detail | null = null;
    let failure = "";
    if (node.kind !== "unknown") {
      try {
        detail = await api.detail(node.kind === "service" ? "services" : "workloads", node.namespace, node.name);
      } catch (e) {
        failure =
          e instanceof APIError && e.status === 404
            ? "No traffic recorded for this node yet."
            : e instanceof Error
              ? e.message
              : String(e);
      }
    }
    if (this.selected !== id) return; // the user moved on meanwhile

    const close = h("button", { class: "icon-btn", type: "button", "aria-label": "Close panel" }, "×");
    close.addEventListener("click", () => this.select(null));
    const sig = detail?.inbound ?? node.inbound;
    const series = detail?.series ?? [];
    const stat = (key: string, title: string, value: string, values: number[], color: string) =>
      h(
        "div",
        { class: "stat", "data-stat": key },
        h("div", { class: "stat-title" }, title),
        h("div", { class: "stat-value" }, value),
        sparkline(values, { color, width: 294, height: 42, label: `${title} over the last 10 minutes` }),
      );
    const edgeRow = (e: GraphEdge, dir: "in" | "out") => {
      const other = this.graph?.nodes.find((n) => n.id === (dir === "in" ? e.source : e.target));
      return h(
        "tr",
        {},
        h("td", {}, (dir === "in" ? "← " : "→ ") + (other?.name ?? "unknown")),
        h("td", { class: "num" }, fmtRate(e.rps)),
        h("td", { class: `num ${e.errorRate > 0.001 ? "bad" : ""}` }, fmtPct(e.errorRate)),
        h("td", { class: "num" }, fmtMs(e.p99Ms)),
        h("td", {}, e.mtls ? h("span", { class: "pill ok", title: "mutual TLS" }, "mTLS") : h("span", { class: "pill muted" }, "plain")),
      );
    };
    const edges = [...(detail?.inEdges ?? []).map((e) => edgeRow(e, "in")), ...(detail?.outEdges ?? []).map((e) => edgeRow(e, "out"))];
    const parts: Array<HTMLElement | null> = [
      h(
        "header",
        { class: "panel-head" },
        h(
          "div",
          {},
          h("div", { class: "panel-kind" }, node.kind),
          h("h2", { id: "panel-title" }, node.name),
          node.namespace ? h("div", { class: "panel-ns" }, `namespace ${node.namespace}`) : null,
        ),
        h("div", { class: "panel-actions" }, h("span", { class: `pill health ${node.health}` }, node.health), close),
      ),
      failure ? h("div", { class: `notice ${detail === null && failure.startsWith("No traffic") ? "info" : "error"}` }, failure) : null,
      h(
        "div",
        { class: "stats" },
        stat("rps", "Request rate", `${fmtRate(sig.rps)} rps`, series.map((p) => p.rps), "#4f46e5"),
        stat("errors", "Error rate (5xx)", fmtPct(sig.errorRate), series.map((p) => p.errorRate * 100), "#dc2626"),
        stat("p99", "P99 latency", fmtMs(sig.p99Ms), series.map((p) => p.p99Ms), "#0891b2"),
      ),
      h("div", { class: "panel-note" }, `Inbound, last ${detail?.window ?? this.graph?.window ?? "1m"}; sparklines cover 10 minutes.`),
      detail?.workloads?.length
        ? h("div", { class: "panel-section" }, h("h3", {}, "Workloads"), h("div", { class: "chips" }, ...detail.workloads.map((w) => h("span", { class: "chip" }, w))))
        : null,
      detail?.services?.length
        ? h("div", { class: "panel-section" }, h("h3", {}, "Services"), h("div", { class: "chips" }, ...detail.services.map((s) => h("span", { class: "chip" }, s))))
        : null,
      edges.length
        ? h(
            "div",
            { class: "panel-section" },
            h("h3", {}, "Traffic"),
            h(
              "table",
              { class: "mini" },
              h("thead", {}, h("tr", {}, h("th", {}, "Peer"), h("th", { class: "num" }, "rps"), h("th", { class: "num" }, "err"), h("th", { class: "num" }, "p99"), h("th", {}, ""))),
              h("tbody", {}, ...edges),
            ),
          )
        : null,
    ];
    this.panel.replaceChildren(...parts.filter((p): p is HTMLElement => p !== null));
  }
}
