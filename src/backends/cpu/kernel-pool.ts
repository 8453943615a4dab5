/**
 * Runs the wasm matmul kernels on several cores. All threads instantiate the same module on one
 * shared WebAssembly memory; a job (one packed B tile against all rows of A) is split by rows,
 * the main thread doing the first share and blocking (Atomics.wait) until the workers are done.
 * Every output element is computed by exactly the same instruction sequence whichever thread
 * runs it, so results do not depend on the thread count.
 *
 * Threads: SPLINT_CPU_THREADS if set (1 = no workers), else os.availableParallelism(), at most 16.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { TensorError } from "../../tensor/errors.ts";
import { type KernelKind, MAX_PAGES, instantiateKernels, moduleBytes, type WasmMemory, wasmApi } from "./wasm-matmul.ts";

const WASM_PAGE = 65536;
/** Below this many multiply-adds per job the hand-off costs more than it saves. */
const PARALLEL_MIN_WORK = 1 << 20;

// Control block (Int32Array over a SharedArrayBuffer): [done, failed, ready, then one slot per
// worker: sequence number, kernel (0 tn, 1 nn), the eight kernel arguments].
const DONE = 0;
const FAILED = 1;
const READY = 2;
const SLOTS_AT = 3;
const SLOT = 10;
/** How long the main thread waits for a worker that has not even started before giving up. */
const START_TIMEOUT_MS = 30_000;

/** The worker: waits for its slot's sequence number to change, runs the kernel, signals done. */
const WORKER_SOURCE = `
const { workerData } = require("node:worker_threads");
const { bytes, memory, control, slot } = workerData;
const ctl = new Int32Array(control);
const exports = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports;
const kernels = [exports.tn, exports.nn];
Atomics.add(ctl, ${READY}, 1);
const base = ${SLOTS_AT} + slot * ${SLOT};
let seen = 0;
for (;;) {
  Atomics.wait(ctl, base, seen);
  seen = Atomics.load(ctl, base);
  try {
    kernels[ctl[base + 1]](ctl[base + 2], ctl[base + 3], ctl[base + 4], ctl[base + 5], ctl[base + 6], ctl[base + 7], ctl[base + 8], ctl[base + 9]);
  } catch {
    Atomics.store(ctl, ${FAILED}, 1);
  }
  Atomics.add(ctl, ${DONE}, 1);
  Atomics.notify(ctl, ${DONE});
}
`;

export interface KernelPool {
  /** Float32Array over the shared memory, grown to at least `floats` elements first. */
  view(floats: number): Float32Array;
  /**
   * One kernel call (arguments as in wasm-matmul.ts), its rows split across threads when the job
   * is large enough.
   */
  run(kind: KernelKind, a: number, tile: number, out: number, rows: number, k: number, cols: number, outStride: number, aStride: number): void;
}

/** Threads the pool runs matmul kernels on (the main thread included). */
export function threadCount(): number {
  const configured = process.env["SPLINT_CPU_THREADS"];
  if (configured !== undefined && configured !== "") {
    const n = Number(configured);
    if (!Number.isInteger(n) || n < 1) {
      throw new TensorError("matmul", `SPLINT_CPU_THREADS must be a positive integer (got "${configured}")`);
    }
    return n;
  }
  return Math.min(16, availableParallelism());
}

export function createKernelPool(): KernelPool {
  const bytes = moduleBytes();
  if (!wasmApi.validate(bytes)) {
    throw new TensorError("matmul", "this JavaScript engine lacks WebAssembly SIMD", { hint: "use Node.js 20.19 or newer" });
  }
  const memory: WasmMemory = new wasmApi.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
  const kernels = instantiateKernels(bytes, memory);
  const workers = threadCount() - 1;
  const control = new SharedArrayBuffer(4 * (SLOTS_AT + SLOT * workers));
  const ctl = new Int32Array(control);
  // Started on the first large job; unref'd so that idle workers never keep the process alive.
  let started = false;
  const start = (): void => {
    for (let slot = 0; slot < workers; slot++) {
      new Worker(WORKER_SOURCE, { eval: true, workerData: { bytes, memory, control, slot } }).unref();
    }
    started = true;
  };

  return {
    view(floats) {
      const needed = floats * 4 - memory.buffer.byteLength;
      if (needed > 0) {
        const pages = Math.ceil(needed / WASM_PAGE);
        if (memory.buffer.byteLength / WASM_PAGE + pages > MAX_PAGES) {
          throw new TensorError("matmul", "operands exceed the 4 GiB kernel memory", { hint: "use smaller batches" });
        }
        memory.grow(pages);
      }
      return new Float32Array(memory.buffer);
    },

    run(kind, a, tile, out, rows, k, cols, outStride, aStride) {
      // Row blocks of the kernel: shares must be whole blocks.
      const block = kind === "tn" ? 2 : 4;
      const shares = Math.min(workers + 1, Math.floor(rows / block));
      if (shares < 2 || rows * k * cols < PARALLEL_MIN_WORK) {
        kernels[kind](a, tile, out, rows, k, cols, outStride, aStride);
        return;
      }
      if (!started) start();
      const rowsPerShare = Math.ceil(rows / shares / block) * block;
      Atomics.store(ctl, DONE, 0);
      let dispatched = 0;
      for (let share = 1; share < shares; share++) {
        const r0 = share * rowsPerShare;
        const count = Math.min(rowsPerShare, rows - r0);
        if (count <= 0) break;
        const base = SLOTS_AT + (share - 1) * SLOT;
        ctl.set([kind === "tn" ? 0 : 1, a + r0 * aStride * 4, tile, out + r0 * outStride * 4, count, k, cols, outStride, aStride], base + 1);
        Atomics.add(ctl, base, 1);
        Atomics.notify(ctl, base);
        dispatched++;
      }
      // The main thread takes share 0.
      kernels[kind](a, tile, out, Math.min(rowsPerShare, rows), k, cols, outStride, aStride);
      const waitStart = Date.now();
      for (let done = Atomics.load(ctl, DONE); done < dispatched; done = Atomics.load(ctl, DONE)) {
        Atomics.wait(ctl, DONE, done, 1000);
        if (Atomics.load(ctl, READY) < dispatched && Date.now() - waitStart > START_TIMEOUT_MS) {
          throw new TensorError("matmul", "the matmul worker threads did not start", { hint: "set SPLINT_CPU_THREADS=1 to run on one thread" });
        }
      }
      if (Atomics.load(ctl, FAILED)) throw new TensorError("matmul", "a kernel worker failed");
    },
  };
}
