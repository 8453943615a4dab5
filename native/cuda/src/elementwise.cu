// Elementwise arithmetic, activations (forward next to backward) and dropout. The hot ops have a
// vectorised twin (vec.cuh) taken when dtypes, sizes and alignments allow.
#include <type_traits>

#include "common.cuh"
#include "vec.cuh"

namespace {

__global__ void binary_kernel(int op, In a, In b, int64_t nb, Out y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float x = load(a, i), z = load(b, i % nb);
    store(y, i, op == 0 ? x + z : x * z);
  }
}

__global__ void axpby_kernel(In a, float alpha, In b, float beta, bool has_b, Out y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float v = alpha == 1.0f ? load(a, i) : alpha * load(a, i);
    if (has_b) v += beta == 1.0f ? load(b, i) : beta * load(b, i);
    store(y, i, v);
  }
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_kernel(In gate, In up, Out y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float g = load(gate, i);
    store(y, i, g * sigmoid(g) * load(up, i));
  }
}

// dgate = dout·up·σ(g)·(1 + g·(1−σ(g))), dup = dout·silu(g)
__global__ void swiglu_backward_kernel(In gate, In up, In dout, Out dgate, Out dup, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float g = load(gate, i), u = load(up, i), d = load(dout, i);
    float s = sigmoid(g);
    store(dup, i, d * g * s);
    store(dgate, i, d * u * s * (1.0f + g * (1.0f - s)));
  }
}

__global__ void gelu_kernel(In x, Out y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float v = load(x, i);
    store(y, i, 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
  }
}

// d gelu/dx = Φ(x) + x·φ(x)
__global__ void gelu_backward_kernel(In x, In dout, Out dx, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float v = load(x, i);
    float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
    store(dx, i, load(dout, i) * (cdf + v * pdf));
  }
}

// keep(i) ⇔ fmix32(fmix32(seed) + i·0x9e3779b9) ≥ threshold, all uint32 arithmetic mod 2³².
__global__ void dropout_kernel(In x, Out y, int64_t n, uint64_t threshold, float keep_scale, uint32_t seed_hash) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    uint32_t h = fmix32(seed_hash + static_cast<uint32_t>(i) * 0x9e3779b9u);
    store(y, i, static_cast<uint64_t>(h) >= threshold ? load(x, i) * keep_scale : 0.0f);
  }
}

template <typename T>
using elem_t = std::remove_pointer_t<T>;

template <typename TA, typename TB, typename TY>
__global__ void binary_vec_kernel(int op, const TA* a, const TB* b, TY* y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    float x[8], z[8], out[8];
    vec::load8(a, i, x);
    vec::load8(b, i, z);
#pragma unroll
    for (int j = 0; j < 8; j++) out[j] = op == 0 ? x[j] + z[j] : x[j] * z[j];
    vec::store8(y, i, out);
  }
}

template <typename TA, typename TB, typename TY>
__global__ void axpby_vec_kernel(const TA* a, float alpha, const TB* b, float beta, bool has_b, TY* y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    float va[8], vb[8] = {}, out[8];
    vec::load8(a, i, va);
    if (has_b) vec::load8(b, i, vb);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      float v = alpha == 1.0f ? va[j] : alpha * va[j];
      if (has_b) v += beta == 1.0f ? vb[j] : beta * vb[j];
      out[j] = v;
    }
    vec::store8(y, i, out);
  }
}

template <typename TG, typename TU, typename TY>
__global__ void swiglu_vec_kernel(const TG* gate, const TU* up, TY* y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    float g[8], u[8], out[8];
    vec::load8(gate, i, g);
    vec::load8(up, i, u);
#pragma unroll
    for (int j = 0; j < 8; j++) out[j] = g[j] * sigmoid(g[j]) * u[j];
    vec::store8(y, i, out);
  }
}

// swiglu_backward_kernel's expressions, 8 elements at a time.
template <typename TG, typename TU, typename TD, typename TY>
__global__ void swiglu_backward_vec_kernel(const TG* gate, const TU* up, const TD* dout, TY* dgate, TY* dup, int64_t n) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    float g[8], u[8], d[8], dg[8], du[8];
    vec::load8(gate, i, g);
    vec::load8(up, i, u);
    vec::load8(dout, i, d);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const float s = sigmoid(g[j]);
      du[j] = d[j] * g[j] * s;
      dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
    }
    vec::store8(dup, i, du);
    vec::store8(dgate, i, dg);
  }
}

