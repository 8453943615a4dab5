/**
 * The CUPTI step timeline's arithmetic and rendering (bench/step-timeline.ts) from a fixed activity
 * record, and the name buffer the library fills (src/backends/cuda/activity.ts). The record itself
 * comes from CUPTI on a GPU (test/cuda/activity.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type ActivityTimeline, decodeNames } from "../../src/backends/cuda/activity.ts";
import { displayKernelName, stepTimeline, timelineMarkdown } from "../../bench/step-timeline.ts";

// CUPTI timestamps are ns since an epoch, far past 2^53: the differences must be taken as bigints.
const EPOCH = 1_765_000_000_000_000_000n;

const record: ActivityTimeline = {
  kernels: 3,
  memcpys: 1,
  memsets: 1,
  busyNs: 9_000_000,
  firstStartNs: EPOCH + 400_123n,
  lastEndNs: EPOCH + 10_400_123n,
  idleNs: 1_000_000,
  droppedRecords: 0,
  otherDeviceRecords: 0,
  distinctNames: 4,
  top: [
    { name: "void flash_fwd<64, (Mask)1>(FlashParams)", count: 2, totalNs: 6_000_000 },
    { name: "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", count: 1, totalNs: 2_500_000 },
    { name: "[memcpy DtoD]", count: 1, totalNs: 400_000 },
    { name: "[memset]", count: 1, totalNs: 100_000 },
  ],
};

test("the step's figures: span from the records, wall and start lag from the host's CUPTI timestamps", () => {
  const t = stepTimeline(record, EPOCH, EPOCH + 12_000_000n);
  assert.equal(t.busyMs, 9);
  assert.equal(t.spanMs, 10);
  assert.equal(t.idleInSpanMs, 1);
  assert.equal(t.hostWallMs, 12);
  assert.equal(t.idleOfWallMs, 3);
  assert.equal(t.startLagMs, 0.400123);
  assert.deepEqual(
    t.topKernels.map((k) => [k.name, k.count, k.totalMs]),
    [
      ["flash_fwd<64, (Mask)1>", 2, 6],
      ["sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", 1, 2.5],
      ["[memcpy DtoD]", 1, 0.4],
      ["[memset]", 1, 0.1],
    ],
  );
});

test("a window with no device work is all idle", () => {
  const empty: ActivityTimeline = { ...record, kernels: 0, memcpys: 0, memsets: 0, busyNs: 0, firstStartNs: 0n, lastEndNs: 0n, idleNs: 0, distinctNames: 0, top: [] };
  const t = stepTimeline(empty, EPOCH, EPOCH + 5_000_000n);
  assert.deepEqual([t.busyMs, t.spanMs, t.hostWallMs, t.idleOfWallMs, t.startLagMs], [0, 0, 5, 5, 5]);
  assert.match(timelineMarkdown(t), /busy 0\.0 ms of a 5\.0 ms host wall, idle 5\.0 ms = 100\.0% .*idle in it 0\.0 ms = —\)/);
});

test("kernel names lose their return type and parameter list, nothing else", () => {
  assert.equal(displayKernelName("void (anonymous namespace)::rms_norm_vec<__nv_bfloat16>(In, Out, long)"), "(anonymous namespace)::rms_norm_vec<__nv_bfloat16>");
  assert.equal(displayKernelName("void k<(int)2>(float (*)[4])"), "k<(int)2>");
  assert.equal(displayKernelName("cutlass_kernel_sm90"), "cutlass_kernel_sm90");
  assert.equal(displayKernelName("[memcpy HtoD]"), "[memcpy HtoD]");
});

test("the Markdown: one sentence with busy, idle and counts, then at most ten names with their share of busy", () => {
  const many: ActivityTimeline = { ...record, top: Array.from({ length: 12 }, (_, i) => ({ name: `k${i}|x`, count: 1, totalNs: 900_000 - i })) };
  const md = timelineMarkdown(stepTimeline(many, EPOCH, EPOCH + 12_000_000n)).split("\n");
  assert.equal(
    md[0],
    "CUPTI timeline: busy 9.0 ms of a 12.0 ms host wall, idle 3.0 ms = 25.0% (0.4 ms before the first kernel; first start → last end 10.0 ms, idle in it 1.0 ms = 10.0%); 3 kernels, 1 memcpys, 1 memsets.",
  );
  assert.deepEqual(md.slice(1, 4), ["", "| kernel | count | GPU ms | share of busy |", "| --- | ---: | ---: | ---: |"]);
  assert.equal(md.length, 4 + 10);
  assert.equal(md[4], "| k0\\|x | 1 | 0.9 | 10.0% |");
  const dropped = timelineMarkdown(stepTimeline({ ...record, droppedRecords: 7 }, EPOCH, EPOCH + 12_000_000n));
  assert.match(dropped.split("\n")[0]!, /CUPTI dropped 7 records: busy and counts are low\.$/);
});

test("names come back NUL-terminated at fixed strides; a full slot has no terminator", () => {
  const buffer = Buffer.alloc(3 * 8);
  buffer.write("gemm", 0);
  buffer.write("[memset]", 8);
  buffer.write("x", 16);
  assert.deepEqual(decodeNames(buffer, 8, 3), ["gemm", "[memset]", "x"]);
  assert.deepEqual(decodeNames(buffer, 8, 0), []);
});
