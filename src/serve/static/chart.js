// A small SVG line chart: enough for training curves (a few series, up to thousands of points)
// without a charting library. Draws axes with min/max ticks and one polyline per series.
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#d9822b", "#12b76a", "#9e77ed", "#f04438", "#667085"];

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-2 ? v.toExponential(1) : Number(v.toPrecision(3)).toString();
}

/**
 * Replaces the contents of `svg` with a chart of `series` ([{name, points: [[x, y], …]}]);
 * `logY` plots log10(y) when every value is positive (learning rates span decades).
 */
export function drawChart(svg, series, { logY = false } = {}) {
  const W = 480, H = 240, L = 56, R = 12, T = 12, B = 30;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const all = series.flatMap((s) => s.points);
  svg.dataset.points = String(all.length);
  if (all.length === 0) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#667085", "font-size": 13 }, "no points yet"));
    return;
  }
  const useLog = logY && all.every(([, y]) => y > 0);
  const fy = (y) => (useLog ? Math.log10(y) : y);
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => fy(p[1]))), Math.max(...all.map((p) => fy(p[1])))];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.05, y1 + Math.abs(y1 || 1) * 0.05];
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (fy(y) - y0) / (y1 - y0)) * (H - T - B);
  const axis = { stroke: "#d0d5dd", "stroke-width": 1 };
  svg.append(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, ...axis }), el("line", { x1: L, y1: T, x2: L, y2: H - B, ...axis }));
  const label = { fill: "#667085", "font-size": 11 };
  const unlog = (v) => (useLog ? 10 ** v : v);
  svg.append(
    el("text", { x: L - 4, y: T + 8, "text-anchor": "end", ...label }, fmt(unlog(y1))),
    el("text", { x: L - 4, y: H - B, "text-anchor": "end", ...label }, fmt(unlog(y0))),
    el("text", { x: L, y: H - B + 16, "text-anchor": "start", ...label }, fmt(x0)),
    el("text", { x: W - R, y: H - B + 16, "text-anchor": "end", ...label }, fmt(x1)),
    el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", ...label }, "step"),
  );
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points: d, fill: "none", stroke: color, "stroke-width": 1.8, "data-series": s.name }));
    // A lone point (an eval run once) is invisible as a line: mark every point of short series.
    if (s.points.length <= 30) for (const [x, y] of s.points) svg.append(el("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: color }));
  });
}

export function seriesColor(i) {
  return COLORS[i % COLORS.length];
}