template <typename TX, typename TY>
__global__ void dropout_vec_kernel(const TX* x, TY* y, int64_t n, uint64_t threshold, float keep_scale, uint32_t seed_hash) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    float v[8];
    vec::load8(x, i, v);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const uint32_t h = fmix32(seed_hash + static_cast<uint32_t>(i + j) * 0x9e3779b9u);
      v[j] = static_cast<uint64_t>(h) >= threshold ? v[j] * keep_scale : 0.0f;
    }
    vec::store8(y, i, v);
  }
}

}  // namespace

extern "C" {

int splint_cuda_binary(splint_ctx* ctx, int32_t op, splint_dptr a, int32_t a_dtype, float a_scale, splint_dptr b,
                       int32_t b_dtype, float b_scale, int64_t nb, splint_dptr out, int32_t out_dtype, int64_t n) {
  OP(op == 0 ? "add" : "mul");
  CTX_CHECK(ctx);
  ARG_CHECK(op == 0 || op == 1, "unknown binary op %d", op);
  ARG_CHECK(is_float_dtype(a_dtype) && is_float_dtype(b_dtype) && is_float_dtype(out_dtype), "float dtypes only");
  ARG_CHECK(nb > 0 && n % nb == 0, "operand of %lld elements does not tile %lld", (long long)nb, (long long)n);
  if (n == 0) return SPLINT_OK;
  bool launched = false;
  if (nb == n && vec::fits(n, {a, b, out})) {
    vec::with_type(a_dtype, [&](auto* ta) {
      vec::with_type(b_dtype, [&](auto* tb) {
        vec::with_type(out_dtype, [&](auto* ty) {
          launch_kernel(ctx, binary_vec_kernel<elem_t<decltype(ta)>, elem_t<decltype(tb)>, elem_t<decltype(ty)>>, vec::grid8(n), 256, 0,
              op, reinterpret_cast<const elem_t<decltype(ta)>*>(a), reinterpret_cast<const elem_t<decltype(tb)>*>(b),
              reinterpret_cast<elem_t<decltype(ty)>*>(out), n);
          launched = true;
        });
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, binary_kernel, grid_for(n), 256, 0, op, in_of(a, a_dtype, a_scale), in_of(b, b_dtype, b_scale), nb,
                                                         out_of(out, out_dtype), n);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_axpby(splint_ctx* ctx, splint_dptr a, int32_t a_dtype, float a_scale, float alpha, splint_dptr b,
                      int32_t b_dtype, float b_scale, float beta, splint_dptr out, int32_t out_dtype, int64_t n) {
  OP("axpby");
  CTX_CHECK(ctx);
  bool has_b = b != 0;
  ARG_CHECK(is_float_dtype(a_dtype) && (!has_b || is_float_dtype(b_dtype)) && is_float_dtype(out_dtype),
            "float dtypes only");
  if (n == 0) return SPLINT_OK;
  bool launched = false;
  if (vec::fits(n, {a, has_b ? b : a, out})) {
    vec::with_type(a_dtype, [&](auto* ta) {
      vec::with_type(has_b ? b_dtype : SPLINT_F32, [&](auto* tb) {
        vec::with_type(out_dtype, [&](auto* ty) {
          launch_kernel(ctx, axpby_vec_kernel<elem_t<decltype(ta)>, elem_t<decltype(tb)>, elem_t<decltype(ty)>>, vec::grid8(n), 256, 0,
              reinterpret_cast<const elem_t<decltype(ta)>*>(a), alpha, reinterpret_cast<const elem_t<decltype(tb)>*>(b),
              beta, has_b, reinterpret_cast<elem_t<decltype(ty)>*>(out), n);
          launched = true;
        });
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, axpby_kernel, grid_for(n), 256, 0, in_of(a, a_dtype, a_scale), alpha, in_of(b, b_dtype, b_scale),
                                                        beta, has_b, out_of(out, out_dtype), n);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_swiglu(splint_ctx* ctx, splint_dptr gate, int32_t gate_dtype, splint_dptr up, int32_t up_dtype,
                       splint_dptr out, int32_t out_dtype, int64_t n) {
  OP("swiglu");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(gate_dtype) && is_float_dtype(up_dtype) && is_grad_dtype(out_dtype), "bad dtypes");
  if (n == 0) return SPLINT_OK;
  bool launched = false;
  if (vec::fits(n, {gate, up, out})) {
    vec::with_type(gate_dtype, [&](auto* tg) {
      vec::with_type(up_dtype, [&](auto* tu) {
        vec::with_type(out_dtype, [&](auto* ty) {
          launch_kernel(ctx, swiglu_vec_kernel<elem_t<decltype(tg)>, elem_t<decltype(tu)>, elem_t<decltype(ty)>>, vec::grid8(n), 256, 0, reinterpret_cast<const elem_t<decltype(tg)>*>(gate),
                                                                     reinterpret_cast<const elem_t<decltype(tu)>*>(up),
                                                                     reinterpret_cast<elem_t<decltype(ty)>*>(out), n);
          launched = true;
        });
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, swiglu_kernel, grid_for(n), 256, 0, in_of(gate, gate_dtype), in_of(up, up_dtype),
                                                         out_of(out, out_dtype), n);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_swiglu_backward(splint_ctx* ctx, splint_dptr gate, int32_t gate_dtype, splint_dptr up,
                                int32_t up_dtype, splint_dptr dout, int32_t dout_dtype, splint_dptr dgate,
                                splint_dptr dup, int32_t grad_dtype, int64_t n) {
  OP("swiglu_backward");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(gate_dtype) && is_float_dtype(up_dtype) && is_float_dtype(dout_dtype) &&
                is_grad_dtype(grad_dtype),
            "bad dtypes");
  if (n == 0) return SPLINT_OK;
  bool launched = false;
  if (vec::fits(n, {gate, up, dout, dgate, dup})) {
    vec::with_type(gate_dtype, [&](auto* tg) {
      vec::with_type(up_dtype, [&](auto* tu) {
        vec::with_type(dout_dtype, [&](auto* td) {
          vec::with_type(grad_dtype, [&](auto* ty) {
            using TY = elem_t<decltype(ty)>;
            launch_kernel(ctx, swiglu_backward_vec_kernel<elem_t<decltype(tg)>, elem_t<decltype(tu)>, elem_t<decltype(td)>, TY>, vec::grid8(n), 256, 0,
                reinterpret_cast<const elem_t<decltype(tg)>*>(gate), reinterpret_cast<const elem_t<decltype(tu)>*>(up),
                reinterpret_cast<const elem_t<decltype(td)>*>(dout), reinterpret_cast<TY*>(dgate),
                reinterpret_cast<TY*>(dup), n);
            launched = true;
          });
        });
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, swiglu_backward_kernel, grid_for(n), 256, 0, in_of(gate, gate_dtype), in_of(up, up_dtype),
                                                                  in_of(dout, dout_dtype), out_of(dgate, grad_dtype),
                                                                  out_of(dup, grad_dtype), n);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_gelu(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr out, int32_t out_dtype, int64_t n) {
  OP("gelu");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(x_dtype) && is_grad_dtype(out_dtype), "bad dtypes");
  if (n == 0) return SPLINT_OK;
  launch_kernel(ctx, gelu_kernel, grid_for(n), 256, 0, in_of(x, x_dtype), out_of(out, out_dtype), n);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_gelu_backward(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr dout, int32_t dout_dtype,
                              splint_dptr dx, int32_t dx_dtype, int64_t n) {
  OP("gelu_backward");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(x_dtype) && is_float_dtype(dout_dtype) && is_grad_dtype(dx_dtype), "bad dtypes");
  if (n == 0) return SPLINT_OK;
  launch_kernel(ctx, gelu_backward_kernel, grid_for(n), 256, 0, in_of(x, x_dtype), in_of(dout, dout_dtype),
                                                              out_of(dx, dx_dtype), n);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_dropout(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr out, int32_t out_dtype, int64_t n,
                        uint64_t threshold, float keep_scale, uint32_t seed) {
  OP("dropout");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(x_dtype) && is_grad_dtype(out_dtype), "bad dtypes");
  ARG_CHECK(n <= (1LL << 32), "%lld elements exceed the 32-bit element counter", (long long)n);
  if (n == 0) return SPLINT_OK;
  bool launched = false;
  if (vec::fits(n, {x, out})) {
    vec::with_type(x_dtype, [&](auto* tx) {
      vec::with_type(out_dtype, [&](auto* ty) {
        launch_kernel(ctx, dropout_vec_kernel<elem_t<decltype(tx)>, elem_t<decltype(ty)>>, vec::grid8(n), 256, 0, reinterpret_cast<const elem_t<decltype(tx)>*>(x),
                                                                    reinterpret_cast<elem_t<decltype(ty)>*>(out), n,
                                                                    threshold, keep_scale, fmix32(seed));
        launched = true;
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, dropout_kernel, grid_for(n), 256, 0, in_of(x, x_dtype), out_of(out, out_dtype), n, threshold,
                                                          keep_scale, fmix32(seed));
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
