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
 */
import type { ActivityTimeline } from "../src/backends/cuda/activity.ts";

export interface TimelineKernel {
  /** Demangled, without return type and parameter list; copies as "[memcpy DtoD]", memsets "[memset]". */
  name: string;
  count: number;
  totalMs: number;
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
}

const MS = 1e6;

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
export function stepTimeline(t: ActivityTimeline, hostStartNs: bigint, hostEndNs: bigint): StepTimeline {
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
  };
}

const percent = (part: number, whole: number): string => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "—");

/** One sentence and the top-10 table (bench/reference/summarize.py renders the same from the JSON). */
export function timelineMarkdown(t: StepTimeline): string {
  const dropped = t.droppedRecords > 0 ? ` CUPTI dropped ${t.droppedRecords} records: busy and counts are low.` : "";
  return [
    `CUPTI timeline: busy ${t.busyMs.toFixed(1)} ms of a ${t.hostWallMs.toFixed(1)} ms host wall, idle ${t.idleOfWallMs.toFixed(1)} ms = ${percent(t.idleOfWallMs, t.hostWallMs)} ` +
      `(${t.startLagMs.toFixed(1)} ms before the first kernel; first start → last end ${t.spanMs.toFixed(1)} ms, idle in it ${t.idleInSpanMs.toFixed(1)} ms = ${percent(t.idleInSpanMs, t.spanMs)}); ` +
      `${t.kernels} kernels, ${t.memcpys} memcpys, ${t.memsets} memsets.${dropped}`,
    "",
    "| kernel | count | GPU ms | share of busy |",
    "| --- | ---: | ---: | ---: |",
    ...t.topKernels.slice(0, 10).map((k) => `| ${k.name.replaceAll("|", "\\|")} | ${k.count} | ${k.totalMs.toFixed(1)} | ${percent(k.totalMs, t.busyMs)} |`),
  ].join("\n");
}
