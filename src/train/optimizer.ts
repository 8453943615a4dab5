import type { Backend, GradClip, Moments8bit, Quantized8 } from "../tensor/backend.ts";
import { BLOCK_8BIT, packCodes, packedCodeWords, quantizeBlockwise, SIGNED_MAP, UNSIGNED_MAP, unpackCodes } from "../tensor/blockwise8.ts";
import type { Tensor } from "../tensor/tensor.ts";

export { BLOCK_8BIT, dequantizeBlockwise, dynamicMap, type Quantized, quantizeBlockwise } from "../tensor/blockwise8.ts";

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
  /**
   * One update with learning rate lr from gradients aligned with params (not modified), clipped
   * first when clip is given (torch's clip_grad_norm_ coefficient from the device Σg²). Queues
   * device work only: no host sync.
   */
  step(grads: readonly Tensor[], lr: number, clip?: GradClip): void;
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

  step(grads: readonly Tensor[], lr: number, clip?: GradClip): void {
    this.steps++;
    this.backend.adamwMany(this.params.map((p) => p.value), grads, this.m, this.v, { ...hyper(this.settings, lr), step: this.steps }, clip);
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

/** Smaller tensors keep fp32 states (bitsandbytes' min_8bit_size). */
export const MIN_8BIT_SIZE = 4096;

/**
 * AdamW with block-wise 8-bit moments (bitsandbytes' AdamW8bit, the tutorial's optim="adamw_8bit"):
 * the first moment on the signed dynamic map, the second on the unsigned one, 256 values per absmax
 * block (tensor/blockwise8.ts); tensors under MIN_8BIT_SIZE elements keep fp32 moments. The codes
 * and absmaxes live on the parameters' backend, and one adamw8bitMany call per step dequantises,
 * runs the fp32 AdamW step and quantises again, as bitsandbytes' kernel does in one pass (the small
 * tensors: one adamwMany). They are the state, so a resumed run still continues bit for bit; they
 * travel to the host only in exportState / importState.
 */
export class AdamW8bit implements Optimizer {
  /** Indices into params of the 8-bit tensors and of the fp32 ones. */
  private readonly eight: number[] = [];
  private readonly full: number[] = [];
  /** By parameter index: 8-bit moments, or null for an fp32 tensor. */
  private readonly quantized: (Moments8bit | null)[];
  /** By parameter index: fp32 moments, or null for an 8-bit tensor. */
  private readonly m: (Tensor | null)[];
  private readonly v: (Tensor | null)[];
  private steps = 0;

  constructor(
    private readonly backend: Backend,
    readonly params: readonly Parameter[],
    private readonly settings: AdamWSettings,
  ) {
    this.quantized = params.map((p, i) => {
      const n = p.value.size;
      if (n < MIN_8BIT_SIZE) {
        this.full.push(i);
        return null;
      }
      this.eight.push(i);
      // Zero moments: absmax 0 and every code that of 0 (not byte 0 in the signed map).
      const zeros = new Float32Array(n);
      return { m: this.uploadQuantized(quantizeBlockwise(zeros, SIGNED_MAP), n), v: this.uploadQuantized(quantizeBlockwise(zeros, UNSIGNED_MAP), n) };
    });
    this.m = params.map((p, i) => (this.quantized[i] ? null : backend.zeros(p.value.shape, "f32")));
    this.v = params.map((p, i) => (this.quantized[i] ? null : backend.zeros(p.value.shape, "f32")));
  }

  get stepCount(): number {
    return this.steps;
  }

  step(grads: readonly Tensor[], lr: number, clip?: GradClip): void {
    this.steps++;
    const hp = { ...hyper(this.settings, lr), step: this.steps };
    const pick = <T>(list: readonly T[], at: readonly number[]): T[] => at.map((i) => list[i]!);
    const values = this.params.map((p) => p.value);
    if (this.eight.length > 0) {
      this.backend.adamw8bitMany(pick(values, this.eight), pick(grads, this.eight), pick(this.quantized, this.eight) as Moments8bit[], hp, clip);
    }
    if (this.full.length > 0) {
      this.backend.adamwMany(pick(values, this.full), pick(grads, this.full), pick(this.m, this.full) as Tensor[], pick(this.v, this.full) as Tensor[], hp, clip);
    }
  }

  /** exp_avg / exp_avg_sq as f32 for small tensors, else their codes (U8) and block absmaxes (F32). */
  exportState(): { step: number; tensors: StateTensor[] } {
    const tensors = this.params.flatMap((p, i): StateTensor[] => {
      const q = this.quantized[i];
      if (!q) {
        return [
          { name: `${p.name}.exp_avg`, dtype: "F32", shape: p.value.shape, data: Float32Array.from(this.backend.read(this.m[i]!) as Float32Array) },
          { name: `${p.name}.exp_avg_sq`, dtype: "F32", shape: p.value.shape, data: Float32Array.from(this.backend.read(this.v[i]!) as Float32Array) },
        ];
      }
      return ([["exp_avg", q.m], ["exp_avg_sq", q.v]] as const).flatMap(([suffix, t]): StateTensor[] => [
        { name: `${p.name}.${suffix}.codes`, dtype: "U8", shape: p.value.shape, data: unpackCodes(this.backend.readRaw(t.codes) as Int32Array, p.value.size) },
        { name: `${p.name}.${suffix}.absmax`, dtype: "F32", shape: t.absmax.shape, data: Float32Array.from(this.backend.read(t.absmax) as Float32Array) },
      ]);
    });
    return { step: this.steps, tensors };
  }

  importState(step: number, read: (name: string) => Float32Array | Uint8Array): void {
    this.steps = step;
    this.params.forEach((p, i) => {
      const n = p.value.size;
      const q = this.quantized[i];
      if (!q) {
        const m = this.backend.upload(floatState(read, `${p.name}.exp_avg`, n), p.value.shape, "f32");
        const v = this.backend.upload(floatState(read, `${p.name}.exp_avg_sq`, n), p.value.shape, "f32");
        this.m[i]!.free();
        this.v[i]!.free();
        this.m[i] = m;
        this.v[i] = v;
        return;
      }
      const load = (suffix: string, target: Quantized8): void => {
        const codes = read(`${p.name}.${suffix}.codes`);
        if (!(codes instanceof Uint8Array) || codes.length !== n) throw new Error(`optimizer state "${p.name}.${suffix}.codes" is not ${n} U8 codes`);
        const absmax = floatState(read, `${p.name}.${suffix}.absmax`, Math.ceil(n / BLOCK_8BIT));
        const fresh = this.uploadQuantized({ codes, absmax }, n);
        target.codes.free();
        target.absmax.free();
        target.codes = fresh.codes;
        target.absmax = fresh.absmax;
      };
      load("exp_avg", q.m);
      load("exp_avg_sq", q.v);
    });
  }

  free(): void {
    for (const q of this.quantized) for (const t of q ? [q.m.codes, q.m.absmax, q.v.codes, q.v.absmax] : []) t.free();
    for (const t of [...this.m, ...this.v]) t?.free();
  }

  private uploadQuantized(q: { codes: Uint8Array; absmax: Float32Array }, n: number): Quantized8 {
    return {
      codes: this.backend.upload(packCodes(q.codes), [packedCodeWords(n)], "i32"),
      absmax: this.backend.upload(q.absmax, [q.absmax.length], "f32"),
    };
  }
}
