// The Config, Proxies and Errors tabs.
import { api, type ErrorEvent, type Resource, type SyncStatus } from "./api";
import { describeFlags, fmtTime, h } from "./format";

export interface View {
  readonly el: HTMLElement;
  refresh(): Promise<void>;
}

function emptyRow(cols: number, text: string): HTMLTableRowElement {
  return h("tr", {}, h("td", { colspan: cols, class: "empty" }, text));
}

function resourceName(r: Resource): string {
  return `${r.metadata.namespace ?? "default"}/${r.metadata.name}`;
}

export class ConfigView implements View {
  readonly el: HTMLElement;
  private body = h("tbody");
  private warnings = h("div", { class: "warnings" });
  private count = h("span", { class: "muted" });

  constructor() {
    this.el = h(
      "section",
      { class: "page", id: "config-view" },
      h("div", { class: "page-head" }, h("h1", {}, "Configuration"), this.count),
      h("p", { class: "lede" }, "Istio resources applied to the control plane, with validation warnings."),
      this.warnings,
      h(
        "div",
        { class: "card" },
        h(
          "table",
          { class: "data" },
          h("thead", {}, h("tr", {}, h("th", {}, "Kind"), h("th", {}, "Name"), h("th", {}, "API version"), h("th", { class: "num" }, "Generation"), h("th", {}, "Status"), h("th", {}, "Spec"))),
          this.body,
        ),
      ),
    );
  }

  async refresh(): Promise<void> {
    const cfg = await api.config();
    this.count.textContent = `${cfg.resources.length} resources · ${cfg.warnings.length} warnings`;
    this.warnings.replaceChildren(
      ...cfg.warnings.map((w) => h("div", { class: "notice warn", role: "status" }, h("strong", {}, "Warning "), w)),
    );
    const open = new Set(
      [...this.body.querySelectorAll("details[open]")].map((d) => d.getAttribute("data-key") ?? ""),
    );
    this.body.replaceChildren(
      ...(cfg.resources.length === 0 ? [emptyRow(6, "No resources applied yet.")] : []),
      ...cfg.resources.map((r) => {
        const name = resourceName(r);
        const key = `${r.kind}/${name}`;
        const related = cfg.warnings.filter((w) => w.includes(name) || w.includes(`${r.kind} ${name}`));
        const details = h(
          "details",
          { "data-key": key, open: open.has(key) },
          h("summary", {}, "view"),
          h("pre", { class: "spec" }, JSON.stringify(r.spec, null, 2)),
        );
        return h(
          "tr",
          {},
          h("td", {}, h("span", { class: "kind" }, r.kind)),
          h("td", { class: "mono" }, name),
          h("td", { class: "muted" }, r.apiVersion),
          h("td", { class: "num" }, String(r.metadata.generation ?? "–")),
          h(
            "td",
            {},
            related.length
              ? h("span", { class: "pill warn", title: related.join("\n") }, `${related.length} warning${related.length > 1 ? "s" : ""}`)
              : h("span", { class: "pill ok" }, "valid"),
          ),
          h("td", {}, details),
        );
      }),
    );
  }
}

const syncTypes = ["CDS", "LDS", "RDS", "EDS", "SDS"];

function syncPill(s: SyncStatus | undefined): HTMLElement {
  const status = s?.status ?? "NOT SENT";
  const cls =
    status === "SYNCED" ? "ok" : status === "STALE" ? "warn" : status === "NACKED" ? "bad" : "muted";
  const text = status === "NACKED" ? "NACK" : status;
  return h("span", { class: `pill ${cls}`, title: s?.error ?? status }, text);
}

export class ProxiesView implements View {
  readonly el: HTMLElement;
  private body = h("tbody");
  private count = h("span", { class: "muted" });

  constructor() {
    this.el = h(
      "section",
      { class: "page", id: "proxies-view" },
      h("div", { class: "page-head" }, h("h1", {}, "Proxies"), this.count),
      h("p", { class: "lede" }, "xDS sync status of every connected proxy, and whether the dashboard can scrape its metrics."),
      h(
        "div",
        { class: "card" },
        h(
          "table",
          { class: "data" },
          h(
            "thead",
            {},
            h("tr", {}, h("th", {}, "Proxy"), h("th", {}, "Workload"), ...syncTypes.map((t) => h("th", {}, t)), h("th", {}, "Metrics")),
          ),
          this.body,
        ),
      ),
    );
  }

