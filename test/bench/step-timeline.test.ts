/**
 * The CUPTI step timeline's arithmetic and rendering (bench/step-timeline.ts) from a fixed activity
 * record, and the name buffer the library fills (src/backends/cuda/activity.ts). The record itself
 * comes from CUPTI on a GPU (test/cuda/activity.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type ActivityTimeline, decodeNames, timelineFrom } from "../../src/backends/cuda/activity.ts";
import { displayKernelName, idleMarkdown, stepTimeline, timelineMarkdown } from "../../bench/step-timeline.ts";

// CUPTI timestamps are ns since an epoch, far past 2^53: the differences must be taken as bigints.
const EPOCH = 1_765_000_000_000_000_000n;

/** Records at EPOCH + the given ns, as activity_records hands them out. */
function records(names: string[], rows: [number, number, number][]): ActivityTimeline["records"] {
  return {
    names,
    startNs: BigInt64Array.from(rows, ([start]) => EPOCH + BigInt(start)),
    endNs: BigInt64Array.from(rows, ([, end]) => EPOCH + BigInt(end)),
    nameIndex: Int32Array.from(rows, ([, , name]) => name),
  };
}

const NAMES = ["void flash_fwd<64, (Mask)1>(FlashParams)", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", "[memcpy DtoD]", "[memset]"];

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
  // busy 9 ms of the span 0.400123 → 10.400123 ms: gaps of 0.6 ms (at 3.400123) and 0.4 ms (at 7.500123)
  records: records(NAMES, [
    [400_123, 3_400_123, 0],
    [400_123, 1_000_123, 3], // starts with the first kernel, ends first: the lead gap waited for it
    [4_000_123, 7_000_123, 0],
    [7_000_123, 7_500_123, 2],
    [7_900_123, 10_400_123, 1],
  ]),
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
  const empty: ActivityTimeline = {
    ...record, kernels: 0, memcpys: 0, memsets: 0, busyNs: 0, firstStartNs: 0n, lastEndNs: 0n, idleNs: 0, distinctNames: 0, top: [], records: records([], []),
  };
  const t = stepTimeline(empty, EPOCH, EPOCH + 5_000_000n);
  assert.deepEqual([t.busyMs, t.spanMs, t.hostWallMs, t.idleOfWallMs, t.startLagMs], [0, 0, 5, 5, 5]);
  assert.match(timelineMarkdown(t), /busy 0\.0 ms of a 5\.0 ms host wall, idle 5\.0 ms = 100\.0% .*idle in it 0\.0 ms = —\)/);
  assert.deepEqual([t.idle.gaps, t.idle.idleMs, t.idle.beforeFirstMs, t.idle.afterLastMs], [1, 5, 5, 0]);
  // With nothing run the "first start" is the window's end, so the one gap starts 5 ms before it (−startLagMs).
  assert.deepEqual(t.idle.largest, [{ atMs: -5, lengthUs: 5000, after: null, before: null }]);
  assert.match(timelineMarkdown(t), /\n\| before first \| 5000\.0 \| \(step start\) \| \(step end\) \|\n/);
});

test("the idle gaps of the host window: the edges, the gaps with the kernels either side, by kernel waited for, by length and by tenth", () => {
  const t = stepTimeline(record, EPOCH, EPOCH + 12_000_000n);
  const idle = t.idle;
  assert.equal(idle.gaps, 4);
  assert.ok(Math.abs(idle.idleMs - t.idleOfWallMs) < 1e-9, `${idle.idleMs} vs ${t.idleOfWallMs}`);
  assert.deepEqual([idle.beforeFirstMs, idle.afterLastMs], [0.400123, 1.599877]);
  assert.deepEqual(idle.largest, [
    { atMs: 10, lengthUs: 1599.877, after: "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", before: null },
    { atMs: 3, lengthUs: 600, after: "flash_fwd<64, (Mask)1>", before: "flash_fwd<64, (Mask)1>" },
    { atMs: -0.400123, lengthUs: 400.123, after: null, before: "[memset]" },
    { atMs: 7.1, lengthUs: 400, after: "[memcpy DtoD]", before: "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas" },
  ]);
  assert.deepEqual(
    idle.waitedFor.map((w) => [w.name, w.gaps, w.idleMs]),
    [
      [null, 1, 1.599877],
      ["flash_fwd<64, (Mask)1>", 1, 0.6],
      ["[memset]", 1, 0.400123],
      ["sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", 1, 0.4],
    ],
  );
  assert.deepEqual(
    idle.histogram.map((b) => [b.fromUs, b.toUs, b.gaps]),
    [[0, 5, 0], [5, 20, 0], [20, 100, 0], [100, 1000, 3], [1000, null, 1]],
  );
  // The span is 10 ms: the 0.6 ms gap lies in the fourth ms, the 0.4 ms one in the eighth.
  assert.deepEqual(idle.tenthsMs, [0, 0, 0, 0.6, 0, 0, 0, 0.4, 0, 0]);
  // The options cut the lists, not the totals.
  const cut = stepTimeline(record, EPOCH, EPOCH + 12_000_000n, { largest: 1, waitedFor: 1 }).idle;
  assert.deepEqual([cut.largest.length, cut.waitedFor.length, cut.gaps, cut.idleMs], [1, 1, idle.gaps, idle.idleMs]);
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
  assert.equal(md[4], "| k0\\|x | 1 | 0.9 | 10.0% |");
  assert.equal(md[4 + 10], "");
  assert.match(md[15]!, /^4 idle gaps, 3\.0 ms in all/);
  const dropped = timelineMarkdown(stepTimeline({ ...record, droppedRecords: 7 }, EPOCH, EPOCH + 12_000_000n));
  assert.match(dropped.split("\n")[0]!, /CUPTI dropped 7 records: busy and counts are low\.$/);
});

