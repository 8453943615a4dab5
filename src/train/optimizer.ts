import type { Backend } from "../tensor/backend.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** A trainable tensor (an f32 LoRA master weight) under its PEFT name. */
export interface Parameter {
  readonly name: string;
  readonly value: Tensor;
}

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** A named host-side array of optimizer state, as a checkpoint stores it. */
export interface StateTensor {
  name: string;
  dtype: "F32" | "U8";
  shape: readonly number[];
  data: Float32Array | Uint8Array;
}

/** What the Trainer needs from an optimizer: updates, and a state it can save and restore exactly. */
export interface Optimizer {
  readonly stepCount: number;
  /** One update with learning rate lr from gradients aligned with params. */
  step(grads: readonly Tensor[], lr: number): void;
  exportState(): { step: number; tensors: StateTensor[] };
  /** Restores a state exportState gave; `read` returns the array saved under a name. */
  importState(step: number, read: (name: string) => Float32Array | Uint8Array): void;
  free(): void;
}

/**
 * torch.optim.AdamW over a fixed list of f32 parameters, with its moment buffers (fp32) on the
 * parameters' backend. The step count and moments are the whole state: exportState/importState
 * let a resumed run continue bit for bit.
 */
export class AdamW implements Optimizer {
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  private steps = 0;

  constructor(
    private readonly backend: Backend,
    readonly params: readonly Parameter[],
    private readonly settings: AdamWSettings,
  ) {
    this.m = params.map((p) => backend.zeros(p.value.shape, "f32"));
    this.v = params.map((p) => backend.zeros(p.value.shape, "f32"));
  }

  get stepCount(): number {
    return this.steps;
  }

  step(grads: readonly Tensor[], lr: number): void {
    this.steps++;
    this.params.forEach((p, i) => {
      this.backend.adamw(p.value, grads[i]!, this.m[i]!, this.v[i]!, { ...hyper(this.settings, lr), step: this.steps });
    });
  }

  /** Moments by parameter name (exp_avg / exp_avg_sq, as torch calls them) and the step count. */
  exportState(): { step: number; tensors: StateTensor[] } {
    const tensors = this.params.flatMap((p, i) =>
      ([["exp_avg", this.m[i]!], ["exp_avg_sq", this.v[i]!]] as const).map(([suffix, t]) => ({
        name: `${p.name}.${suffix}`,
        dtype: "F32" as const,
        shape: t.shape,
        data: Float32Array.from(this.backend.read(t) as Float32Array),
      })),
    );
    return { step: this.steps, tensors };
  }

  importState(step: number, read: (name: string) => Float32Array | Uint8Array): void {
    this.steps = step;
    this.params.forEach((p, i) => {
      for (const [suffix, target] of [["exp_avg", this.m[i]!], ["exp_avg_sq", this.v[i]!]] as const) {
        const fresh = this.backend.upload(floatState(read, `${p.name}.${suffix}`, target.size), p.value.shape, "f32");
        this.backend.scaleInPlace(target, 0);
        this.backend.addInPlace(target, fresh);
        fresh.free();
      }
    });
  }

  free(): void {
    for (const t of [...this.m, ...this.v]) t.free();
  }
}

function hyper(settings: AdamWSettings, lr: number) {
  return { lr, beta1: settings.beta1, beta2: settings.beta2, eps: settings.eps, weightDecay: settings.weightDecay };
}

function floatState(read: (name: string) => Float32Array | Uint8Array, name: string, size: number): Float32Array {
  const data = read(name);
  if (!(data instanceof Float32Array) || data.length !== size) throw new Error(`optimizer state "${name}" is not ${size} f32 values`);
  return data;
}

/**
 * bitsandbytes' dynamic (tree) quantisation map, `create_dynamic_map(signed, 7, 8)` (up to f32
 * rounding of the midpoints): 256 sorted
 * codes in [-1, 1] (signed) or [0, 1] whose spacing follows powers of ten, so values many orders of
 * magnitude below the block maximum keep a few significant digits.
 */
