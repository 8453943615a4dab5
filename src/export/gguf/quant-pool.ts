/**
 * Quantisation on several cores. Blocks are independent, so a tensor's values are cut at block
 * boundaries into one part per worker and the encoded parts concatenated: the bytes are exactly
 * those of encodeAs on one thread, whatever the thread count. k-quants need this (ggml's Q4_K
 * scale search costs ~700 rounding steps per 32 values); plain float conversions stay inline.
 *
 * Workers run quant.ts through tsx's loader, registered in each worker (bin/splint.js registers it
 * only on the main thread). Threads: SPLINT_CPU_THREADS if set, else the available cores, ≤ 16.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { SplintError } from "../../util/errors.ts";
import { GGML_BLOCK } from "./format.ts";
import { encodeAs, type EncodableType } from "./quant.ts";

/** Below this many values a tensor is encoded inline: the hand-off would cost more. */
const PARALLEL_MIN_VALUES = 1 << 18;

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  const { register } = await import(workerData.tsx);
  register();
  const q = await import(workerData.quant);
  parentPort.on("message", (m) => {
    try {
      const out = q.encodeAs(m.type, new Float32Array(m.buf));
      const own = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : out.slice();
      parentPort.postMessage({ id: m.id, out: own }, [own.buffer]);
    } catch (e) {
      parentPort.postMessage({ id: m.id, error: String((e && e.stack) || e) });
    }
  });
  parentPort.postMessage({ ready: true });
})().catch((e) => parentPort.postMessage({ fatal: String((e && e.stack) || e) }));
`;

export interface QuantPool {
  readonly threads: number;
  encode(type: EncodableType, values: Float32Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

export function quantThreads(): number {
  const configured = process.env["SPLINT_CPU_THREADS"];
  if (configured !== undefined && configured !== "") {
    const n = Number(configured);
    if (!Number.isInteger(n) || n < 1) throw new SplintError(`SPLINT_CPU_THREADS must be a positive integer (got "${configured}")`);
    return n;
  }
  return Math.min(16, availableParallelism());
}

interface Pending {
  resolve: (b: Uint8Array) => void;
  reject: (e: Error) => void;
}

export function createQuantPool(threads = quantThreads()): QuantPool {
  const workers: Worker[] = [];
  const ready: Promise<void>[] = [];
  const pending = new Map<number, Pending>();
  let nextId = 0;
  const start = (): void => {
    const workerData = { tsx: import.meta.resolve("tsx/esm/api"), quant: new URL("./quant.ts", import.meta.url).href };
    for (let i = 0; i < threads; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData });
      w.unref();
      ready.push(
        new Promise((resolve, reject) => {
          w.once("error", reject);
          w.on("message", (m: { ready?: true; fatal?: string; id?: number; out?: Uint8Array; error?: string }) => {
            if (m.ready) return resolve();
            if (m.fatal) return reject(new SplintError(`quantisation worker failed to start: ${m.fatal}`));
            const p = pending.get(m.id!);
            if (!p) return;
            pending.delete(m.id!);
            if (m.error) p.reject(new SplintError(`quantisation worker: ${m.error}`));
            else p.resolve(m.out!);
          });
        }),
      );
      workers.push(w);
    }
  };
  const send = (w: Worker, type: EncodableType, part: Float32Array): Promise<Uint8Array> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      const buf = part.slice().buffer; // a copy the worker owns
      w.postMessage({ id, type, buf }, [buf]);
    });

  return {
    threads,
    async encode(type, values) {
      const block = GGML_BLOCK[type].elements;
      if (threads < 2 || block === 1 || values.length < PARALLEL_MIN_VALUES) return encodeAs(type, values);
      if (workers.length === 0) start();
      await Promise.all(ready);
      const blocks = values.length / block;
      const per = Math.ceil(blocks / workers.length);
      const parts: Promise<Uint8Array>[] = [];
      for (let i = 0; i < workers.length && i * per < blocks; i++) {
        parts.push(send(workers[i]!, type, values.subarray(i * per * block, Math.min(blocks, (i + 1) * per) * block)));
      }
      const done = await Promise.all(parts);
      return done.length === 1 ? done[0]! : new Uint8Array(Buffer.concat(done));
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
      workers.length = 0;
    },
  };
}
