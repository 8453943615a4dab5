/**
 * A training step's exact GPU busy and idle time, from CUPTI's activity records
 * (CudaBackend.activity, native/cuda/src/activity.cu), for bench/train-step.ts.
 *
 * The event profile (step-profile.ts) records an event before and after every backend call; those
 * records sit on the stream between the kernels, so its idle figure includes gaps the events
 * themselves made. CUPTI records each kernel, memcpy and memset with its device start and end and
 * adds nothing to the stream: busy is the union of those intervals. The host reads CUPTI's clock
 * right before the step and after synchronising at its end, so the step's wall time is in the same
 * clock and idle of the wall includes the lag before the first kernel and after the last.
 *
 * Where that idle lies comes from the records themselves (idle-gaps.ts): the longest gaps with the
 * kernels either side, the idle summed per kernel the device waited for, the gaps by length and
 * the idle in each tenth of the step, so a stretch where the host launches slower than the kernels
 * run (the vision tower's backward, the LoRA glue) shows as many short gaps in one part of the step.
 */
import type { ActivityTimeline } from "../src/backends/cuda/activity.ts";
import { type IdleGap, type IdleOptions, idleProfile, type TimedRecord } from "./idle-gaps.ts";

export interface TimelineKernel {
  /** Demangled, without return type and parameter list; copies as "[memcpy DtoD]", memsets "[memset]". */
  name: string;
  count: number;
  totalMs: number;
}

export interface TimelineGap {
  /** Start in ms after the first device start (the gap before it starts at −startLagMs). */
  atMs: number;
  lengthUs: number;
  /** The activity (display name) that ended as the gap began; null: the step's start on the host. */
  after: string | null;
  /** The one that began as it ended; null: the step's end (the host's synchronisation). */
  before: string | null;
}

export interface TimelineWaitedFor {
  /** The activity the device waited for; null: the step's end. */
  name: string | null;
  gaps: number;
  idleMs: number;
}

export interface TimelineGapBucket {
  /** Gaps of fromUs ≤ length < toUs (toUs null: no bound). */
  fromUs: number;
  toUs: number | null;
  gaps: number;
  idleMs: number;
}

/** The idle of the host wall, gap by gap (idle-gaps.ts); ms sums equal idleOfWallMs when every record lies inside the host's window. */
export interface TimelineIdle {
  gaps: number;
  idleMs: number;
  /** Host start → first device start, and last device end → host end. */
  beforeFirstMs: number;
  afterLastMs: number;
  /** Idle in each tenth of first start → last end; with the two above they sum to idleMs. */
  tenthsMs: number[];
  /** Longest first. */
  largest: TimelineGap[];
  /** Most idle first; the names with less are left out. */
  waitedFor: TimelineWaitedFor[];
  histogram: TimelineGapBucket[];
}

export interface StepTimeline {
  kernels: number;
  memcpys: number;
  memsets: number;
  /** Union of the device intervals of every kernel, copy and memset. */
  busyMs: number;
  /** First start → last end on the device. */
  spanMs: number;
  idleInSpanMs: number;
  /** Host clock before the step → after the synchronisation that ends it. */
  hostWallMs: number;
  /** hostWallMs − busyMs: every moment of the step the device did nothing. */
  idleOfWallMs: number;
  /** Host start → first device start: the launch of the step's first work. */
  startLagMs: number;
  /** Records CUPTI dropped (buffers full): when not 0, busy and the counts are low. */
  droppedRecords: number;
  /** Largest total time first. */
  topKernels: TimelineKernel[];
  idle: TimelineIdle;
}

const MS = 1e6;
const US = 1e3;
/** How many of the longest gaps and of the names waited for a timeline keeps. */
export const IDLE_KEPT: IdleOptions = { largest: 20, waitedFor: 15 };

/**
 * "void flash_fwd<64, true>(Params)" → "flash_fwd<64, true>": the return type and the parameter
 * list (its parentheses matched from the end, so templates with parenthesised arguments survive).
 */
export function displayKernelName(name: string): string {
  let short = name.replace(/^void /, "");
  if (short.endsWith(")")) {
    let depth = 0;
    for (let i = short.length - 1; i >= 0; i--) {
      if (short[i] === ")") depth++;
      else if (short[i] === "(" && --depth === 0) {
        if (i > 0) short = short.slice(0, i);
        break;
      }
    }
  }
  return short;
}

/** The step's figures from the activity record and the host's CUPTI timestamps around the step. */
export function stepTimeline(t: ActivityTimeline, hostStartNs: bigint, hostEndNs: bigint, kept: IdleOptions = IDLE_KEPT): StepTimeline {
  const hostWallMs = Number(hostEndNs - hostStartNs) / MS;
  const busyMs = t.busyNs / MS;
  const ran = t.kernels + t.memcpys + t.memsets > 0;
  return {
    kernels: t.kernels,
    memcpys: t.memcpys,
    memsets: t.memsets,
    busyMs,
    spanMs: Number(t.lastEndNs - t.firstStartNs) / MS,
    idleInSpanMs: t.idleNs / MS,
    hostWallMs,
    idleOfWallMs: hostWallMs - busyMs,
    startLagMs: ran ? Number(t.firstStartNs - hostStartNs) / MS : hostWallMs,
    droppedRecords: t.droppedRecords,
    topKernels: t.top.map((k) => ({ name: displayKernelName(k.name), count: k.count, totalMs: k.totalNs / MS })),
    idle: stepIdle(t, hostStartNs, hostEndNs, kept),
  };
}