export function dynamicMap(signed: boolean): Float32Array {
  const data: number[] = [];
  const maxExponentBits = 7;
  const nonSignBits = 7;
  for (let i = 0; i < maxExponentBits; i++) {
    const fractionItems = signed ? 2 ** (i + nonSignBits - maxExponentBits) + 1 : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    const magnitude = 10 ** (-(maxExponentBits - 1) + i);
    for (let k = 0; k + 1 < fractionItems; k++) {
      // linspace(0.1, 1, fractionItems) midpoints, in f32 as torch computes them
      const step = Math.fround(0.9 / (fractionItems - 1));
      const lo = Math.fround(0.1 + step * k);
      const hi = Math.fround(0.1 + step * (k + 1));
      const mean = Math.fround(Math.fround(lo + hi) / 2);
      data.push(magnitude * mean);
      if (signed) data.push(-magnitude * mean);
    }
  }
  data.push(0, 1);
  return Float32Array.from(data.sort((a, b) => a - b));
}

const SIGNED_MAP = dynamicMap(true);
const UNSIGNED_MAP = dynamicMap(false);

/** Elements per absmax block of the 8-bit states (bitsandbytes' blockwise optimizers use 256). */
export const BLOCK_8BIT = 256;
/** Smaller tensors keep fp32 states (bitsandbytes' min_8bit_size). */
export const MIN_8BIT_SIZE = 4096;

/** Block-wise 8-bit codes: each block scaled by its absmax, each value the nearest code of `map`. */
export interface Quantized {
  codes: Uint8Array;
  absmax: Float32Array;
}

export function quantizeBlockwise(values: Float32Array, map: Float32Array): Quantized {
  const blocks = Math.ceil(values.length / BLOCK_8BIT);
  const codes = new Uint8Array(values.length);
  const absmax = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(values.length, (b + 1) * BLOCK_8BIT);
    let max = 0;
    for (let i = b * BLOCK_8BIT; i < end; i++) max = Math.max(max, Math.abs(values[i]!));
    absmax[b] = max;
    for (let i = b * BLOCK_8BIT; i < end; i++) codes[i] = nearestCode(map, max > 0 ? values[i]! / max : 0);
  }
  return { codes, absmax };
}

export function dequantizeBlockwise(q: Quantized, map: Float32Array): Float32Array {
  const out = new Float32Array(q.codes.length);
  for (let i = 0; i < out.length; i++) out[i] = map[q.codes[i]!]! * q.absmax[Math.floor(i / BLOCK_8BIT)]!;
  return out;
}

/** Index of the code closest to x (binary search over the sorted map). */
function nearestCode(map: Float32Array, x: number): number {
  let lo = 0;
  let hi = map.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (map[mid]! <= x) lo = mid;
    else hi = mid;
  }
  return x - map[lo]! <= map[hi]! - x ? lo : hi;
}

/**
 * AdamW with block-wise 8-bit moments (bitsandbytes' AdamW8bit, the tutorial's optim="adamw_8bit"):
 * the first moment on the signed dynamic map, the second on the unsigned one, 256 values per absmax
 * block; tensors under MIN_8BIT_SIZE elements keep fp32 moments. Each update dequantises, runs the
 * fp32 AdamW step and quantises again, as bitsandbytes' kernel does in one pass. The codes and
 * absmaxes are the state, so a resumed run still continues bit for bit.
 */
export class AdamW8bit implements Optimizer {
  private readonly states: ({ kind: "8bit"; m: Quantized; v: Quantized } | { kind: "f32"; m: Float32Array; v: Float32Array })[];
  private steps = 0;

  constructor(
    private readonly backend: Backend,
    readonly params: readonly Parameter[],
    private readonly settings: AdamWSettings,
  ) {
    this.states = params.map((p) => {
      const n = p.value.size;
      return n >= MIN_8BIT_SIZE
        ? { kind: "8bit", m: quantizeBlockwise(new Float32Array(n), SIGNED_MAP), v: quantizeBlockwise(new Float32Array(n), UNSIGNED_MAP) }
        : { kind: "f32", m: new Float32Array(n), v: new Float32Array(n) };
    });
  }

