/**
 * The idle gaps of a step's activity records (bench/idle-gaps.ts) from synthetic records: where the
 * gaps are and next to what, overlapping and nested records, the window's edges, and that the
 * histogram, the tenths and the per-name sums all add up to the same idle. The records themselves
 * come from CUPTI on a GPU (test/cuda/activity.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { idleProfile, type IdleProfile, type TimedRecord } from "../../bench/idle-gaps.ts";

const ALL = { largest: 1000, waitedFor: 1000 };
const rec = (startNs: number, endNs: number, name: number): TimedRecord => ({ startNs, endNs, name });
const sum = (xs: readonly number[]): number => xs.reduce((a, x) => a + x, 0);

/** What every profile must satisfy, whatever its records. */
function assertSumsAgree(p: IdleProfile): void {
  assert.equal(sum(p.histogram.map((b) => b.idleNs)), p.idleNs, "histogram idle");
  assert.equal(sum(p.histogram.map((b) => b.gaps)), p.gaps, "histogram counts");
  assert.equal(sum(p.tenthsNs) + p.beforeFirstNs + p.afterLastNs, p.idleNs, "tenths and edges");
  assert.equal(p.tenthsNs.length, 10);
}

test("gaps between records in sequence, with the window's edges and the records either side", () => {
  // window 0..1000: idle 0-100 (lead), 200-260, 300-500, 900-1000 (trail)
  const p = idleProfile([rec(100, 200, 0), rec(260, 300, 1), rec(500, 900, 2)], 1000, ALL);
  assert.deepEqual(
    [...p.largest].sort((a, b) => a.startNs - b.startNs),
    [
      { startNs: 0, lengthNs: 100, after: null, before: 0 },
      { startNs: 200, lengthNs: 60, after: 0, before: 1 },
      { startNs: 300, lengthNs: 200, after: 1, before: 2 },
      { startNs: 900, lengthNs: 100, after: 2, before: null },
    ],
  );
  assert.deepEqual([p.gaps, p.idleNs, p.firstStartNs, p.lastEndNs, p.beforeFirstNs, p.afterLastNs], [4, 460, 100, 900, 100, 100]);
  // Longest first; of the two 100 ns gaps the earlier one first.
  assert.deepEqual(p.largest.map((g) => g.startNs), [300, 0, 900, 200]);
  assertSumsAgree(p);
});

test("overlapping and nested records: a gap is only where no record covers, next to the record that ended last", () => {
  const records = [
    rec(0, 100, 0),
    rec(10, 50, 1), // nested in 0
    rec(90, 150, 2), // overlaps 0, ends the busy stretch
    rec(120, 150, 3), // ends with 2: 2 came first in start order, so 2 began the gap
    rec(200, 300, 4),
    rec(300, 310, 5), // touches 4: no gap at 300
    rec(305, 400, 6),
  ];
  const p = idleProfile(records, 400, ALL);
  assert.deepEqual(p.largest, [{ startNs: 150, lengthNs: 50, after: 2, before: 4 }]);
  assert.deepEqual([p.gaps, p.idleNs, p.beforeFirstNs, p.afterLastNs], [1, 50, 0, 0]);
  assertSumsAgree(p);
});

test("records in any order give the same gaps; parts outside the window are cut off", () => {
  const sorted = [rec(-50, 30, 0), rec(40, 60, 1), rec(60, 80, 2), rec(90, 130, 3)];
  const p = idleProfile([...sorted].reverse(), 100, ALL);
  assert.deepEqual(p, idleProfile(sorted, 100, ALL));
  assert.deepEqual(
    [...p.largest].sort((a, b) => a.startNs - b.startNs),
    [
      { startNs: 30, lengthNs: 10, after: 0, before: 1 },
      { startNs: 80, lengthNs: 10, after: 2, before: 3 },
    ],
  );
  assert.deepEqual([p.firstStartNs, p.lastEndNs, p.beforeFirstNs, p.afterLastNs], [0, 100, 0, 0]);
  // A record wholly outside the window leaves nothing.
  assert.deepEqual(idleProfile([rec(200, 300, 0)], 100, ALL), idleProfile([], 100, ALL));
});

test("a window with no records is one gap, all before the first activity", () => {
  const p = idleProfile([], 5000, ALL);
  assert.deepEqual(p.largest, [{ startNs: 0, lengthNs: 5000, after: null, before: null }]);
  assert.deepEqual([p.gaps, p.idleNs, p.beforeFirstNs, p.afterLastNs, p.firstStartNs, p.lastEndNs], [1, 5000, 5000, 0, 5000, 5000]);
  assert.deepEqual(p.tenthsNs, new Array(10).fill(0));
  assert.deepEqual(p.waitedFor, [{ name: null, gaps: 1, idleNs: 5000 }]);
  assertSumsAgree(p);
  // Busy from edge to edge: no gap at all.
  const full = idleProfile([rec(0, 5000, 0)], 5000, ALL);
  assert.deepEqual([full.gaps, full.idleNs, full.largest.length, full.tenthsNs], [0, 0, 0, new Array(10).fill(0)]);
});