/** The gaps of the records in the host's window, in ms and µs with display names. */
function stepIdle(t: ActivityTimeline, hostStartNs: bigint, hostEndNs: bigint, kept: IdleOptions): TimelineIdle {
  const { startNs, endNs, nameIndex } = t.records;
  // Offsets from the host's start fit a double exactly; CUPTI's absolute ns do not.
  const records: TimedRecord[] = Array.from(nameIndex, (name, i) => ({ startNs: Number(startNs[i]! - hostStartNs), endNs: Number(endNs[i]! - hostStartNs), name }));
  const p = idleProfile(records, Number(hostEndNs - hostStartNs), kept);
  const names = t.records.names.map(displayKernelName);
  const name = (i: number | null): string | null => (i === null ? null : (names[i] ?? `[name ${i}]`));
  const gap = (g: IdleGap): TimelineGap => ({ atMs: (g.startNs - p.firstStartNs) / MS, lengthUs: g.lengthNs / US, after: name(g.after), before: name(g.before) });
  return {
    gaps: p.gaps,
    idleMs: p.idleNs / MS,
    beforeFirstMs: p.beforeFirstNs / MS,
    afterLastMs: p.afterLastNs / MS,
    tenthsMs: p.tenthsNs.map((ns) => ns / MS),
    largest: p.largest.map(gap),
    waitedFor: p.waitedFor.map((w) => ({ name: name(w.name), gaps: w.gaps, idleMs: w.idleNs / MS })),
    histogram: p.histogram.map((b) => ({ fromUs: b.fromNs / US, toUs: b.toNs === null ? null : b.toNs / US, gaps: b.gaps, idleMs: b.idleNs / MS })),
  };
}

const percent = (part: number, whole: number): string => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "—");

const cell = (name: string): string => name.replaceAll("|", "\\|");

/**
 * One sentence and the top-10 table, then where the idle lies (bench/reference/summarize.py renders
 * the same from the JSON, test/bench/summarize-timeline.test.ts holds them together).
 */
export function timelineMarkdown(t: StepTimeline): string {
  const dropped = t.droppedRecords > 0 ? ` CUPTI dropped ${t.droppedRecords} records: busy and counts are low.` : "";
  return [
    `CUPTI timeline: busy ${t.busyMs.toFixed(1)} ms of a ${t.hostWallMs.toFixed(1)} ms host wall, idle ${t.idleOfWallMs.toFixed(1)} ms = ${percent(t.idleOfWallMs, t.hostWallMs)} ` +
      `(${t.startLagMs.toFixed(1)} ms before the first kernel; first start → last end ${t.spanMs.toFixed(1)} ms, idle in it ${t.idleInSpanMs.toFixed(1)} ms = ${percent(t.idleInSpanMs, t.spanMs)}); ` +
      `${t.kernels} kernels, ${t.memcpys} memcpys, ${t.memsets} memsets.${dropped}`,
    "",
    "| kernel | count | GPU ms | share of busy |",
    "| --- | ---: | ---: | ---: |",
    ...t.topKernels.slice(0, 10).map((k) => `| ${cell(k.name)} | ${k.count} | ${k.totalMs.toFixed(1)} | ${percent(k.totalMs, t.busyMs)} |`),
    "",
    ...idleMarkdown(t.idle, t.spanMs),
  ].join("\n");
}

/** A gap's position: its share of first start → last end, or the edge of the step it lies at. */
function gapAt(g: TimelineGap, spanMs: number): string {
  if (g.after === null) return "before first";
  if (g.before === null) return "after last";
  return percent(g.atMs, spanMs);
}

const bucketLabel = (b: TimelineGapBucket): string => (b.toUs === null ? `≥ ${b.fromUs} µs` : b.fromUs === 0 ? `< ${b.toUs} µs` : `${b.fromUs}–${b.toUs} µs`);

/** The idle gaps' lines (without a trailing blank line). */
export function idleMarkdown(idle: TimelineIdle, spanMs: number): string[] {
  const tenths = idle.tenthsMs.map((_, i) => `${10 * i}–${10 * (i + 1)}%`);
  return [
    `${idle.gaps} idle gaps, ${idle.idleMs.toFixed(1)} ms in all (${idle.beforeFirstMs.toFixed(2)} ms before the first activity, ${idle.afterLastMs.toFixed(2)} ms after the last). ` +
      "Idle in each tenth of first start → last end (ms):",
    "",
    `| ${tenths.join(" | ")} |`,
    `| ${tenths.map(() => "---:").join(" | ")} |`,
    `| ${idle.tenthsMs.map((ms) => ms.toFixed(2)).join(" | ")} |`,
    "",
    "| gap length | gaps | idle ms | share of idle |",
    "| --- | ---: | ---: | ---: |",
    ...idle.histogram.map((b) => `| ${bucketLabel(b)} | ${b.gaps} | ${b.idleMs.toFixed(2)} | ${percent(b.idleMs, idle.idleMs)} |`),
    "",
    "Largest idle gaps (at: share of first start → last end):",
    "",
    "| at | µs | after | before |",
    "| ---: | ---: | --- | --- |",
    ...idle.largest.map((g) => `| ${gapAt(g, spanMs)} | ${g.lengthUs.toFixed(1)} | ${cell(g.after ?? "(step start)")} | ${cell(g.before ?? "(step end)")} |`),
    "",
    "Idle by the activity waited for (the one each gap ended with):",
    "",
    "| waited for | gaps | idle ms | share of idle | mean µs |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...idle.waitedFor.map(
      (w) => `| ${cell(w.name ?? "(step end)")} | ${w.gaps} | ${w.idleMs.toFixed(2)} | ${percent(w.idleMs, idle.idleMs)} | ${((1000 * w.idleMs) / w.gaps).toFixed(1)} |`,
    ),
  ];
}