  get stepCount(): number {
    return this.steps;
  }

  step(grads: readonly Tensor[], lr: number): void {
    this.steps++;
    this.params.forEach((p, i) => {
      const state = this.states[i]!;
      const shape = p.value.shape;
      const m = this.backend.upload(state.kind === "8bit" ? dequantizeBlockwise(state.m, SIGNED_MAP) : state.m, shape, "f32");
      const v = this.backend.upload(state.kind === "8bit" ? dequantizeBlockwise(state.v, UNSIGNED_MAP) : state.v, shape, "f32");
      try {
        this.backend.adamw(p.value, grads[i]!, m, v, { ...hyper(this.settings, lr), step: this.steps });
        const mHost = Float32Array.from(this.backend.read(m) as Float32Array);
        const vHost = Float32Array.from(this.backend.read(v) as Float32Array);
        this.states[i] =
          state.kind === "8bit" ? { kind: "8bit", m: quantizeBlockwise(mHost, SIGNED_MAP), v: quantizeBlockwise(vHost, UNSIGNED_MAP) } : { kind: "f32", m: mHost, v: vHost };
      } finally {
        m.free();
        v.free();
      }
    });
  }

  /** exp_avg / exp_avg_sq as f32 for small tensors, else their codes (U8) and block absmaxes (F32). */
  exportState(): { step: number; tensors: StateTensor[] } {
    const tensors = this.params.flatMap((p, i): StateTensor[] => {
      const s = this.states[i]!;
      if (s.kind === "f32") {
        return [
          { name: `${p.name}.exp_avg`, dtype: "F32", shape: p.value.shape, data: s.m },
          { name: `${p.name}.exp_avg_sq`, dtype: "F32", shape: p.value.shape, data: s.v },
        ];
      }
      return ([["exp_avg", s.m], ["exp_avg_sq", s.v]] as const).flatMap(([suffix, q]): StateTensor[] => [
        { name: `${p.name}.${suffix}.codes`, dtype: "U8", shape: p.value.shape, data: q.codes },
        { name: `${p.name}.${suffix}.absmax`, dtype: "F32", shape: [q.absmax.length], data: q.absmax },
      ]);
    });
    return { step: this.steps, tensors };
  }

  importState(step: number, read: (name: string) => Float32Array | Uint8Array): void {
    this.steps = step;
    this.params.forEach((p, i) => {
      const n = p.value.size;
      if (this.states[i]!.kind === "f32") {
        this.states[i] = { kind: "f32", m: floatState(read, `${p.name}.exp_avg`, n), v: floatState(read, `${p.name}.exp_avg_sq`, n) };
        return;
      }
      const quantized = (suffix: string): Quantized => {
        const codes = read(`${p.name}.${suffix}.codes`);
        if (!(codes instanceof Uint8Array) || codes.length !== n) throw new Error(`optimizer state "${p.name}.${suffix}.codes" is not ${n} U8 codes`);
        return { codes, absmax: floatState(read, `${p.name}.${suffix}.absmax`, Math.ceil(n / BLOCK_8BIT)) };
      };
      this.states[i] = { kind: "8bit", m: quantized("exp_avg"), v: quantized("exp_avg_sq") };
    });
  }

  free(): void {
    this.states.length = 0;
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: scales all gradients in place so their joint L2 norm is at most
 * maxNorm (coefficient maxNorm / (norm + 1e-6), applied only when below 1). Returns the norm
 * before clipping, which is what the Trainer logs. One host read per optimizer step.
 */
export function clipGradNorm(backend: Backend, grads: readonly Tensor[], maxNorm: number): number {
  const total = backend.zeros([1], "f32");
  for (const g of grads) {
    const sq = backend.sumSquares(g);
    backend.addInPlace(total, sq);
    sq.free();
  }
  const norm = Math.sqrt(backend.read(total)[0]!);
  total.free();
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of grads) backend.scaleInPlace(g, coef);
  return norm;
}
