/**
 * Where a step's device sat idle: the gaps between the busy stretches of CUPTI's activity records
 * (ActivityRecords of src/backends/cuda/activity.ts) inside the host's window around the step, for
 * bench/step-timeline.ts.
 *
 * The library only ships the sorted records; the gaps are found here because the host's window
 * (its CUPTI timestamps before and after the step) is known here, and because a pure function over
 * plain numbers can be tested without a GPU (test/bench/idle-gaps.test.ts).
 *
 * Records overlap (concurrent kernels, a copy beside a kernel): a gap is a stretch that no record
 * covers. Its neighbours are the record whose end began it (of the busy stretch before it, the one
 * that ended last) and the one whose start ended it: the device was waiting for the host to launch
 * that second one, so idle is summed per "kernel waited for" as well as kept per gap.
 */

/** One record in ns from the window's start, with its name's index. */
export interface TimedRecord {
  startNs: number;
  endNs: number;
  name: number;
}

export interface IdleGap {
  /** ns from the window's start. */
  startNs: number;
  lengthNs: number;
  /** Name of the record whose end began the gap; null for the gap before the first record. */
  after: number | null;
  /**
   * Name of the record whose start ended it; null for the gap after the last record. Of records
   * starting together, the one that ends first (then the lower name index): the records' sort order.
   */
  before: number | null;
}

export interface WaitedFor {
  /** The `before` of its gaps: null is the window's end (the host's synchronisation after the step). */
  name: number | null;
  gaps: number;
  idleNs: number;
}

export interface GapBucket {
  /** Gap lengths in [fromNs, toNs); toNs null: no upper bound. */
  fromNs: number;
  toNs: number | null;
  gaps: number;
  idleNs: number;
}

export interface IdleProfile {
  windowNs: number;
  /** Sum of every gap: the window less the union of the records. */
  idleNs: number;
  gaps: number;
  /** First record start and last record end (the window's end for both when there is none). */
  firstStartNs: number;
  lastEndNs: number;
  /** The gaps at the window's edges: window start → first start, last end → window end. */
  beforeFirstNs: number;
  afterLastNs: number;
  /** Idle inside each tenth of first start → last end; with the two edges they sum to idleNs. */
  tenthsNs: number[];
  /** The longest gaps, longest first (earlier first among equals). */
  largest: IdleGap[];
  /** Idle per name waited for, most idle first. */
  waitedFor: WaitedFor[];
  /** Every gap by length (GAP_BUCKET_EDGES_NS): counts sum to gaps, idle to idleNs. */
  histogram: GapBucket[];
}

/**
 * Bucket edges: below 5 µs is about what the device leaves between kernels queued back to back, so
 * not the host's doing; from there up, the host issued the next launch late: by a little per call
 * (tens of µs) or because it stopped for something longer (a synchronisation, graph building).
 */
export const GAP_BUCKET_EDGES_NS: readonly number[] = [5_000, 20_000, 100_000, 1_000_000];
export const TENTHS = 10;

export interface IdleOptions {
  /** How many of the longest gaps to keep. */
  largest: number;
  /** How many names waited for to keep. */
  waitedFor: number;
}

/** The gaps of `records` (any order) in the window [0, windowNs]; parts of records outside it are cut off. */
export function idleProfile(records: readonly TimedRecord[], windowNs: number, options: IdleOptions): IdleProfile {
  const clipped = records
    .map((r) => ({ startNs: Math.max(0, r.startNs), endNs: Math.min(windowNs, r.endNs), name: r.name }))
    .filter((r) => r.endNs > r.startNs)
    .sort((a, b) => a.startNs - b.startNs || a.endNs - b.endNs || a.name - b.name);

  const gaps: IdleGap[] = [];
  let busyEnd = 0;
  let endedBy: number | null = null;
  for (const r of clipped) {
    if (r.startNs > busyEnd) gaps.push({ startNs: busyEnd, lengthNs: r.startNs - busyEnd, after: endedBy, before: r.name });
    // Strictly later only: of records ending together, the first in start order began the gap.
    if (r.endNs > busyEnd) {
      busyEnd = r.endNs;
      endedBy = r.name;
    }
  }
  if (windowNs > busyEnd) gaps.push({ startNs: busyEnd, lengthNs: windowNs - busyEnd, after: endedBy, before: null });

  const firstStartNs = clipped.length > 0 ? clipped[0]!.startNs : windowNs;
  const lastEndNs = clipped.length > 0 ? busyEnd : windowNs;
  return {
    windowNs,
    idleNs: sum(gaps.map((g) => g.lengthNs)),
    gaps: gaps.length,
    firstStartNs,
    lastEndNs,
    beforeFirstNs: firstStartNs,
    afterLastNs: windowNs - lastEndNs,
    tenthsNs: tenths(gaps, firstStartNs, lastEndNs),
    largest: [...gaps].sort((a, b) => b.lengthNs - a.lengthNs || a.startNs - b.startNs).slice(0, options.largest),
    waitedFor: waitedFor(gaps).slice(0, options.waitedFor),
    histogram: histogram(gaps),
  };
}

const sum = (xs: readonly number[]): number => xs.reduce((a, x) => a + x, 0);

/**
 * Idle inside each tenth of [from, to]. The edges are whole ns (from + ⌊span·i/10⌋), so every gap's
 * pieces add up to it exactly; the gaps before `from` and after `to` lie outside every tenth.
 */
function tenths(gaps: readonly IdleGap[], from: number, to: number): number[] {
  const edges = Array.from({ length: TENTHS + 1 }, (_, i) => from + Math.floor(((to - from) * i) / TENTHS));
  const bins = new Array<number>(TENTHS).fill(0);
  for (const g of gaps) {
    const start = Math.max(g.startNs, from);
    const end = Math.min(g.startNs + g.lengthNs, to);
    for (let i = 0; i < TENTHS && end > start; i++) bins[i]! += Math.max(0, Math.min(end, edges[i + 1]!) - Math.max(start, edges[i]!));
  }
  return bins;
}

function waitedFor(gaps: readonly IdleGap[]): WaitedFor[] {
  const byName = new Map<number | null, WaitedFor>();
  for (const g of gaps) {
    const entry = byName.get(g.before) ?? { name: g.before, gaps: 0, idleNs: 0 };
    entry.gaps++;
    entry.idleNs += g.lengthNs;
    byName.set(g.before, entry);
  }
  // Ties by more gaps, then by name index (null, the window's end, last), so the order is fixed.
  return [...byName.values()].sort((a, b) => b.idleNs - a.idleNs || b.gaps - a.gaps || (a.name ?? Infinity) - (b.name ?? Infinity));
}

function histogram(gaps: readonly IdleGap[]): GapBucket[] {
  const buckets: GapBucket[] = [0, ...GAP_BUCKET_EDGES_NS].map((fromNs, i) => ({ fromNs, toNs: GAP_BUCKET_EDGES_NS[i] ?? null, gaps: 0, idleNs: 0 }));
  for (const g of gaps) {
    const bucket = buckets.find((b) => b.toNs === null || g.lengthNs < b.toNs)!;
    bucket.gaps++;
    bucket.idleNs += g.lengthNs;
  }
  return buckets;
}
