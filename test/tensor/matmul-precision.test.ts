// Autocast products (Backend.matmul precision "bf16") on the CPU reference backend, and the
// autograd linear op that carries the precision into its gradient products.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { bf16ToF32, f32ToBf16 } from "../../src/tensor/bf16.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { Rng } from "../../src/util/rng.ts";

const backend = createCpuBackend();
const rounded = (x: Float32Array): Float32Array => x.map((v) => bf16ToF32(f32ToBf16(v)));
const uniform = (rng: Rng, n: number): Float32Array => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
const readAndFree = (t: Tensor): Float32Array => {
  const out = Float32Array.from(backend.read(t) as Float32Array);
  t.free();
  return out;
};

test("precision bf16 multiplies the f32 operand rounded to bf16, whichever side it is on", () => {
  const rng = new Rng(11);
  const [m, k, n] = [7, 37, 9];
  const x = uniform(rng, m * k);
  const w = uniform(rng, n * k);
  const xt = backend.upload(x, [m, k], "f32");
  const xRounded = backend.upload(rounded(x), [m, k], "f32");
  for (const dtype of ["bf16", "fp8_e4m3"] as const) {
    const wt = backend.upload(w, [n, k], dtype, dtype === "fp8_e4m3" ? 0.5 : 1);
    const auto = backend.matmul(xt, wt, { transB: true, precision: "bf16" });
    const expected = backend.matmul(xRounded, wt, { transB: true });
    const exact = backend.matmul(xt, wt, { transB: true });
    const [got, want, full] = [readAndFree(auto), readAndFree(expected), readAndFree(exact)];
    assert.deepEqual(got, want, `${dtype}: x·Wᵀ is the product of the rounded x`);
    assert.ok(got.some((v, i) => v !== full[i]), `${dtype}: the rounding changes the result`);
    // The narrow operand first (W·xᵀ): the f32 operand is still the one rounded.
    const left = backend.matmul(wt, xt, { transB: true, precision: "bf16" });
    const leftWant = backend.matmul(wt, xRounded, { transB: true });
    assert.deepEqual(readAndFree(left), readAndFree(leftWant));
    wt.free();
  }
  xt.free();
  xRounded.free();
});

test("precision bf16 leaves f32·f32 and bf16·bf16 products as they are", () => {
  const rng = new Rng(12);
  const a = backend.upload(uniform(rng, 5 * 8), [5, 8], "f32");
  const b = backend.upload(uniform(rng, 8 * 3), [8, 3], "f32");
  const auto = backend.matmul(a, b, { precision: "bf16" });
  const exact = backend.matmul(a, b);
  assert.deepEqual(readAndFree(auto), readAndFree(exact));
  const ab = backend.cast(a, "bf16");
  const bb = backend.cast(b, "bf16");
  const autoNarrow = backend.matmul(ab, bb, { precision: "bf16" });
  const exactNarrow = backend.matmul(ab, bb);
  assert.deepEqual(readAndFree(autoNarrow), readAndFree(exactNarrow));
  for (const t of [a, b, ab, bb]) t.free();
});

test("an autocast linear's input gradient is the autocast product dy·W (the weight stays frozen)", () => {
  const rng = new Rng(13);
  const [rows, inF, outF] = [4, 24, 6];
  const graph = createGraph(backend, { recording: true });
  const x = graph.param(backend.upload(uniform(rng, rows * inF), [rows, inF], "f32"), true);
  const wt = backend.upload(uniform(rng, outF * inF), [outF, inF], "bf16");
  const w = graph.constant(wt);
  const y = graph.linear(x, w, "bf16");
  const yWant = backend.matmul(x.value, wt, { transB: true, precision: "bf16" });
  assert.deepEqual(Float32Array.from(backend.read(y.value) as Float32Array), readAndFree(yWant));
  // loss = Σ y·dy, so d loss / d y = dy exactly.
  const dy = backend.upload(uniform(rng, rows * outF), [rows, outF], "f32");
  const loss = graph.matmul(graph.reshape(y, [1, rows * outF]), graph.constant(dy.reshape([rows * outF, 1])));
  graph.backward(loss);
  const dxWant = backend.matmul(dy, wt, { precision: "bf16" });
  const dxExact = backend.matmul(dy, wt);
  const gotDx = Float32Array.from(backend.read(x.grad!) as Float32Array);
  assert.deepEqual(gotDx, readAndFree(dxWant));
  const exactDx = readAndFree(dxExact);
  assert.ok(gotDx.some((v, i) => v !== exactDx[i]), "dy was rounded too");
  graph.dispose();
  dy.free();
  wt.free();
});
