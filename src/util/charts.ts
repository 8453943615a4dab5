import sharp from "sharp";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { writeFileAtomic } from "./atomic.ts";

/**
 * Charts for terminal-free reports: small builders return Vega-Lite specs (bar, line, heatmap /
 * confusion matrix), and one renderer turns any spec into SVG (vega, headless) or PNG (the SVG
 * rasterised by sharp's librsvg, DejaVu fonts). Callers may also hand-write a spec and render it.
 */
export type ChartSpec = TopLevelSpec;

export interface ChartLayout {
  readonly title?: string;
  /** Plot area size in CSS pixels (axes and legend come on top). */
  readonly width?: number;
  readonly height?: number;
}

const FONT = "DejaVu Sans";

function frame(layout: ChartLayout, defaults: { width: number; height: number }): Record<string, unknown> {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    ...(layout.title === undefined ? {} : { title: layout.title }),
    width: layout.width ?? defaults.width,
    height: layout.height ?? defaults.height,
    background: "white",
    config: { font: FONT, view: { stroke: null } },
  };
}

export interface BarDatum {
  readonly category: string;
  readonly value: number;
  /** Optional series: bars of one category side by side, coloured by series. */
  readonly series?: string;
}

export interface BarChartOptions extends ChartLayout {
  readonly categoryTitle?: string;
  readonly valueTitle?: string;
  /** Categories in this order (default: the order they first appear). */
  readonly categoryOrder?: readonly string[];
  /** Print each bar's value at its end. */
  readonly labels?: boolean;
}

/** Vertical bars, one per category (grouped by series when data carry one). */
export function barChart(data: readonly BarDatum[], options: BarChartOptions = {}): ChartSpec {
  const order = options.categoryOrder ?? [...new Set(data.map((d) => d.category))];
  const grouped = data.some((d) => d.series !== undefined);
  const seriesOrder = [...new Set(data.flatMap((d) => (d.series === undefined ? [] : [d.series])))];
  const x = { field: "category", type: "nominal", sort: order, title: options.categoryTitle ?? null, axis: { labelAngle: -35, labelLimit: 160 } };
  const y = { field: "value", type: "quantitative", title: options.valueTitle ?? null };
  const bars = {
    mark: { type: "bar", tooltip: true },
    encoding: {
      x,
      y,
      ...(grouped
        ? { xOffset: { field: "series", type: "nominal", sort: seriesOrder }, color: { field: "series", type: "nominal", title: null, scale: { domain: seriesOrder } } }
        : { color: { value: "#4c78a8" } }),
    },
  };
  const text = {
    mark: { type: "text", dy: -6, fontSize: 10 },
    encoding: { x, y, text: { field: "value", type: "quantitative" }, ...(grouped ? { xOffset: { field: "series", type: "nominal", sort: seriesOrder } } : {}) },
  };
  return {
    ...frame(options, { width: Math.max(240, order.length * (grouped ? 48 : 32)), height: 240 }),
    data: { values: data.map((d) => ({ ...d })) },
    layer: options.labels === false ? [bars] : [bars, text],
  } as ChartSpec;
}

export interface LinePoint {
  readonly x: number;
  readonly y: number;
  /** Optional series: one line per series (e.g. "train", "eval"). */
  readonly series?: string;
}

export interface LineChartOptions extends ChartLayout {
  readonly xTitle?: string;
  readonly yTitle?: string;
  readonly logY?: boolean;
  /** Draw a dot at each point (useful for sparse series such as per-epoch eval). */
  readonly points?: boolean;
}

