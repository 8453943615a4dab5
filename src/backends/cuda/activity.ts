/**
 * The activity timeline of native/cuda/src/activity.cu: CUPTI's record of every kernel, memcpy and
 * memset the device ran between start() and stop(), so busy and idle time are exact (the timing
 * events of the step profile sit on the stream themselves and widen the gaps they measure).
 *
 * CUPTI is optional: when it cannot be loaded (not installed, SPLINT_CUPTI_LIB wrong, a build
 * without cupti.h) or refuses to start (another profiler attached), start() and timestamp() throw
 * a CudaError whose op starts with "activity" and whose message says why; callers that can do
 * without the timeline catch that.
 */
import { ACTIVITY_FIELD, ACTIVITY_FIELDS, type CtxHandle, check, type SplintCudaLib } from "./ffi.ts";

export interface ActivityName {
  /** A kernel's demangled name, or "[memcpy HtoD]" (DtoH, DtoD, …) or "[memset]". */
  name: string;
  count: number;
  /** Sum of the records' durations (overlapping kernels each count in full). */
  totalNs: number;
}

/**
 * Every timed record of the window, sorted by start (then end), as parallel arrays: where the
 * device sat idle and next to what (bench/idle-gaps.ts). Records CUPTI could not time are left out.
 */
export interface ActivityRecords {
  /** Every distinct name (as `ActivityName.name`), indexed by `nameIndex`. */
  names: string[];
  /** Device start and end of each record, in CUPTI's clock like firstStartNs. */
  startNs: BigInt64Array;
  endNs: BigInt64Array;
  nameIndex: Int32Array;
}

export interface ActivityTimeline {
  kernels: number;
  memcpys: number;
  memsets: number;
  /** Length of the union of the records' device intervals. */
  busyNs: number;
  /** First start and last end in CUPTI's clock (CudaActivity.timestamp); 0n when nothing ran. */
  firstStartNs: bigint;
  lastEndNs: bigint;
  /** last end − first start − busy. */
  idleNs: number;
  /** Records CUPTI lost for want of buffer space: when not 0 the figures undercount. */
  droppedRecords: number;
  /** Records of other devices, left out of every figure here. */
  otherDeviceRecords: number;
  /** Distinct names seen; `top` holds the largest by total time. */
  distinctNames: number;
  top: ActivityName[];
  records: ActivityRecords;
}

export interface CudaActivity {
  /** Waits for the stream, then records the device's kernels, memcpys and memsets. */
  start(): void;
  /** CUPTI's clock now (ns), the clock of firstStartNs and lastEndNs. */
  timestamp(): bigint;
  /** Synchronises the device and ends the recording; `topNames` names kept, largest total first, and every record. */
  stop(topNames?: number): ActivityTimeline;
}

/** Bytes per name in the buffer the library fills (longer demangled names are cut). */
const NAME_BYTES = 512;

/** The NUL-terminated strings at `stride`-byte steps of `buffer`, `count` of them. */
export function decodeNames(buffer: Buffer, stride: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => {
    const slot = buffer.subarray(i * stride, (i + 1) * stride);
    const end = slot.indexOf(0);
    return slot.subarray(0, end < 0 ? slot.length : end).toString("utf8");
  });
}

/**
 * The part of a recorded window whose records start at or after `fromNs` (CUPTI's clock), with
 * every figure recomputed from those records and the `topNames` largest names by total time: a
 * window that ran a warm-up step before the step to measure, so CUPTI's cost at the first launches
 * it records falls outside the part kept. Untimed records are not among the records, so they are
 * not counted here; droppedRecords and otherDeviceRecords stay the whole window's.
 */
