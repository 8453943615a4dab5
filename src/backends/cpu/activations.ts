/** SwiGLU and exact GELU, each forward next to its backward. Arithmetic in f64, stored as f32. */
import type { Tensor } from "../../tensor/tensor.ts";
import { requireSameSize } from "../../tensor/checks.ts";
import type { DType } from "../../tensor/dtype.ts";
import { type CpuAllocator, fromF32As, valuesF32 } from "./storage.ts";

/** out = silu(gate)·up, silu(g) = g·σ(g). */
export function swiglu(alloc: CpuAllocator, gate: Tensor, up: Tensor, outDtype: DType = "f32"): Tensor {
  requireSameSize("swiglu", gate, up);
  const g = valuesF32(gate, "swiglu");
  const u = valuesF32(up, "swiglu");
  const out = new Float32Array(g.length);
  for (let i = 0; i < out.length; i++) {
    const x = g[i]!;
    out[i] = (x / (1 + Math.exp(-x))) * u[i]!;
  }
  return fromF32As(alloc, out, gate.shape, outDtype, "swiglu");
}

/** dgate = dout·up·σ(g)·(1 + g·(1-σ(g))), dup = dout·silu(g). */
export function swigluBackward(alloc: CpuAllocator, gate: Tensor, up: Tensor, dout: Tensor, outDtype: DType = "f32"): { dgate: Tensor; dup: Tensor } {
  requireSameSize("swigluBackward", gate, up);
  requireSameSize("swigluBackward", gate, dout);
  const g = valuesF32(gate, "swigluBackward");
  const u = valuesF32(up, "swigluBackward");
  const d = valuesF32(dout, "swigluBackward");
  const dgate = new Float32Array(g.length);
  const dup = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) {
    const x = g[i]!;
    const sig = 1 / (1 + Math.exp(-x));
    dup[i] = d[i]! * x * sig;
    dgate[i] = d[i]! * u[i]! * sig * (1 + x * (1 - sig));
  }
  return { dgate: fromF32As(alloc, dgate, gate.shape, outDtype, "swigluBackward"), dup: fromF32As(alloc, dup, up.shape, outDtype, "swigluBackward") };
}

/**
 * erf with |error| < 1.2e-7 relative (Numerical Recipes' erfc Chebyshev fit), evaluated in f64:
 * well below f32 resolution, so GELU matches torch's erf-based GELU to f32 rounding.
 */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

/** Exact GELU: x·Φ(x) = x/2·(1 + erf(x/√2)). */
export function gelu(alloc: CpuAllocator, x: Tensor): Tensor {
  const v = valuesF32(x, "gelu");
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = 0.5 * v[i]! * (1 + erf(v[i]! * Math.SQRT1_2));
  return alloc.fromF32(out, x.shape);
}

/** d gelu/dx = Φ(x) + x·φ(x). */
export function geluBackward(alloc: CpuAllocator, x: Tensor, dout: Tensor): Tensor {
  requireSameSize("geluBackward", x, dout);
  const v = valuesF32(x, "geluBackward");
  const d = valuesF32(dout, "geluBackward");
  const out = new Float32Array(v.length);
  const invSqrt2Pi = 1 / Math.sqrt(2 * Math.PI);
  for (let i = 0; i < v.length; i++) {
    const xi = v[i]!;
    const cdf = 0.5 * (1 + erf(xi * Math.SQRT1_2));
    const pdf = invSqrt2Pi * Math.exp(-0.5 * xi * xi);
    out[i] = d[i]! * (cdf + xi * pdf);
  }
  return alloc.fromF32(out, x.shape);
}