/** Lines over a quantitative x (a loss curve, accuracy per step). */
export function lineChart(points: readonly LinePoint[], options: LineChartOptions = {}): ChartSpec {
  // Series keep their first-appearance order (as in barChart), so "before" gets the same colour everywhere.
  const seriesOrder = [...new Set(points.flatMap((p) => (p.series === undefined ? [] : [p.series])))];
  const series = seriesOrder.length > 0;
  return {
    ...frame(options, { width: 420, height: 240 }),
    data: { values: points.map((p) => ({ ...p })) },
    mark: { type: "line", point: options.points ?? false, tooltip: true },
    encoding: {
      x: { field: "x", type: "quantitative", title: options.xTitle ?? null },
      y: {
        field: "y",
        type: "quantitative",
        title: options.yTitle ?? null,
        scale: options.logY ? { type: "log" } : { zero: false },
      },
      ...(series ? { color: { field: "series", type: "nominal", title: null, scale: { domain: seriesOrder } } } : {}),
    },
  } as ChartSpec;
}

export interface ReliabilitySeries {
  readonly name: string;
  /** Non-empty bins: mean confidence, accuracy and count of each. */
  readonly bins: readonly { readonly confidence: number; readonly accuracy: number; readonly count: number }[];
}

/**
 * A reliability diagram: accuracy against mean confidence per bin, one line per series, over the
 * dashed diagonal of perfect calibration; a point's area follows its bin's count. Points under the
 * diagonal are over-confident.
 */
export function reliabilityDiagram(series: readonly ReliabilitySeries[], options: ChartLayout = {}): ChartSpec {
  const values = series.flatMap((s) => s.bins.map((b) => ({ series: s.name, confidence: b.confidence, accuracy: b.accuracy, count: b.count })));
  const unit = { type: "quantitative", scale: { domain: [0, 1] } };
  const order = series.map((s) => s.name);
  return {
    ...frame(options, { width: 300, height: 300 }),
    layer: [
      {
        data: { values: [{ x: 0, y: 0 }, { x: 1, y: 1 }] },
        mark: { type: "line", strokeDash: [4, 4], color: "#999999" },
        encoding: { x: { field: "x", ...unit, title: "confidence" }, y: { field: "y", ...unit, title: "accuracy" } },
      },
      {
        data: { values },
        mark: { type: "line", point: false, tooltip: true },
        encoding: { x: { field: "confidence", ...unit }, y: { field: "accuracy", ...unit }, color: { field: "series", type: "nominal", title: null, sort: order } },
      },
      {
        data: { values },
        mark: { type: "circle", tooltip: true, opacity: 0.8 },
        encoding: {
          x: { field: "confidence", ...unit },
          y: { field: "accuracy", ...unit },
          color: { field: "series", type: "nominal", title: null, sort: order },
          size: { field: "count", type: "quantitative", title: "images", scale: { range: [15, 300] } },
        },
      },
    ],
  } as unknown as ChartSpec;
}

export interface IntervalDatum {
  readonly category: string;
  readonly value: number;
  readonly lo: number;
  readonly hi: number;
  readonly series?: string;
}

/** A point per category with a vertical interval bar (side by side per series): an estimate with its CI. */
export function intervalChart(data: readonly IntervalDatum[], options: BarChartOptions = {}): ChartSpec {
  const order = options.categoryOrder ?? [...new Set(data.map((d) => d.category))];
  const seriesOrder = [...new Set(data.flatMap((d) => (d.series === undefined ? [] : [d.series])))];
  const grouped = seriesOrder.length > 0;
  const x = { field: "category", type: "nominal", sort: order, title: options.categoryTitle ?? null, axis: { labelAngle: -35, labelLimit: 160 } };
  const shared = grouped
    ? { x, xOffset: { field: "series", type: "nominal", sort: seriesOrder }, color: { field: "series", type: "nominal", title: null, scale: { domain: seriesOrder } } }
    : { x, color: { value: "#4c78a8" } };
  return {
    ...frame(options, { width: Math.max(240, order.length * (grouped ? 48 : 32)), height: 240 }),
    data: { values: data.map((d) => ({ ...d })) },
    layer: [
      { mark: { type: "rule", strokeWidth: 2 }, encoding: { ...shared, y: { field: "lo", type: "quantitative", title: options.valueTitle ?? null }, y2: { field: "hi" } } },
      { mark: { type: "point", filled: true, size: 40, tooltip: true }, encoding: { ...shared, y: { field: "value", type: "quantitative" } } },
    ],
  } as unknown as ChartSpec;
}

