// Entry point: the app shell, hash routing between tabs and the 5 s refresh.
import "./style.css";
import { h } from "./format";
import { GraphView } from "./graph";
import { ConfigView, ErrorsView, ProxiesView, type View } from "./tables";
import { TracesView } from "./traces";

const REFRESH_MS = 5000;

type Tab = "graph" | "config" | "proxies" | "errors" | "traces";
const tabs: Array<[Tab, string]> = [
  ["graph", "Graph"],
  ["config", "Config"],
  ["proxies", "Proxies"],
  ["errors", "Errors"],
  ["traces", "Traces"],
];

const graph = new GraphView();
const views: Record<Tab, View> = {
  graph,
  config: new ConfigView(),
  proxies: new ProxiesView(),
  errors: new ErrorsView(),
  traces: new TracesView(),
};

const status = h("span", { class: "status", id: "status" }, "connecting…");
const nav = h(
  "nav",
  { class: "tabs", role: "tablist" },
  ...tabs.map(([id, label]) => h("a", { href: `#/${id}`, role: "tab", "data-tab": id, id: `tab-${id}` }, label)),
);
const main = h("main", { class: "content" });
document.getElementById("app")!.replaceChildren(
  h(
    "header",
    { class: "topbar" },
    h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "W"), h("span", {}, "Weft"), h("span", { class: "brand-sub" }, "mesh dashboard")),
    nav,
    status,
  ),
  main,
);

let current: Tab = "graph";
let timer: number | undefined;

function route(): Tab {
  const t = location.hash.replace(/^#\/?/, "").split("/")[0] as Tab;
  return t in views ? t : "graph";
}

async function refresh(): Promise<void> {
  window.clearTimeout(timer);
  const tab = current;
  try {
    await views[tab].refresh();
    status.textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    status.className = "status live";
  } catch (e) {
    status.textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
    status.className = "status down";
  }
  if (tab === current) timer = window.setTimeout(() => void refresh(), REFRESH_MS);
}

function show(): void {
  current = route();
  for (const a of nav.querySelectorAll("a")) {
    const active = a.getAttribute("data-tab") === current;
    a.classList.toggle("active", active);
    a.setAttribute("aria-selected", String(active));
  }
  main.replaceChildren(views[current].el);
  if (current === "graph") graph.resize();
  void refresh();
}

window.addEventListener("hashchange", show);
show();
