/**
 * AdamW as torch.optim.AdamW's single-tensor path (amsgrad off, maximize off) computes it on f32
 * tensors, each operation rounded to f32 in torch's order of evaluation:
 *   p ← p·(1 − lr·wd)                               param.mul_
 *   m ← m + (1 − β1)·(g − m)                        exp_avg.lerp_ (weight < 0.5 branch)
 *   v ← v·β2 + ((1 − β2)·g)·g                       exp_avg_sq.mul_(β2).addcmul_
 *   denom ← sqrt(v) / sqrt(1 − β2^t) + eps
 *   p ← p + ((−lr / (1 − β1^t))·m) / denom          param.addcdiv_
 * Host-side scalars (lr·wd, the bias corrections) are computed in f64 like Python floats, then
 * rounded to f32 as ATen does when it applies a Python scalar to an f32 tensor.
 */
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { f32Of } from "./storage.ts";

export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 for the first step. */
  step: number;
}

export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamwHyper): void {
  const p = f32Of(param, "adamw");
  const g = f32Of(grad, "adamw");
  const mv = f32Of(m, "adamw");
  const vv = f32Of(v, "adamw");
  if (g.length !== p.length || mv.length !== p.length || vv.length !== p.length) {
    throw new TensorError("adamw", "param, grad, m and v must have the same size", { shapes: [param.shape, grad.shape, m.shape, v.shape] });
  }
  if (!(hp.step >= 1)) throw new TensorError("adamw", `step must be ≥ 1 (got ${hp.step})`);
  const f = Math.fround;
  const decay = f(1 - hp.lr * hp.weightDecay);
  const oneMinusBeta1 = f(1 - hp.beta1);
  const beta2 = f(hp.beta2);
  const oneMinusBeta2 = f(1 - hp.beta2);
  const negStepSize = f(-hp.lr / (1 - hp.beta1 ** hp.step));
  const biasCorrection2Sqrt = f(Math.sqrt(1 - hp.beta2 ** hp.step));
  const eps = f(hp.eps);
  for (let i = 0; i < p.length; i++) {
    const gi = g[i]!;
    const pi = f(p[i]! * decay);
    const mi = f(mv[i]! + f(oneMinusBeta1 * f(gi - mv[i]!)));
    const vi = f(f(vv[i]! * beta2) + f(f(oneMinusBeta2 * gi) * gi));
    const denom = f(f(f(Math.sqrt(vi)) / biasCorrection2Sqrt) + eps);
    mv[i] = mi;
    vv[i] = vi;
    p[i] = f(pi + f(f(negStepSize * mi) / denom));
  }
}
