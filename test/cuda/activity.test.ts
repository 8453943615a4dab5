/**
 * The CUPTI activity timeline (native/cuda/src/activity.cu) on a GPU: a window with an upload, a
 * memset and a few kernels comes back with those records, a busy time no longer than the span and
 * inside the host's timestamps, per-name totals, and the sorted records whose gaps are that idle
 * time (bench/idle-gaps.ts). CUPTI is optional, so without it the test
 * skips, except where scripts/gpu-check found it (SPLINT_CUPTI_LIB set): there it must work.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { idleProfile } from "../../bench/idle-gaps.ts";
import { CudaError } from "../../src/backends/cuda/errors.ts";
import { cudaUnderTest } from "./cuda-under-test.ts";

const { cuda, skip } = cudaUnderTest();
// CUPTI normalises device timestamps to its host clock; allow for a little skew between the two.
const CLOCK_SLACK_NS = 100_000n;

describe("the activity timeline", { skip }, () => {
  after(() => cuda?.dispose());

  test("records the window's copies, memsets and kernels with exact busy and idle time", (t) => {
    const b = cuda!;
    const n = 1024;
    const ones = new Float32Array(n * n).fill(1);
    const x = b.upload(ones, [n, n], "f32");
    try {
      b.activity.start();
    } catch (err) {
      if (process.env.SPLINT_CUPTI_LIB || !(err instanceof CudaError)) throw err;
      t.skip(`CUPTI unavailable: ${err.message}`);
      x.free();
      return;
    }
    const hostStart = b.activity.timestamp();
    const y = b.upload(ones, [n, n], "f32");
    const zeros = b.zeros([n], "f32");
    const product = b.matmul(x, y);
    const sum = b.add(product, x);
    b.synchronize();
    const hostEnd = b.activity.timestamp();
    const timeline = b.activity.stop(64);
    for (const tensor of [x, y, zeros, product, sum]) tensor.free();

    assert.ok(timeline.kernels >= 2, `kernels ${timeline.kernels}`);
    assert.ok(timeline.memcpys >= 1, `memcpys ${timeline.memcpys}`);
    assert.ok(timeline.memsets >= 1, `memsets ${timeline.memsets}`);
    assert.equal(timeline.droppedRecords, 0);
    assert.equal(timeline.otherDeviceRecords, 0);
    const span = Number(timeline.lastEndNs - timeline.firstStartNs);
    assert.ok(timeline.busyNs > 0 && timeline.busyNs <= span, `busy ${timeline.busyNs} ns, span ${span} ns`);
    assert.equal(timeline.idleNs, span - timeline.busyNs);
    assert.ok(timeline.firstStartNs + CLOCK_SLACK_NS >= hostStart, `first start ${timeline.firstStartNs} before the host's ${hostStart}`);
    assert.ok(timeline.lastEndNs <= hostEnd + CLOCK_SLACK_NS, `last end ${timeline.lastEndNs} after the host's ${hostEnd}`);

    // Every name fits in 64: the totals add up to at least the union, largest first.
    assert.equal(timeline.top.length, timeline.distinctNames);
    const names = timeline.top.map((k) => k.name);
    assert.ok(names.includes("[memset]") && names.includes("[memcpy HtoD]"), names.join(", "));
    assert.equal(timeline.top.reduce((c, k) => c + k.count, 0), timeline.kernels + timeline.memcpys + timeline.memsets);
    assert.ok(timeline.top.reduce((ns, k) => ns + k.totalNs, 0) >= timeline.busyNs);
    assert.deepEqual(timeline.top.map((k) => k.totalNs), timeline.top.map((k) => k.totalNs).sort((p, q) => q - p));

    // The records: every name, each timed record once, sorted by start, and their gaps are the idle.
    const { records } = timeline;
    assert.deepEqual([...records.names].sort(), [...names].sort());
    const kept = records.startNs.length;
    assert.ok(kept > 0 && kept <= timeline.kernels + timeline.memcpys + timeline.memsets, `${kept} records`);
    for (let i = 0; i < kept; i++) {
      assert.ok(records.startNs[i]! < records.endNs[i]!, `record ${i} empty`);
      assert.ok(i === 0 || records.startNs[i - 1]! <= records.startNs[i]!, `record ${i} out of order`);
      assert.ok(records.nameIndex[i]! >= 0 && records.nameIndex[i]! < records.names.length, `record ${i} name ${records.nameIndex[i]}`);
    }
    assert.equal(records.startNs[0], timeline.firstStartNs);
    const fromFirst = (ns: bigint): number => Number(ns - timeline.firstStartNs);
    const gaps = idleProfile(Array.from(records.nameIndex, (name, i) => ({ startNs: fromFirst(records.startNs[i]!), endNs: fromFirst(records.endNs[i]!), name })), span, { largest: 0, waitedFor: 0 });
    assert.equal(gaps.idleNs, timeline.idleNs);
    assert.deepEqual([gaps.beforeFirstNs, gaps.afterLastNs], [0, 0]);
  });

  test("a new window starts empty, and stop without start is an error", (t) => {
    const b = cuda!;
    try {
      b.activity.start();
    } catch (err) {
      if (process.env.SPLINT_CUPTI_LIB || !(err instanceof CudaError)) throw err;
      t.skip(`CUPTI unavailable: ${err.message}`);
      return;
    }
    const empty = b.activity.stop();
    assert.deepEqual([empty.kernels, empty.memcpys, empty.memsets, empty.busyNs, empty.distinctNames], [0, 0, 0, 0, 0]);
    assert.deepEqual([empty.records.names, empty.records.startNs.length], [[], 0]);
    assert.throws(() => b.activity.stop(), /invalid argument: .*no timeline recording/);
  });
});
