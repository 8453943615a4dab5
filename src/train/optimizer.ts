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

/**
 * torch.optim.AdamW over a fixed list of f32 parameters, with its moment buffers (fp32) on the
 * parameters' backend. The step count and moments are the whole state: exportState/importState
 * let a resumed run continue bit for bit.
 */
export class AdamW {
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

  /** One update with learning rate lr from gradients aligned with params. */
  step(grads: readonly Tensor[], lr: number): void {
    this.steps++;
    this.params.forEach((p, i) => {
      this.backend.adamw(p.value, grads[i]!, this.m[i]!, this.v[i]!, {
        lr,
        beta1: this.settings.beta1,
        beta2: this.settings.beta2,
        eps: this.settings.eps,
        weightDecay: this.settings.weightDecay,
        step: this.steps,
      });
    });
  }

  /** Moments by parameter name (exp_avg / exp_avg_sq, as torch calls them) and the step count. */
  exportState(): { step: number; tensors: { name: string; value: Tensor }[] } {
    const tensors = this.params.flatMap((p, i) => [
      { name: `${p.name}.exp_avg`, value: this.m[i]! },
      { name: `${p.name}.exp_avg_sq`, value: this.v[i]! },
    ]);
    return { step: this.steps, tensors };
  }

  importState(step: number, read: (name: string) => Float32Array): void {
    this.steps = step;
    this.params.forEach((p, i) => {
      for (const [suffix, target] of [["exp_avg", this.m[i]!], ["exp_avg_sq", this.v[i]!]] as const) {
        const fresh = this.backend.upload(read(`${p.name}.${suffix}`), p.value.shape, "f32");
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
