// Types and fetchers for the dashboard's JSON API (pkg/dashboard).

export interface Signals {
  requests: number;
  rps: number;
  errorRate: number; // 0..1, 5xx share
  p99Ms: number;
}

export type Health = "healthy" | "degraded" | "failing" | "idle";

export interface GraphNode {
  id: string;
  kind: "service" | "workload" | "unknown";
  namespace: string;
  name: string;
  workloads?: string[];
  health: Health;
  inbound: Signals;
}

export interface GraphEdge extends Signals {
  id: string;
  source: string;
  target: string;
  mtls: boolean;
  mtlsShare: number;
  protocol?: string;
}

export interface Graph {
  timestamp: string;
  window: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface Point {
  t: string;
  rps: number;
  errorRate: number;
  p99Ms: number;
}

export interface Detail {
  kind: string;
  namespace: string;
  name: string;
  workloads?: string[];
  services?: string[];
  window: string;
  inbound: Signals;
  outbound: Signals;
  series: Point[];
  inEdges: GraphEdge[];
  outEdges: GraphEdge[];
}

export interface Resource {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    generation?: number;
    resourceVersion?: string;
    creationTimestamp?: string;
  };
  spec: unknown;
}

export interface ConfigView {
  resources: Resource[];
  warnings: string[];
}

export interface SyncStatus {
  status: "SYNCED" | "STALE" | "NACKED" | "NOT SENT" | string;
  error?: string;
}

export interface ProxyView {
  id: string;
  namespace: string;
  workload: string;
  labels?: Record<string, string>;
  metricsAddress?: string;
  sync?: Record<string, SyncStatus>;
  connectedAt?: string;
  scrape?: { lastScrape?: string; error?: string; series: number };
}

export interface ErrorEvent {
  time: string;
  source: string;
  destination: string;
  sourceWorkload: string;
  sourceNamespace: string;
  destinationService: string;
  destinationWorkload: string;
  destinationNamespace: string;
  code: string;
  flags: string;
  count: number;
}

export interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name?: string;
  kind?: string;
  timestamp?: number; // µs since the epoch
  duration?: number; // µs
  localEndpoint?: { serviceName?: string };
  tags?: Record<string, string>;
}

export class APIError extends Error {
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function get<T>(path: string): Promise<T> {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  if (!resp.ok) {
    let msg = resp.statusText;
    try {
      const body = (await resp.json()) as { error?: string };
      if (body.error) msg = body.error;
    } catch {
      // keep the status text
    }
    throw new APIError(resp.status, msg);
  }
  return (await resp.json()) as T;
}

export const api = {
  graph: () => get<Graph>("/api/graph"),
  detail: (kind: "services" | "workloads", ns: string, name: string) =>
    get<Detail>(`/api/${kind}/${encodeURIComponent(ns)}/${encodeURIComponent(name)}?range=10m`),
  config: () => get<ConfigView>("/api/config"),
  proxies: () => get<ProxyView[]>("/api/proxies"),
  errors: () => get<ErrorEvent[]>("/api/errors"),
  traces: (service: string, limit: number) =>
    get<ZipkinSpan[][]>(`/api/traces?limit=${limit}${service ? `&service=${encodeURIComponent(service)}` : ""}`),
};
