/**
 * bench/reference/summarize.py renders the CUPTI timeline's idle section from a result row's JSON
 * exactly as bench/step-timeline.ts renders it into the log, and renders rows written before that
 * section existed (a committed results file) without it. Needs a python3 (stdlib only; set
 * SPLINT_PYTHON to choose one); skipped where none runs.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { idleMarkdown, stepTimeline } from "../../bench/step-timeline.ts";
import type { ActivityTimeline } from "../../src/backends/cuda/activity.ts";

const python = process.env.SPLINT_PYTHON ?? "python3";
const available = spawnSync(python, ["-c", "import json"]).status === 0;
const ROOT = new URL("../..", import.meta.url).pathname;
const OLD_RESULTS = join(ROOT, "bench", "results", "2026-12-06-nvidia-h100-51f067b.json");

const EPOCH = 1_765_000_000_000_000_000n;
const at = (ns: number[]): BigInt64Array => BigInt64Array.from(ns, (n) => EPOCH + BigInt(n));

// Gaps of 250 (lead), 130, 7, 3_193 and 1_900 (trail) µs; a name with a "|" to escape.
const activity: ActivityTimeline = {
  kernels: 4,
  memcpys: 0,
  memsets: 1,
  busyNs: 6_007_000,
  firstStartNs: EPOCH + 250_000n,
  lastEndNs: EPOCH + 9_587_000n,
  idleNs: 3_330_000,
  droppedRecords: 0,
  otherDeviceRecords: 0,
  distinctNames: 3,
  top: [{ name: "void gemm<1>(P)", count: 3, totalNs: 5_000_000 }],
  records: {
    names: ["void gemm<1>(P)", "lora|up", "[memset]"],
    startNs: at([250_000, 1_380_000, 1_394_000, 5_587_000]),
    endNs: at([1_250_000, 1_387_000, 2_394_000, 9_587_000]),
    nameIndex: Int32Array.from([0, 1, 2, 0]),
  },
};

test("summarize.py renders the idle section as timelineMarkdown does, and older rows without it", { skip: !available && `no ${python}` }, async () => {
  const timeline = stepTimeline(activity, EPOCH, EPOCH + 11_487_000n);
  const fresh = { tool: "splint", size: "3b", device: "NVIDIA H100 80GB HBM3", matmul: "bf16", recompute: "none", medianMs: 11.5, tokensPerSecond: 125_000, peakBytes: 2 ** 33, mfu: 0.5, timeline };
  const { results } = JSON.parse(await readFile(OLD_RESULTS, "utf8")) as { results: Record<string, unknown>[] };
  const dir = await mkdtemp(join(tmpdir(), "splint-summarize-"));
  try {
    await writeFile(join(dir, "results.jsonl"), [fresh, ...results].map((r) => JSON.stringify(r)).join("\n"));
    await writeFile(join(dir, "machine.txt"), "test machine");
    const run = spawnSync(python, [join(ROOT, "bench", "reference", "summarize.py"), "--results", join(dir, "results.jsonl"), "--machine", join(dir, "machine.txt"), "--out-dir", dir], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    const md = await readFile(join(dir, (await readdir(dir)).find((f) => f.endsWith(".md"))!), "utf8");

    const idle = idleMarkdown(timeline.idle, timeline.spanMs);
    assert.ok(md.includes(`\n${idle.join("\n")}\n`), `the idle section is not in summarize.py's output:\n${md}`);
    assert.ok(idle.some((line) => line.includes("lora\\|up")));
    assert.ok(idle.includes("| 5–20 µs | 1 | 0.01 | 0.1% |"), idle.join("\n"));
    // The committed 14b row has a timeline without "idle": its tables, no idle section.
    assert.equal(md.split("\n").filter((line) => / idle gaps, .* ms in all /.test(line)).length, 1);
    assert.match(md, /\*\*14b, splint[^\n]*\*\*: CUPTI timeline: busy /);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("summarize.py renders a tuned row's kernel profile, and its error when the profile failed", { skip: !available && `no ${python}` }, async () => {
  const tuned = {
    tool: "transformers+peft", variant: "tuned-compile", size: "3b", device: "NVIDIA H100 80GB HBM3", attention: "sdpa", medianMs: 12, tokensPerSecond: 120_000, peakBytes: 2 ** 33, mfu: 0.4,
    kernelProfile: { activities: 7, sumMs: 10, top: [{ name: "sm90_xmma_gemm|bf16", count: 5, totalMs: 7.5 }, { name: "triton_poi_fused_add_0", count: 2, totalMs: 2.5 }] },
  };
  const failed = { ...tuned, size: "8b", kernelProfile: { error: "RuntimeError: CUPTI busy" } };
  const dir = await mkdtemp(join(tmpdir(), "splint-summarize-"));
  try {
    await writeFile(join(dir, "results.jsonl"), [tuned, failed].map((r) => JSON.stringify(r)).join("\n"));
    await writeFile(join(dir, "machine.txt"), "test machine");
    const run = spawnSync(python, [join(ROOT, "bench", "reference", "summarize.py"), "--results", join(dir, "results.jsonl"), "--machine", join(dir, "machine.txt"), "--out-dir", dir], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    const md = await readFile(join(dir, (await readdir(dir)).find((f) => f.endsWith(".md"))!), "utf8");
    assert.match(md, /## The reference's step by kernel/);
    assert.match(md, /\*\*3b, [^\n]*\*\*: 7 activities, 10\.0 ms summed\./);
    assert.ok(md.includes("| sm90_xmma_gemm\\|bf16 | 5 | 7.5 | 75.0% |"), md);
    assert.ok(md.includes("| triton_poi_fused_add_0 | 2 | 2.5 | 25.0% |"), md);
    assert.match(md, /\*\*8b, [^\n]*\*\*: no kernel profile \(RuntimeError: CUPTI busy\)\./);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