export function timelineFrom(t: ActivityTimeline, fromNs: bigint, topNames: number): ActivityTimeline {
  const { startNs, endNs, nameIndex, names } = t.records;
  // The records come sorted by start (ActivityRecords), so the kept ones are too.
  const kept = Array.from(nameIndex.keys()).filter((i) => startNs[i]! >= fromNs);
  const perName = new Map<number, { count: number; totalNs: number }>();
  let kernels = 0;
  let memcpys = 0;
  let memsets = 0;
  let busyNs = 0;
  let runStart = 0n;
  let runEnd = 0n;
  for (const i of kept) {
    const name = nameIndex[i]!;
    const label = names[name] ?? "";
    if (label.startsWith("[memcpy")) memcpys++;
    else if (label === "[memset]") memsets++;
    else kernels++;
    const total = perName.get(name) ?? { count: 0, totalNs: 0 };
    total.count++;
    total.totalNs += Number(endNs[i]! - startNs[i]!);
    perName.set(name, total);
    // Sorted by start: a record past the current run's end closes it.
    if (runEnd === 0n || startNs[i]! > runEnd) {
      busyNs += Number(runEnd - runStart);
      runStart = startNs[i]!;
      runEnd = endNs[i]!;
    } else if (endNs[i]! > runEnd) {
      runEnd = endNs[i]!;
    }
  }
  busyNs += Number(runEnd - runStart);
  const firstStartNs = kept.length > 0 ? startNs[kept[0]!]! : 0n;
  // Each run starts past every earlier end, so the last run's end is the last end of all.
  const lastEndNs = runEnd;
  const top = [...perName.entries()]
    .map(([name, total]) => ({ name: names[name] ?? `[name ${name}]`, ...total }))
    .sort((a, b) => b.totalNs - a.totalNs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .slice(0, topNames);
  return {
    kernels,
    memcpys,
    memsets,
    busyNs,
    firstStartNs,
    lastEndNs,
    idleNs: Number(lastEndNs - firstStartNs) - busyNs,
    droppedRecords: t.droppedRecords,
    otherDeviceRecords: t.otherDeviceRecords,
    distinctNames: perName.size,
    top,
    records: {
      names,
      startNs: BigInt64Array.from(kept, (i) => startNs[i]!),
      endNs: BigInt64Array.from(kept, (i) => endNs[i]!),
      nameIndex: Int32Array.from(kept, (i) => nameIndex[i]!),
    },
  };
}

export function cudaActivity(lib: SplintCudaLib, ctx: CtxHandle, requireOpen: (op: string) => void): CudaActivity {
  return {
    start() {
      requireOpen("activity_start");
      check(lib, lib.activity_start(ctx), "activity_start");
    },
    timestamp() {
      const ns = new BigUint64Array(1);
      check(lib, lib.activity_timestamp(ns), "activity_timestamp");
      return ns[0]!;
    },
    stop(topNames = 10) {
      requireOpen("activity_stop");
      const summary = new BigInt64Array(ACTIVITY_FIELDS);
      const names = Buffer.alloc(topNames * NAME_BYTES);
      const counts = new BigInt64Array(topNames);
      const totals = new BigInt64Array(topNames);
      const written = new Int32Array(1);
      check(lib, lib.activity_stop(ctx, summary, ACTIVITY_FIELDS, names, NAME_BYTES, counts, totals, topNames, written), "activity_stop");
      const field = (key: keyof typeof ACTIVITY_FIELD): bigint => summary[ACTIVITY_FIELD[key]]!;
      const distinctNames = Number(field("names"));
      return {
        kernels: Number(field("kernels")),
        memcpys: Number(field("memcpys")),
        memsets: Number(field("memsets")),
        busyNs: Number(field("busyNs")),
        firstStartNs: field("firstStartNs"),
        lastEndNs: field("lastEndNs"),
        idleNs: Number(field("idleNs")),
        droppedRecords: Number(field("dropped")),
        otherDeviceRecords: Number(field("otherDevice")),
        distinctNames,
        top: decodeNames(names, NAME_BYTES, written[0]!).map((name, i) => ({ name, count: Number(counts[i]!), totalNs: Number(totals[i]!) })),
        records: readRecords(lib, ctx, Number(field("kernels") + field("memcpys") + field("memsets")), distinctNames),
      };
    },
  };
}

/**
 * What the stop just made kept: at most `capacity` records (the summary's record counts bound them,
 * the untimed ones being left out) and `distinctNames` names (the summary's count, exact).
 */
function readRecords(lib: SplintCudaLib, ctx: CtxHandle, capacity: number, distinctNames: number): ActivityRecords {
  const startNs = new BigInt64Array(capacity);
  const endNs = new BigInt64Array(capacity);
  const nameIndex = new Int32Array(capacity);
  const count = new BigInt64Array(1);
  const names = Buffer.alloc(distinctNames * NAME_BYTES);
  const namesCount = new Int32Array(1);
  check(lib, lib.activity_records(ctx, startNs, endNs, nameIndex, capacity, count, names, NAME_BYTES, distinctNames, namesCount), "activity_records");
  // Neither bound can be exceeded by the library's contract; min() keeps a broken one from reading past the arrays.
  const kept = Math.min(Number(count[0]!), capacity);
  return {
    names: decodeNames(names, NAME_BYTES, Math.min(namesCount[0]!, distinctNames)),
    startNs: startNs.subarray(0, kept),
    endNs: endNs.subarray(0, kept),
    nameIndex: nameIndex.subarray(0, kept),
  };
}
