// Formatting and small DOM helpers shared by the views.

export function fmtRate(rps: number): string {
  if (rps === 0) return "0";
  if (rps < 0.01) return "<0.01";
  if (rps < 10) return rps.toFixed(2);
  if (rps < 100) return rps.toFixed(1);
  return Math.round(rps).toString();
}

export function fmtPct(share: number): string {
  if (share === 0) return "0%";
  const p = share * 100;
  if (p < 0.1) return "<0.1%";
  return (p < 10 ? p.toFixed(1) : Math.round(p).toString()) + "%";
}

export function fmtMs(ms: number): string {
  if (ms === 0) return "–";
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  return (ms / 1000).toFixed(2) + " s";
}

export function fmtTime(iso: string | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "–";
  return d.toLocaleTimeString([], { hour12: false });
}

type Child = Node | string | null | undefined | false;

// h builds an element: h("div", {class: "x"}, child, "text").
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

// Envoy response flags, as Istio reports them in response_flags.
export const responseFlags: Record<string, string> = {
  UH: "No healthy upstream hosts",
  UF: "Upstream connection failure",
  UO: "Upstream overflow (circuit breaker open)",
  NR: "No route configured",
  URX: "Upstream retry limit exceeded",
  NC: "Upstream cluster not found",
  DT: "Request exceeded max duration",
  UT: "Upstream request timeout",
  LH: "Local health check failed",
  UC: "Upstream connection termination",
  UR: "Upstream remote reset",
  LR: "Connection local reset",
  DC: "Downstream connection termination",
  DI: "Request delayed by fault injection",
  FI: "Request aborted by fault injection",
  RL: "Rate limited locally",
  RLSE: "Rate limit service error",
  UAEX: "Denied by external authorization",
  IH: "Invalid header value",
  SI: "Stream idle timeout",
  DPE: "Downstream protocol error",
  UPE: "Upstream protocol error",
  UMSDR: "Upstream max stream duration reached",
  OM: "Overload manager",
  DF: "DNS resolution failed",
  "-": "No flags",
};

export function describeFlags(flags: string): string {
  return flags
    .split(",")
    .map((f) => responseFlags[f.trim()] ?? f)
    .join("; ");
}