test("the idle Markdown: tenths, lengths, largest gaps and kernels waited for", () => {
  const md = idleMarkdown(stepTimeline(record, EPOCH, EPOCH + 12_000_000n).idle, 10);
  assert.deepEqual(md, [
    "4 idle gaps, 3.0 ms in all (0.40 ms before the first activity, 1.60 ms after the last). Idle in each tenth of first start → last end (ms):",
    "",
    "| 0–10% | 10–20% | 20–30% | 30–40% | 40–50% | 50–60% | 60–70% | 70–80% | 80–90% | 90–100% |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    "| 0.00 | 0.00 | 0.00 | 0.60 | 0.00 | 0.00 | 0.00 | 0.40 | 0.00 | 0.00 |",
    "",
    "| gap length | gaps | idle ms | share of idle |",
    "| --- | ---: | ---: | ---: |",
    "| < 5 µs | 0 | 0.00 | 0.0% |",
    "| 5–20 µs | 0 | 0.00 | 0.0% |",
    "| 20–100 µs | 0 | 0.00 | 0.0% |",
    "| 100–1000 µs | 3 | 1.40 | 46.7% |",
    "| ≥ 1000 µs | 1 | 1.60 | 53.3% |",
    "",
    "Largest idle gaps (at: share of first start → last end):",
    "",
    "| at | µs | after | before |",
    "| ---: | ---: | --- | --- |",
    "| after last | 1599.9 | sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas | (step end) |",
    "| 30.0% | 600.0 | flash_fwd<64, (Mask)1> | flash_fwd<64, (Mask)1> |",
    "| before first | 400.1 | (step start) | [memset] |",
    "| 71.0% | 400.0 | [memcpy DtoD] | sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas |",
    "",
    "Idle by the activity waited for (the one each gap ended with):",
    "",
    "| waited for | gaps | idle ms | share of idle | mean µs |",
    "| --- | ---: | ---: | ---: | ---: |",
    "| (step end) | 1 | 1.60 | 53.3% | 1599.9 |",
    "| flash_fwd<64, (Mask)1> | 1 | 0.60 | 20.0% | 600.0 |",
    "| [memset] | 1 | 0.40 | 13.3% | 400.1 |",
    "| sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas | 1 | 0.40 | 13.3% | 400.0 |",
  ]);
});

test("names come back NUL-terminated at fixed strides; a full slot has no terminator", () => {
  const buffer = Buffer.alloc(3 * 8);
  buffer.write("gemm", 0);
  buffer.write("[memset]", 8);
  buffer.write("x", 16);
  assert.deepEqual(decodeNames(buffer, 8, 3), ["gemm", "[memset]", "x"]);
  assert.deepEqual(decodeNames(buffer, 8, 0), []);
});

test("timelineFrom keeps the records from a moment on and recomputes every figure from them", () => {
  // A warm-up step's records (1.0–2.0 ms, memcpy at 1.5) before the measured one (the fixture's, shifted by 3 ms).
  const shifted: [number, number, number][] = [
    [1_000_000, 2_000_000, 1],
    [1_500_000, 1_600_000, 2],
    ...[...record.records.nameIndex.keys()].map((i): [number, number, number] => [
      Number(record.records.startNs[i]! - EPOCH) + 3_000_000,
      Number(record.records.endNs[i]! - EPOCH) + 3_000_000,
      record.records.nameIndex[i]!,
    ]),
  ];
  const window: ActivityTimeline = { ...record, kernels: 4, memcpys: 2, droppedRecords: 2, records: records(NAMES, shifted) };
  const part = timelineFrom(window, EPOCH + 3_000_000n, 2);
  assert.deepEqual([part.kernels, part.memcpys, part.memsets], [3, 1, 1]);
  assert.equal(part.busyNs, 9_000_000);
  assert.equal(part.firstStartNs, EPOCH + 3_400_123n);
  assert.equal(part.lastEndNs, EPOCH + 13_400_123n);
  assert.equal(part.idleNs, 1_000_000);
  assert.equal(part.droppedRecords, 2, "the window's dropped records are not attributed to a part");
  assert.equal(part.distinctNames, 4);
  assert.deepEqual(part.top, [
    { name: NAMES[0], count: 2, totalNs: 6_000_000 },
    { name: NAMES[1], count: 1, totalNs: 2_500_000 },
  ]);
  assert.equal(part.records.nameIndex.length, 5);
  // From before every record: the whole window, the warm-up's kernel and copy included.
  const whole = timelineFrom(window, 0n, 10);
  assert.deepEqual([whole.kernels, whole.memcpys, whole.memsets], [4, 2, 1]);
  assert.equal(whole.busyNs, 10_000_000);
  assert.equal(whole.firstStartNs, EPOCH + 1_000_000n);
  // The fixture's own records: its busy and idle, and each name's time as the records give it.
  const same = timelineFrom(record, 0n, 4);
  assert.deepEqual(same.top, [
    { name: NAMES[0], count: 2, totalNs: 6_000_000 },
    { name: NAMES[1], count: 1, totalNs: 2_500_000 },
    { name: "[memset]", count: 1, totalNs: 600_000 },
    { name: "[memcpy DtoD]", count: 1, totalNs: 500_000 },
  ]);
  assert.equal(same.busyNs, record.busyNs);
  assert.equal(same.idleNs, record.idleNs);
});