  async refresh(): Promise<void> {
    const ps = await api.proxies();
    const nacks = ps.filter((p) => Object.values(p.sync ?? {}).some((s) => s.status === "NACKED")).length;
    this.count.textContent = `${ps.length} connected${nacks ? ` · ${nacks} rejecting config` : ""}`;
    this.body.replaceChildren(
      ...(ps.length === 0 ? [emptyRow(3 + syncTypes.length, "No proxies connected.")] : []),
      ...ps.map((p) => {
        const errors = Object.entries(p.sync ?? {}).filter(([, s]) => s.error);
        return h(
          "tr",
          {},
          h(
            "td",
            { class: "mono small" },
            p.id,
            ...errors.map(([t, s]) => h("div", { class: "row-error" }, `${t}: ${s.error}`)),
          ),
          h("td", { class: "nowrap" }, p.workload ? `${p.workload}.${p.namespace}` : h("span", { class: "muted" }, "–")),
          ...syncTypes.map((t) => h("td", {}, syncPill(p.sync?.[t]))),
          h(
            "td",
            {},
            p.scrape?.error
              ? h("span", { class: "pill bad", title: p.scrape.error }, "failing")
              : p.scrape
                ? h("span", { class: "pill ok", title: `${p.scrape.series} series, ${fmtTime(p.scrape.lastScrape)}` }, "scraped")
                : h("span", { class: "pill muted" }, "pending"),
          ),
        );
      }),
    );
  }
}

interface ErrorGroup {
  key: string;
  first: ErrorEvent;
  last: string;
  count: number;
}

function errorRow(e: ErrorEvent, count: number, when: string): HTMLTableRowElement {
  const code = Number(e.code);
  return h(
    "tr",
    {},
    h("td", { class: "mono small" }, fmtTime(when)),
    h("td", {}, e.sourceWorkload === "unknown" ? h("span", { class: "muted" }, "unknown") : `${e.sourceWorkload}.${e.sourceNamespace}`),
    h("td", {}, e.destinationService || e.destination, h("div", { class: "muted small" }, e.destinationWorkload)),
    h("td", {}, h("span", { class: `pill ${code >= 500 ? "bad" : code >= 400 ? "warn" : "muted"}` }, e.code)),
    h("td", { title: describeFlags(e.flags) }, h("span", { class: "mono" }, e.flags), e.flags !== "-" ? h("div", { class: "muted small" }, describeFlags(e.flags)) : null),
    h("td", { class: "num" }, String(Math.round(count))),
  );
}

function errorTable(body: HTMLElement, timeTitle: string): HTMLElement {
  return h(
    "div",
    { class: "card" },
    h(
      "table",
      { class: "data" },
      h(
        "thead",
        {},
        h("tr", {}, h("th", {}, timeTitle), h("th", {}, "Source"), h("th", {}, "Destination"), h("th", {}, "Code"), h("th", {}, "Flags"), h("th", { class: "num" }, "Count")),
      ),
      body,
    ),
  );
}

export class ErrorsView implements View {
  readonly el: HTMLElement;
  private grouped = h("tbody");
  private body = h("tbody");
  private count = h("span", { class: "muted" });

  constructor() {
    this.el = h(
      "section",
      { class: "page", id: "errors-view" },
      h("div", { class: "page-head" }, h("h1", {}, "Recent errors"), this.count),
      h("p", { class: "lede" }, "Non-2xx responses per edge with Envoy response flags, from the proxies' metrics."),
      h("h2", { class: "section-title" }, "By edge"),
      errorTable(this.grouped, "Last seen"),
      h("h2", { class: "section-title" }, "Latest scrape rounds"),
      errorTable(this.body, "Time"),
    );
  }

  async refresh(): Promise<void> {
    const evs = await api.errors();
    const groups = new Map<string, ErrorGroup>();
    for (const e of evs) {
      const key = `${e.source}|${e.destination}|${e.destinationWorkload}|${e.code}|${e.flags}`;
      const g = groups.get(key);
      if (g) {
        g.count += e.count;
      } else {
        groups.set(key, { key, first: e, last: e.time, count: e.count });
      }
    }
    const total = evs.reduce((n, e) => n + e.count, 0);
    this.count.textContent = `${Math.round(total)} responses · ${groups.size} kinds`;
    this.grouped.replaceChildren(
      ...(groups.size === 0 ? [emptyRow(6, "No non-2xx responses recorded.")] : []),
      ...[...groups.values()].sort((a, b) => b.count - a.count).map((g) => errorRow(g.first, g.count, g.last)),
    );
    this.body.replaceChildren(
      ...(evs.length === 0 ? [emptyRow(6, "No non-2xx responses recorded.")] : []),
      ...evs.slice(0, 25).map((e) => errorRow(e, e.count, e.time)),
    );
  }
}
