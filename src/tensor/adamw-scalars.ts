import type { AdamwHyper } from "./backend.ts";
import { TensorError } from "./errors.ts";

/**
 * The f32 scalars of one AdamW step, computed on the host in f64 like Python floats and rounded to
 * f32 as ATen does when it applies a Python scalar to an f32 tensor. Both backends take them from
 * here, so the CPU reference and the CUDA kernels step with the same numbers.
 */
export interface AdamwScalars {
  decay: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  negStepSize: number;
  biasCorrection2Sqrt: number;
  eps: number;
}

export function adamwScalars(op: string, hp: AdamwHyper): AdamwScalars {
  if (!(hp.step >= 1)) throw new TensorError(op, `step must be ≥ 1 (got ${hp.step})`);
  const f = Math.fround;
  return {
    decay: f(1 - hp.lr * hp.weightDecay),
    oneMinusBeta1: f(1 - hp.beta1),
    beta2: f(hp.beta2),
    oneMinusBeta2: f(1 - hp.beta2),
    negStepSize: f(-hp.lr / (1 - hp.beta1 ** hp.step)),
    biasCorrection2Sqrt: f(Math.sqrt(1 - hp.beta2 ** hp.step)),
    eps: f(hp.eps),
  };
}
