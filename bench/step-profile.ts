/**
 * Where a training step's milliseconds go on the CUDA backend, from CUDA events (issue 11/12).
 *
 * The wrapper records a timing event on the stream before and after every Backend call, without
 * any host wait, and reads the intervals back once at the end. Even intervals are the GPU time of
 * one call (its kernels, cuBLASLt products and copies, in stream order); odd intervals are the gaps
 * between calls, i.e. GPU idle while the host was still preparing the next call. Each call is put
 * in an op class (attention by mask kind, matmul by shape: a side ≤ 64 is a LoRA product), and the
 * native counters say how many kernels were launched and how often the host waited on the stream.
 */
import type { CudaBackend } from "../src/backends/cuda/index.ts";
import type { AttentionMask } from "../src/tensor/backend.ts";
import type { Tensor } from "../src/tensor/tensor.ts";

export interface OpClassTime {
  opClass: string;
  calls: number;
  /** GPU time inside the calls of this class. */
  gpuMs: number;
  /** Host time spent in the calls (argument checks, FFI, launches). */
  hostMs: number;
}

export interface StepProfile {
  /** Host wall time of the profiled step (events add a little to it). */
  wallMs: number;
  /** From the first to the last event: GPU busy plus idle. */
  spanMs: number;
  gpuBusyMs: number;
  gpuIdleMs: number;
  backendCalls: number;
  launches: number;
  syncs: number;
  uploads: number;
  /** launches / layers (vision + decoder), forward, recomputation and backward together. */
  launchesPerLayer: number;
  classes: OpClassTime[];
}

/** Calls with no GPU work, or that the profile itself uses: not timed. */
const UNTIMED = new Set<PropertyKey>(["release", "memory", "synchronize", "allocatorStats", "dispose", "profile"]);

function attentionClass(mask: AttentionMask): string {
  return mask.kind === "segments" ? "vision" : "decoder";
}

function opClass(name: string, args: readonly unknown[]): string {
  switch (name) {
    case "matmul": {
      const [a, b] = args as [Tensor, Tensor];
      const opts = (args[2] ?? {}) as { transA?: boolean; transB?: boolean };
      const m = opts.transA ? a.shape.at(-1)! : a.size / a.shape.at(-1)!;
      const k = opts.transA ? a.size / a.shape.at(-1)! : a.shape.at(-1)!;
      const n = opts.transB ? b.shape[0]! : b.shape.at(-1)!;
      // A side ≤ 64 is a LoRA product: the rank is the inner size of the up product (u·Bᵀ, the
      // base product then added onto it), the output width of du = dy·B and of dB = dyᵀ·u.
      if (k <= 64) return "LoRA up (u·Bᵀ)";
      if (n <= 64) return opts.transA ? "LoRA dB (dyᵀ·u)" : "LoRA du (dy·B)";
      return m <= 64 ? "matmul LoRA (other skinny)" : "matmul base";
    }
    case "loraDown":
      return "LoRA down (dropout(x)·Aᵀ, fused)";
    case "loraGradA":
      return "LoRA dA (duᵀ·dropout(x), fused)";
    case "loraDx":
    case "loraDxAccumulate":
      return "LoRA dx (dx (+)= dropout'(du·A), fused)";
    // The bf16 tier's products with B as rank-r ops (Graph.loraLinear with loraUpOps), beside the
    // matmul classes above that the same products land in without them.
    case "loraUp":
      return "LoRA up (u·Bᵀ, rank-r kernel)";
    case "loraUpBackward":
      return "LoRA du+dB (dy·B, dyᵀ·u, fused)";
    case "attention":
      return `attention ${attentionClass(args[3] as AttentionMask)} forward`;
    case "attentionBackward":
      return `attention ${attentionClass(args[6] as AttentionMask)} backward`;
    case "cast":
      return "cast";
    case "copy":
    case "sliceRows":
    case "concatRows":
    case "gatherRows":
    case "scatterRowsInPlace":
    case "scatterAddRowsInPlace":
    case "gatherElements":
    case "scatterElements":
    case "patchify":
      return "layout (copy, slice, gather, scatter)";
    case "add":
    case "addInPlace":
    case "mul":
    case "scale":
    case "scaleInPlace":
      return "add / mul / scale";
    case "swiglu":
    case "gelu":
      return "activation forward (SwiGLU, GELU)";
    case "swigluBackward":
    case "geluBackward":
      return "activation backward (SwiGLU, GELU)";
    case "dropout":
    case "dropoutBackward":
      return "dropout";
    case "rmsNorm":
      return "RMSNorm forward";
    case "rmsNormBackward":
      return "RMSNorm backward";
    case "rope":
      return "RoPE";
    case "crossEntropy":
      return "cross-entropy";
    case "sumSquares":
    case "adamw":
      return "optimizer (Σx², AdamW)";
    case "upload":
      return "upload";
    case "read":
    case "readRaw":
      return "read back (host waits)";
    case "empty":
    case "zeros":
      return "alloc / zeros";
    default:
      return name;
  }
}

