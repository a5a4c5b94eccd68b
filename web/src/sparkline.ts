// A tiny SVG sparkline: a line over an area fill, last value marked.

const SVG = "http://www.w3.org/2000/svg";

export interface SparklineOptions {
  width?: number;
  height?: number;
  color?: string;
  label?: string;
}

export function sparkline(values: number[], opts: SparklineOptions = {}): SVGSVGElement {
  const w = opts.width ?? 220;
  const hgt = opts.height ?? 40;
  const color = opts.color ?? "#4f46e5";
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(hgt));
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("role", "img");
  if (opts.label) svg.setAttribute("aria-label", opts.label);

  const pad = 3;
  if (values.length === 0) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", String(w / 2));
    t.setAttribute("y", String(hgt / 2 + 4));
    t.setAttribute("text-anchor", "middle");
    t.setAttribute("class", "sparkline-empty");
    t.textContent = "no data yet";
    svg.append(t);
    return svg;
  }
  const max = Math.max(...values, 0);
  const min = Math.min(...values, 0);
  const span = max - min || 1;
  const step = values.length > 1 ? (w - 2 * pad) / (values.length - 1) : 0;
  const pts = values.map((v, i): [number, number] => [
    pad + i * step,
    hgt - pad - ((v - min) / span) * (hgt - 2 * pad),
  ]);
  if (pts.length === 1) pts.push([w - pad, pts[0][1]]);
  const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");

  const area = document.createElementNS(SVG, "polygon");
  area.setAttribute(
    "points",
    `${pts[0][0].toFixed(1)},${hgt - pad} ${line} ${pts[pts.length - 1][0].toFixed(1)},${hgt - pad}`,
  );
  area.setAttribute("fill", color);
  area.setAttribute("fill-opacity", "0.12");
  svg.append(area);

  const pl = document.createElementNS(SVG, "polyline");
  pl.setAttribute("points", line);
  pl.setAttribute("fill", "none");
  pl.setAttribute("stroke", color);
  pl.setAttribute("stroke-width", "1.6");
  pl.setAttribute("stroke-linejoin", "round");
  pl.setAttribute("stroke-linecap", "round");
  svg.append(pl);

  const [lx, ly] = pts[pts.length - 1];
  const dot = document.createElementNS(SVG, "circle");
  dot.setAttribute("cx", lx.toFixed(1));
  dot.setAttribute("cy", ly.toFixed(1));
  dot.setAttribute("r", "2.6");
  dot.setAttribute("fill", color);
  svg.append(dot);
  return svg;
}
