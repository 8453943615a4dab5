import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { barChart, confusionMatrixChart, heatmap, intervalChart, lineChart, reliabilityDiagram, renderPng, renderSvg, writeChart } from "../../src/util/charts.ts";

test("bar chart SVG shows every category, value and the title", async () => {
  const svg = await renderSvg(
    barChart(
      [
        { category: "Avulsion fracture", value: 109 },
        { category: "Spiral Fracture", value: 74 },
      ],
      { title: "Training class counts" },
    ),
  );
  assert.match(svg, /^<svg/);
  for (const text of ["Avulsion fracture", "Spiral Fracture", "109", "74", "Training class counts"]) assert.ok(svg.includes(text), text);
});

test("grouped bars keep the series in first-appearance order", async () => {
  const svg = await renderSvg(
    barChart([
      { category: "a", value: 3, series: "train" },
      { category: "a", value: 1, series: "test" },
    ]),
  );
  assert.ok(svg.indexOf(">train<") < svg.indexOf(">test<"));
});

test("line chart and confusion matrix render to PNG of a sensible size", async () => {
  const line = await renderPng(lineChart([{ x: 0, y: 2 }, { x: 1, y: 1.5 }, { x: 2, y: 1.1 }], { title: "loss", width: 300, height: 200 }));
  const lineMeta = await sharp(line).metadata();
  assert.equal(lineMeta.format, "png");
  assert.ok((lineMeta.width ?? 0) >= 600, `scale 2 doubles a 300 px plot: ${lineMeta.width}`);
  const counts = [
    [5, 1, 0],
    [2, 7, 1],
    [0, 0, 9],
  ];
  const cmSvg = await renderSvg(confusionMatrixChart(["a", "b", "c"], counts));
  for (const label of ["true class", "predicted class", ">7<", ">9<"]) assert.ok(cmSvg.includes(label), label);
  const png = await renderPng(confusionMatrixChart(["a", "b", "c"], counts));
  const stats = await sharp(png).stats();
  // Not a blank page: the darkest cells are far from white.
  assert.ok(Math.min(...stats.channels.map((c) => c.min)) < 100);
});

test("heatmap refuses a matrix of the wrong shape", () => {
  assert.throws(() => heatmap(["a", "b"], ["x"], [[1]]), /2×1/);
});

test("writeChart picks the format from the extension and leaves no temp files", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-charts-"));
  try {
    const spec = barChart([{ category: "x", value: 1 }]);
    await writeChart(join(dir, "c.svg"), spec);
    await writeChart(join(dir, "c.png"), spec);
    assert.match(await readFile(join(dir, "c.svg"), "utf8"), /^<svg/);
    assert.equal((await sharp(join(dir, "c.png")).metadata()).format, "png");
    assert.deepEqual((await readdir(dir)).sort(), ["c.png", "c.svg"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("reliability diagram and interval chart render every series and category", async () => {
  const bins = [
    { confidence: 0.35, accuracy: 0.2, count: 4 },
    { confidence: 0.9, accuracy: 0.6, count: 10 },
  ];
  const svg = await renderSvg(reliabilityDiagram([{ name: "T = 1", bins }, { name: "T = 2.10", bins: bins.map((b) => ({ ...b, confidence: b.confidence - 0.1 })) }], { title: "Reliability" }));
  for (const text of ["T = 1", "T = 2.10", "confidence", "accuracy", "Reliability"]) assert.ok(svg.includes(text), text);
  const intervals = await renderSvg(
    intervalChart([
      { category: "Avulsion fracture", value: 0.5, lo: 0.2, hi: 0.8, series: "before" },
      { category: "Avulsion fracture", value: 0.7, lo: 0.4, hi: 0.9, series: "after" },
    ], { valueTitle: "recall" }),
  );
  for (const text of ["Avulsion fracture", "before", "after", "recall"]) assert.ok(intervals.includes(text), text);
});
