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
}

export interface CudaActivity {
  /** Waits for the stream, then records the device's kernels, memcpys and memsets. */
  start(): void;
  /** CUPTI's clock now (ns), the clock of firstStartNs and lastEndNs. */
  timestamp(): bigint;
  /** Synchronises the device and ends the recording; `topNames` names kept, largest total first. */
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
        distinctNames: Number(field("names")),
        top: decodeNames(names, NAME_BYTES, written[0]!).map((name, i) => ({ name, count: Number(counts[i]!), totalNs: Number(totals[i]!) })),
      };
    },
  };
}