/**
 * Times every Backend call made on `inner` between start() and finish(). The timed wrappers are
 * installed on the backend object itself for that window only and the original methods put back
 * after, so whoever holds the backend (model, graph, optimizer) is profiled alike, and the steps
 * measured outside the window pay nothing: a Proxy forwarding every call costs the host a trap
 * per method access, which the trainer does not pay. Only one profiled step at a time.
 */
export function profileBackend(inner: CudaBackend, layers: number): { start(): void; finish(): StepProfile } {
  const labels: string[] = [];
  const hostMs: number[] = [];
  const target = inner as unknown as Record<string, unknown>;
  const originals = new Map<string, (...args: unknown[]) => unknown>();
  let depth = 0;
  let wallStart = 0;
  let countersAtStart = inner.profile.counters();
  const install = (): void => {
    for (const [name, value] of Object.entries(target)) {
      if (typeof value !== "function" || UNTIMED.has(name)) continue;
      const fn = value as (...args: unknown[]) => unknown;
      originals.set(name, fn);
      target[name] = (...args: unknown[]): unknown => {
        // A backend method calling another one is timed once, as the outer call.
        if (depth > 0) return fn.apply(inner, args);
        depth++;
        const t0 = performance.now();
        inner.profile.mark();
        try {
          return fn.apply(inner, args);
        } finally {
          inner.profile.mark();
          hostMs.push(performance.now() - t0);
          labels.push(opClass(name, args));
          depth--;
        }
      };
    }
  };
  const restore = (): void => {
    for (const [name, fn] of originals) target[name] = fn;
    originals.clear();
  };
  return {
    start() {
      if (originals.size > 0) throw new Error("profileBackend: a profiled step is already running");
      inner.profile.read(); // drop events recorded before the step
      labels.length = 0;
      hostMs.length = 0;
      countersAtStart = inner.profile.counters();
      install();
      wallStart = performance.now();
    },
    finish() {
      restore();
      const intervals = inner.profile.read();
      const wallMs = performance.now() - wallStart;
      const counters = inner.profile.counters();
      const byClass = new Map<string, OpClassTime>();
      let busy = 0;
      let idle = 0;
      for (let i = 0; i < labels.length; i++) {
        const gpu = intervals[2 * i] ?? 0;
        busy += gpu;
        if (2 * i + 1 < intervals.length) idle += intervals[2 * i + 1]!;
        const entry = byClass.get(labels[i]!) ?? { opClass: labels[i]!, calls: 0, gpuMs: 0, hostMs: 0 };
        entry.calls++;
        entry.gpuMs += gpu;
        entry.hostMs += hostMs[i]!;
        byClass.set(labels[i]!, entry);
      }
      const launches = counters.launches - countersAtStart.launches;
      return {
        wallMs,
        spanMs: busy + idle,
        gpuBusyMs: busy,
        gpuIdleMs: idle,
        backendCalls: labels.length,
        launches,
        syncs: counters.syncs - countersAtStart.syncs,
        uploads: counters.uploads - countersAtStart.uploads,
        launchesPerLayer: launches / layers,
        classes: [...byClass.values()].sort((a, b) => b.gpuMs - a.gpuMs),
      };
    },
  };
}

/** The profile as a Markdown table. */
export function profileMarkdown(p: StepProfile): string {
  const rows = p.classes.map((c) => `| ${c.opClass} | ${c.calls} | ${c.gpuMs.toFixed(1)} | ${((100 * c.gpuMs) / p.spanMs).toFixed(1)}% | ${c.hostMs.toFixed(1)} |`);
  return [
    `GPU span ${p.spanMs.toFixed(1)} ms (busy ${p.gpuBusyMs.toFixed(1)}, idle ${p.gpuIdleMs.toFixed(1)} = ${((100 * p.gpuIdleMs) / p.spanMs).toFixed(1)}%), host wall ${p.wallMs.toFixed(1)} ms; ${p.backendCalls} backend calls, ${p.launches} launches (${p.launchesPerLayer.toFixed(0)} per layer), ${p.syncs} host syncs, ${p.uploads} uploads.`,
    "",
    "| op class | calls | GPU ms | share of span | host ms |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...rows,
  ].join("\n");
}
