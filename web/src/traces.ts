// The Traces tab: recent traces from the control plane's built-in Zipkin
// collector, and a waterfall of the selected trace's spans.
import { api, APIError, type ZipkinSpan } from "./api";
import { h } from "./format";
import type { View } from "./tables";

function fmtMs(us: number): string {
  const ms = us / 1000;
  return ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`;
}

function service(s: ZipkinSpan): string {
  return s.localEndpoint?.serviceName ?? "?";
}

function isError(s: ZipkinSpan): boolean {
  return s.tags?.error === "true";
}

// root is the earliest span whose parent is not in the trace.
function root(spans: ZipkinSpan[]): ZipkinSpan {
  const ids = new Set(spans.map((s) => s.id));
  return spans.find((s) => !s.parentId || !ids.has(s.parentId)) ?? spans[0];
}

function extent(spans: ZipkinSpan[]): [number, number] {
  const start = Math.min(...spans.map((s) => s.timestamp ?? 0));
  const end = Math.max(...spans.map((s) => (s.timestamp ?? 0) + (s.duration ?? 0)));
  return [start, end];
}

export class TracesView implements View {
  readonly el: HTMLElement;
  private body = h("tbody");
  private filter = h("input", { type: "search", placeholder: "service (e.g. reviews)", id: "trace-service", class: "filter" }) as HTMLInputElement;
  private detail = h("div", { class: "card trace-detail", id: "trace-detail" });
  private count = h("span", { class: "muted" });
  private selected = "";

  constructor() {
    this.filter.addEventListener("change", () => void this.refresh());
    this.el = h(
      "section",
      { class: "page", id: "traces-view" },
      h("div", { class: "page-head" }, h("h1", {}, "Traces"), this.count),
      h("p", { class: "lede" }, "Recent traces from the control plane's built-in Zipkin collector. Click a trace for its spans."),
      h("div", { class: "toolbar" }, this.filter),
      h(
        "div",
        { class: "card" },
        h(
          "table",
          { class: "data", id: "traces-table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Trace"), h("th", {}, "Root"), h("th", {}, "Services"), h("th", { class: "num" }, "Spans"), h("th", { class: "num" }, "Duration"), h("th", {}, "Status"))),
          this.body,
        ),
      ),
      this.detail,
    );
  }

  async refresh(): Promise<void> {
    let traces: ZipkinSpan[][];
    try {
      traces = await api.traces(this.filter.value.trim(), 30);
    } catch (e) {
      if (e instanceof APIError && e.status === 404) {
        this.count.textContent = "";
        this.body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, e.message)));
        return;
      }
      throw e;
    }
    this.count.textContent = `${traces.length} traces`;
    this.body.replaceChildren(
      ...(traces.length === 0 ? [h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No traces yet."))] : []),
      ...traces.map((spans) => {
        const r = root(spans);
        const [start, end] = extent(spans);
        const services = [...new Set(spans.map(service))];
        const errors = spans.filter(isError).length;
        const row = h(
          "tr",
          { class: "clickable" + (r.traceId === this.selected ? " selected" : ""), "data-trace": r.traceId },
          h("td", { class: "mono" }, r.traceId.slice(-16)),
          h("td", { class: "mono" }, r.name ?? ""),
          h("td", {}, services.join(", ")),
          h("td", { class: "num" }, String(spans.length)),
          h("td", { class: "num" }, fmtMs(end - start)),
          h("td", {}, errors ? h("span", { class: "pill bad" }, `${errors} error${errors > 1 ? "s" : ""}`) : h("span", { class: "pill ok" }, "ok")),
        );
        row.addEventListener("click", () => {
          this.selected = r.traceId;
          this.showTrace(spans);
        });
        return row;
      }),
    );
    const sel = traces.find((t) => root(t).traceId === this.selected);
    if (sel) this.showTrace(sel);
  }

  private showTrace(spans: ZipkinSpan[]): void {
    const [start, end] = extent(spans);
    const total = Math.max(end - start, 1);
    const children = new Map<string, ZipkinSpan[]>();
    for (const s of spans) {
      const k = s.parentId ?? "";
      children.set(k, [...(children.get(k) ?? []), s]);
    }
    const ids = new Set(spans.map((s) => s.id));
    const ordered: Array<[ZipkinSpan, number]> = [];
    const walk = (s: ZipkinSpan, depth: number) => {
      ordered.push([s, depth]);
      for (const c of children.get(s.id) ?? []) walk(c, depth + 1);
    };
    for (const s of spans) if (!s.parentId || !ids.has(s.parentId)) walk(s, 0);
    this.detail.replaceChildren(
      h("h2", {}, `Trace ${spans[0].traceId}`),
      h(
        "table",
        { class: "data waterfall" },
        h("thead", {}, h("tr", {}, h("th", {}, "Service"), h("th", {}, "Kind"), h("th", {}, "Operation"), h("th", {}, "Code"), h("th", { class: "bar-col" }, "Timeline"))),
        h(
          "tbody",
          {},
          ...ordered.map(([s, depth]) => {
            const left = (((s.timestamp ?? start) - start) / total) * 100;
            const width = Math.max(((s.duration ?? 0) / total) * 100, 0.5);
            return h(
              "tr",
              { class: "span-row", "data-service": service(s), "data-kind": s.kind ?? "" },
              h("td", { style: `padding-left:${0.6 + depth * 1.1}rem` }, service(s)),
              h("td", { class: "muted" }, s.kind ?? ""),
              h("td", { class: "mono" }, s.name ?? ""),
              h("td", {}, s.tags?.["http.status_code"] ?? ""),
              h(
                "td",
                { class: "bar-col" },
                h("div", { class: "bar-track" }, h("div", { class: "bar" + (isError(s) ? " bad" : ""), style: `margin-left:${left}%;width:${width}%`, title: fmtMs(s.duration ?? 0) })),
              ),
            );
          }),
        ),
      ),
    );
  }
}