test("idle is summed per activity waited for, most idle first, the step's end as null; options cut the lists", () => {
  // gaps: 0-10 before k1 (lead), 20-50 before k2, 60-62 before k1, 72-100 trail
  const records = [rec(10, 20, 1), rec(50, 60, 2), rec(62, 72, 1)];
  const p = idleProfile(records, 100, ALL);
  assert.deepEqual(p.waitedFor, [
    { name: 2, gaps: 1, idleNs: 30 },
    { name: null, gaps: 1, idleNs: 28 },
    { name: 1, gaps: 2, idleNs: 12 },
  ]);
  const cut = idleProfile(records, 100, { largest: 2, waitedFor: 1 });
  assert.deepEqual(cut.largest.map((g) => g.lengthNs), [30, 28]);
  assert.deepEqual(cut.waitedFor, [{ name: 2, gaps: 1, idleNs: 30 }]);
  // What is cut from the lists stays in the totals.
  assert.deepEqual([cut.gaps, cut.idleNs, cut.histogram], [p.gaps, p.idleNs, p.histogram]);
  // Equal idle: more gaps first, then the lower name index.
  const tied = idleProfile([rec(10, 20, 5), rec(30, 40, 3), rec(45, 50, 4), rec(55, 60, 4)], 60, ALL);
  assert.deepEqual(tied.waitedFor.map((w) => [w.name, w.gaps, w.idleNs]), [[4, 2, 10], [3, 1, 10], [5, 1, 10]]);
});

test("the length histogram: < 5, 5–20, 20–100, 100–1000, ≥ 1000 µs, each edge in the bucket above it", () => {
  const lengths = [4_999, 5_000, 19_999, 20_000, 99_999, 100_000, 999_999, 1_000_000, 3_000_000];
  const records: TimedRecord[] = [];
  let t = 0;
  for (const [i, length] of lengths.entries()) {
    records.push(rec(t, t + 1, i));
    t += 1 + length;
  }
  records.push(rec(t, t + 1, lengths.length));
  const p = idleProfile(records, t + 1, ALL);
  assert.deepEqual(
    p.histogram.map((b) => [b.fromNs, b.toNs, b.gaps, b.idleNs]),
    [
      [0, 5_000, 1, 4_999],
      [5_000, 20_000, 2, 24_999],
      [20_000, 100_000, 2, 119_999],
      [100_000, 1_000_000, 2, 1_099_999],
      [1_000_000, null, 2, 4_000_000],
    ],
  );
  assertSumsAgree(p);
});

test("the tenths split a gap that straddles an edge, and leave out the gaps at the window's edges", () => {
  // window 0..1200, span 100..1100 (tenths of 100 ns): a gap 250-420 spans tenths 1 to 3
  const p = idleProfile([rec(100, 250, 0), rec(420, 1100, 1)], 1200, ALL);
  assert.deepEqual(p.tenthsNs, [0, 50, 100, 20, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([p.beforeFirstNs, p.afterLastNs, p.idleNs], [100, 100, 370]);
  // A span that tenths do not divide: the edges are whole ns (⌊13·i/10⌋: 0 1 2 3 5 6 7 9 10 11 13)
  // and the pieces of the gaps 1-6 and 7-12 still add up.
  const odd = idleProfile([rec(0, 1, 0), rec(6, 7, 1), rec(12, 13, 2)], 13, ALL);
  assert.deepEqual(odd.tenthsNs, [0, 1, 1, 2, 1, 0, 2, 1, 1, 1]);
  assertSumsAgree(odd);
});

test("random records: the idle is exactly the window less the records' cover, and every sum agrees", () => {
  // A small LCG, so a failure reproduces.
  let seed = 12345;
  const next = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let trial = 0; trial < 200; trial++) {
    const window = 200 + next(800);
    const records = Array.from({ length: next(40) }, () => {
      const start = next(window + 100) - 50;
      return rec(start, start + 1 + next(60), next(6));
    });
    const covered = new Uint8Array(window);
    for (const r of records) covered.fill(1, Math.max(0, r.startNs), Math.max(0, Math.min(window, r.endNs)));
    const p = idleProfile(records, window, { largest: 3, waitedFor: 2 });
    assert.equal(p.idleNs, window - sum([...covered]), `trial ${trial}`);
    assertSumsAgree(p);
    // Every gap lies where nothing covers, bounded by covered ns or the window's edges.
    const all = idleProfile(records, window, ALL);
    assert.equal(sum(all.largest.map((g) => g.lengthNs)), all.idleNs);
    assert.equal(sum(all.waitedFor.map((w) => w.idleNs)), all.idleNs);
    for (const g of all.largest) {
      assert.ok(covered.subarray(g.startNs, g.startNs + g.lengthNs).every((c) => c === 0), `trial ${trial}: gap at ${g.startNs} covered`);
      assert.ok(g.startNs === 0 || covered[g.startNs - 1] === 1);
      assert.ok(g.startNs + g.lengthNs === window || covered[g.startNs + g.lengthNs] === 1);
      assert.equal(g.after === null, g.startNs === 0, `trial ${trial}: after`);
      assert.equal(g.before === null, g.startNs + g.lengthNs === window, `trial ${trial}: before`);
    }
  }
});
