// The AdamW element update shared by the single-tensor kernel (loss_optim.cu) and the
// multi-tensor ones (optim.cu), so every path runs the same f32 operations.
#pragma once

// torch.optim.AdamW's single-tensor path on f32, each operation rounded to f32 in torch's order of
// evaluation (the CPU backend's optim.ts):
//   p ← p·decay                                     param.mul_
//   m ← m + (1−β1)·(g − m)                          exp_avg.lerp_
//   v ← v·β2 + ((1−β2)·g)·g                         exp_avg_sq.mul_.addcmul_
//   p ← p + (neg_step_size·m) / (sqrt(v) / sqrt(bc2) + eps)   param.addcdiv_
// The _rn intrinsics keep the compiler from fusing multiply-adds, so results match bit for bit.
struct AdamwScalars {
  float decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps;
};

__device__ __forceinline__ void adamw_update(float& p, float g, float& m, float& v, const AdamwScalars& h) {
  const float pd = __fmul_rn(p, h.decay);
  const float mi = __fadd_rn(m, __fmul_rn(h.one_minus_beta1, __fsub_rn(g, m)));
  const float vi = __fadd_rn(__fmul_rn(v, h.beta2), __fmul_rn(__fmul_rn(h.one_minus_beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), h.bias_correction2_sqrt), h.eps);
  m = mi;
  v = vi;
  p = __fadd_rn(pd, __fdiv_rn(__fmul_rn(h.neg_step_size, mi), denom));
}