export interface HeatmapOptions extends ChartLayout {
  readonly rowTitle?: string;
  readonly columnTitle?: string;
  /** Print each cell's value (default true). */
  readonly cellLabels?: boolean;
  /** Digits after the point for cell labels (default: 0 for integer matrices, else 2). */
  readonly digits?: number;
}

/**
 * A labelled matrix as coloured cells: values[r][c] for rows[r] × columns[c]. For a confusion
 * matrix pass true classes as rows and predicted classes as columns (see confusionMatrixChart).
 */
export function heatmap(rows: readonly string[], columns: readonly string[], values: readonly (readonly number[])[], options: HeatmapOptions = {}): ChartSpec {
  if (values.length !== rows.length || values.some((r) => r.length !== columns.length)) {
    throw new RangeError(`heatmap: values must be ${rows.length}×${columns.length}`);
  }
  const cells = rows.flatMap((row, r) => columns.map((column, c) => ({ row, column, value: values[r]?.[c] ?? 0 })));
  const integers = cells.every((cell) => Number.isInteger(cell.value));
  const digits = options.digits ?? (integers ? 0 : 2);
  const max = Math.max(0, ...cells.map((cell) => cell.value));
  const x = { field: "column", type: "nominal", sort: [...columns], title: options.columnTitle ?? null, axis: { labelAngle: -40, labelLimit: 160 } };
  const y = { field: "row", type: "nominal", sort: [...rows], title: options.rowTitle ?? null, axis: { labelLimit: 160 } };
  const layer: Record<string, unknown>[] = [
    { mark: { type: "rect", tooltip: true }, encoding: { x, y, color: { field: "value", type: "quantitative", title: null, scale: { scheme: "blues" } } } },
  ];
  if (options.cellLabels !== false) {
    layer.push({
      mark: { type: "text", fontSize: 10 },
      encoding: {
        x,
        y,
        text: { field: "value", type: "quantitative", format: `.${digits}f` },
        color: { condition: { test: `datum.value > ${max / 2}`, value: "white" }, value: "black" },
      },
    });
  }
  const side = Math.max(160, 26 * Math.max(rows.length, columns.length));
  return { ...frame(options, { width: side, height: side }), data: { values: cells }, layer } as unknown as ChartSpec;
}

/** A confusion matrix: counts[t][p] = how many items of true class t were predicted as p. */
export function confusionMatrixChart(classNames: readonly string[], counts: readonly (readonly number[])[], options: HeatmapOptions = {}): ChartSpec {
  return heatmap(classNames, classNames, counts, { rowTitle: "true class", columnTitle: "predicted class", ...options });
}

/** Renders a Vega-Lite spec to an SVG document (no browser, no canvas). */
export async function renderSvg(spec: ChartSpec): Promise<string> {
  const { spec: vegaSpec } = compile(spec);
  const view = new vega.View(vega.parse(vegaSpec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders a spec to PNG; scale 2 gives crisp text on high-density screens and in PDFs. */
export async function renderPng(spec: ChartSpec, scale = 2): Promise<Buffer> {
  const svg = await renderSvg(spec);
  return sharp(Buffer.from(svg), { density: 72 * scale }).flatten({ background: "#ffffff" }).png().toBuffer();
}

/** Renders and writes a chart atomically; the format follows the extension (.svg or .png). */
export async function writeChart(path: string, spec: ChartSpec): Promise<void> {
  const data = path.toLowerCase().endsWith(".svg") ? await renderSvg(spec) : await renderPng(spec);
  await writeFileAtomic(path, data);
}
