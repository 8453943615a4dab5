// The training dashboard: the runs under --runs, and the selected run's curves, polled every two
// seconds so they grow while the run trains. Which series go in which chart is decided by name,
// so logs with more (or fewer) fields than today's trainer writes still draw what they have.
import { api, ApiError, keyBox } from "/static/api.js";
import { drawChart, seriesColor } from "/static/chart.js";

const POLL_MS = Number(new URLSearchParams(location.search).get("poll")) || 2000;
const $ = (s) => document.querySelector(s);
let selected = new URLSearchParams(location.search).get("run");
let runs = [];

/** Charts in order: each takes the series its test accepts (a series goes to the first that does). */
const CHARTS = [
  { id: "loss", title: "Loss", accepts: (n) => n === "loss" || n === "eval_loss" || n.endsWith("_loss") },
  { id: "lr", title: "Learning rate", accepts: (n) => n === "lr" },
  { id: "grad_norm", title: "Gradient norm", accepts: (n) => n === "grad_norm" },
  // eval_samples and eval_runtime describe the evaluation, not the model: left out.
  { id: "eval", title: "Evaluation", accepts: (n) => n.startsWith("eval_") && n !== "eval_samples" && n !== "eval_runtime" },
  { id: "throughput", title: "Throughput (per second)", accepts: (n) => n.endsWith("_per_s") },
];

function showError(message) {
  $("#error").textContent = message ?? "";
}

function renderRuns() {
  const list = $("#runs");
  list.replaceChildren();
  if (runs.length === 0) list.innerHTML = `<li class="muted">no run with a train_log.jsonl or metrics.jsonl yet</li>`;
  for (const run of runs) {
    const li = document.createElement("li");
    li.dataset.run = run.id;
    li.textContent = run.id;
    li.title = `${run.files.join(", ")}; updated ${new Date(run.updated).toLocaleString()}`;
    li.setAttribute("aria-selected", String(run.id === selected));
    li.addEventListener("click", () => {
      selected = run.id;
      history.replaceState(null, "", `?run=${encodeURIComponent(run.id)}`);
      renderRuns();
      void refreshMetrics();
    });
    list.append(li);
  }
}

function chartBox(chart) {
  let box = document.querySelector(`.chart[data-chart="${chart.id}"]`);
  if (!box) {
    box = document.createElement("section");
    box.className = "chart";
    box.dataset.chart = chart.id;
    box.innerHTML = `<h2></h2><svg role="img"></svg><div class="legend"></div>`;
    box.querySelector("h2").textContent = chart.title;
    box.querySelector("svg").setAttribute("aria-label", chart.title);
    $("#charts").append(box);
  }
  return box;
}

function renderMetrics(metrics) {
  $("#run-title").textContent = metrics.id;
  const last = metrics.points[metrics.points.length - 1];
  $("#status").textContent = `${metrics.points.length} logged steps${last ? `, last step ${last.step}` : ""} · ${metrics.files.join(", ")} · updated ${new Date(metrics.updated).toLocaleTimeString()}`;
  const taken = new Set();
  for (const chart of CHARTS) {
    const names = metrics.series.filter((n) => !taken.has(n) && chart.accepts(n));
    names.forEach((n) => taken.add(n));
    const existing = document.querySelector(`.chart[data-chart="${chart.id}"]`);
    if (names.length === 0) {
      existing?.remove();
      continue;
    }
    const series = names.map((name) => ({ name, points: metrics.points.filter((p) => name in p.values).map((p) => [p.step, p.values[name]]) }));
    const box = chartBox(chart);
    drawChart(box.querySelector("svg"), series);
    const legend = box.querySelector(".legend");
    legend.replaceChildren(
      ...series.map((s, i) => {
        const span = document.createElement("span");
        const latest = s.points[s.points.length - 1];
        span.innerHTML = `<b style="color:${seriesColor(i)}">━</b> `;
        span.append(`${s.name} ${latest ? Number(latest[1].toPrecision(4)) : ""}   `);
        return span;
      }),
    );
  }
}

async function refreshMetrics() {
  if (!selected) return;
  try {
    renderMetrics(await (await api(`/api/runs/metrics?id=${encodeURIComponent(selected)}`)).json());
  } catch (error) {
    showError(error.message);
  }
}

async function refresh() {
  try {
    const listing = await (await api("/api/runs")).json();
    showError("");
    runs = listing.runs;
    $("#root").textContent = `in ${listing.root}`;
    // Default to the run written most recently: the one training now, most likely.
    if (!selected || !runs.some((r) => r.id === selected)) selected = [...runs].sort((a, b) => b.updated - a.updated)[0]?.id ?? null;
    renderRuns();
    await refreshMetrics();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      keyBox(refresh);
      showError("This server needs an API key: enter it at the top right.");
    } else showError(error.message);
  }
}

async function start() {
  try {
    const info = await (await api("/api/info")).json();
    $("#classify-link").hidden = info.models.length === 0;
    if (info.auth) keyBox(refresh);
  } catch {
    // refresh() reports what is wrong
  }
  await refresh();
  setInterval(() => void refresh(), POLL_MS);
}

void start();
