/**
 * Every Graph op: forward against the f64 reference, gradients of every input against central
 * differences of that reference (see ../tensor/reference.ts; tolerance 1e-4 relative to the
 * largest gradient, as the graph computes in f32). Then checkpointing and memory.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import type { Graph, Var } from "../../src/autograd/graph.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { attentionCases } from "../tensor/attention-cases.ts";
import {
  assertClose,
  assertGradClose,
  attentionRef,
  crossEntropyRef,
  dot,
  geluRef,
  matmulRef,
  numericGrad,
  randomF32,
  rmsNormRef,
  rng,
  ropeRef,
  siluRef,
} from "../tensor/reference.ts";

const backend = createCpuBackend();

interface Input {
  shape: number[];
  lo?: number;
  hi?: number;
}

/** Σ r·y as a [1] Var, built from graph ops (reshape + matmul) so backward starts from a scalar. */
function weightedSum(g: Graph, y: Var, r: Float32Array): Var {
  const flat = g.reshape(y, [1, r.length]);
  return g.reshape(g.matmul(flat, g.constant(backend.upload(r, [r.length, 1], "f32"))), [1]);
}

/**
 * Builds the op on fresh leaves, checks the forward value against ref, back-propagates Σ r·y and
 * checks each input's gradient against central differences of Σ r·ref.
 */
function checkOp(
  name: string,
  inputs: readonly Input[],
  build: (g: Graph, xs: Var[]) => Var,
  ref: (xs: Float64Array[]) => ArrayLike<number>,
  seed: number,
): void {
  const random = rng(seed);
  const values = inputs.map(({ shape, lo = -1, hi = 1 }) => randomF32(random, shape.reduce((a, b) => a * b, 1), lo, hi));
  const g = createGraph(backend, { recording: true });
  const leaves = values.map((v, i) => g.param(backend.upload(v, inputs[i]!.shape, "f32"), true));
  const y = build(g, leaves);
  const expected = ref(values.map((v) => Float64Array.from(v)));
  assertClose(backend.read(y.value), expected, 1e-5, `${name} forward`);
  const r = randomF32(random, y.value.size);
  g.backward(weightedSum(g, y, r));
  leaves.forEach((leaf, i) => {
    assert.ok(leaf.grad, `${name}: input ${i} got a gradient`);
    assert.deepEqual(leaf.grad.shape, leaf.value.shape);
    assertGradClose(backend.read(leaf.grad), numericGrad((xs) => dot(r, ref(xs)), values, i), `${name} input ${i}`);
  });
  g.dispose();
}

test("linear", () => {
  checkOp("linear", [{ shape: [5, 7] }, { shape: [3, 7] }], (g, [x, w]) => g.linear(x!, w!), ([x, w]) => matmulRef(x!, w!, 5, 7, 3, false, true), 1);
});

test("matmul, all transpose combinations with alpha", () => {
  const [m, k, n] = [4, 6, 3];
  for (const transA of [false, true])
    for (const transB of [false, true]) {
      checkOp(
        `matmul transA=${transA} transB=${transB}`,
        [{ shape: transA ? [k, m] : [m, k] }, { shape: transB ? [n, k] : [k, n] }],
        (g, [a, b]) => g.matmul(a!, b!, { transA, transB, alpha: 0.7 }),
        ([a, b]) => matmulRef(a!, b!, m, k, n, transA, transB, 0.7),
        2,
      );
    }
});

test("add, mul, scale", () => {
  const two = [{ shape: [3, 5] }, { shape: [3, 5] }];
  checkOp("add", two, (g, [a, b]) => g.add(a!, b!), ([a, b]) => a!.map((v, i) => v + b![i]!), 3);
  checkOp("mul", two, (g, [a, b]) => g.mul(a!, b!), ([a, b]) => a!.map((v, i) => v * b![i]!), 4);
  checkOp("scale", [{ shape: [7] }], (g, [a]) => g.scale(a!, -1.5), ([a]) => a!.map((v) => -1.5 * v), 5);
});

test("swiglu, gelu", () => {
  const wide = { shape: [3, 5], lo: -3, hi: 3 };
  checkOp("swiglu", [wide, wide], (g, [a, b]) => g.swiglu(a!, b!), ([a, b]) => a!.map((v, i) => siluRef(v) * b![i]!), 6);
  checkOp("gelu", [wide], (g, [a]) => g.gelu(a!), ([a]) => a!.map(geluRef), 7);
});

test("dropout (same seed, same mask) and p = 0 is the identity", () => {
  const x = backend.upload(randomF32(rng(8), 20, 0.5, 1.5), [20], "f32");
  const mask = Array.from(backend.read(backend.dropout(x, 0.25, 5)), (y, i) => y / backend.read(x)[i]!);
  checkOp("dropout", [{ shape: [4, 5], lo: 0.5, hi: 1.5 }], (g, [a]) => g.dropout(a!, 0.25, 5), ([a]) => a!.map((v, i) => v * mask[i]!), 8);
  const g = createGraph(backend, { recording: true });
  const v = g.param(x, true);
  assert.equal(g.dropout(v, 0, 5), v);
});

test("loraLinear is x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ, with gradients for x, W, A and B", () => {
  const [n, inF, outF, r, scale] = [5, 7, 3, 2, 1.75];
  const ones = backend.upload(new Float32Array(n * inF).fill(1), [n, inF], "f32");
  for (const seed of [null, 11]) {
    const mask = seed === null ? new Float32Array(n * inF).fill(1) : (backend.read(backend.dropout(ones, 0.3, seed)) as Float32Array);
    checkOp(
      `loraLinear seed=${seed}`,
      [{ shape: [n, inF] }, { shape: [outF, inF] }, { shape: [r, inF] }, { shape: [outF, r] }],
      (g, [x, w, a, b]) => g.loraLinear(x!, w!, a!, b!, { scale, dropout: 0.3, seed }),
      ([x, w, a, b]) => {
        const base = matmulRef(x!, w!, n, inF, outF, false, true);
        const u = matmulRef(x!.map((v, i) => v * mask[i]!), a!, n, inF, r, false, true);
        const update = matmulRef(u, b!, n, r, outF, false, true, scale);
        return base.map((v, i) => v + update[i]!);
      },
      12,
    );
  }
});

test("an intermediate feeding three LoRA linears and a linear gets its gradient summed by their products (beta = 1)", () => {
  // x = 1.5·x0 feeds q, k, v-like LoRA linears and a plain linear: the second to fourth input
  // gradients are added into the first by the products themselves instead of by a separate sum.
  const [n, inF, outF, r, scale] = [4, 6, 3, 2, 0.5];
  const shapes = [[n, inF], ...[0, 1, 2].flatMap(() => [[outF, inF], [r, inF], [outF, r]]), [outF, inF]];
  const counted = { addInPlace: 0 };
  const counting = new Proxy(backend, {
    get: (target, key, receiver) =>
      key === "addInPlace" ? (...args: Parameters<typeof backend.addInPlace>) => (counted.addInPlace++, target.addInPlace(...args)) : (Reflect.get(target, key, receiver) as unknown),
  });
  const spied = createGraph(counting, { recording: true });
  const build = (graph: Graph, [x0, ...ws]: Var[]) => {
    const x = graph.scale(x0!, 1.5);
    let y = graph.linear(x, ws[9]!);
    for (let m = 0; m < 3; m++) y = graph.add(y, graph.loraLinear(x, ws[3 * m]!, ws[3 * m + 1]!, ws[3 * m + 2]!, { scale, dropout: 0, seed: null }));
    return y;
  };
  checkOp(
    "three LoRA linears and a linear on one input",
    shapes.map((shape) => ({ shape })),
    build,
    ([x0, ...ws]) => {
      const x = x0!.map((v) => 1.5 * v);
      const out = matmulRef(x, ws[9]!, n, inF, outF, false, true);
      for (let m = 0; m < 3; m++) {
        const base = matmulRef(x, ws[3 * m]!, n, inF, outF, false, true);
        const u = matmulRef(x, ws[3 * m + 1]!, n, inF, r, false, true);
        const update = matmulRef(u, ws[3 * m + 2]!, n, r, outF, false, true, scale);
        base.forEach((v, i) => (out[i]! += v + update[i]!));
      }
      return out;
    },
    31,
  );
  // The same graph through a counting backend: no separate sums for x's four gradients.
  const random = rng(32);
  const leaves = shapes.map((shape) => spied.param(backend.upload(randomF32(random, shape[0]! * shape[1]!), shape, "f32"), true));
  const y = build(spied, leaves);
  spied.backward(spied.reshape(spied.matmul(spied.reshape(y, [1, n * outF]), spied.constant(backend.upload(new Float32Array(n * outF).fill(1), [n * outF, 1], "f32"))), [1]));
  assert.equal(counted.addInPlace, 0);
});

test("loraLinear in bf16 (autocast) stays within bf16 rounding of the f32 op, gradients included", () => {
  const [n, inF, outF, r] = [6, 16, 8, 4];
  const random = rng(21);
  const shapes = [[n, inF], [outF, inF], [r, inF], [outF, r]];
  const values = shapes.map((sh) => randomF32(random, sh[0]! * sh[1]!));
  const weighting = randomF32(random, n * outF);
  const run = (precision: "f32" | "bf16") => {
    const g = createGraph(backend, { recording: true });
    const leaves = values.map((v, i) => g.param(backend.upload(v, shapes[i]!, "f32"), true));
    const y = g.loraLinear(leaves[0]!, leaves[1]!, leaves[2]!, leaves[3]!, { scale: 2, dropout: 0.2, seed: 5 }, precision);
    const out = Float32Array.from(backend.read(y.value));
    g.backward(weightedSum(g, y, weighting));
    const grads = leaves.map((l) => Float32Array.from(backend.read(l.grad!)));
    g.dispose();
    return { out, grads };
  };
  const exact = run("f32");
  const fast = run("bf16");
  // bf16 keeps 8 significant bits: each operand is off by ≤ 2⁻⁹ relative, sums of a few products by ~1e-2 of their scale.
  const near = (a: Float32Array, b: Float32Array, what: string) => {
    const scale = Math.max(...Array.from(b, Math.abs));
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst <= 2e-2 * scale, `${what}: max difference ${worst} against scale ${scale}`);
    assert.ok(worst > 0, `${what}: bf16 rounding changed nothing, so the bf16 path did not run`);
  };
  near(fast.out, exact.out, "y");
  fast.grads.forEach((grad, i) => near(grad, exact.grads[i]!, `gradient ${i}`));
});

test("loraLinear in bf16 gives the same bits through Backend.loraUp / loraUpBackward as through the matmul calls", () => {
  // Leading dimensions on x (the model's [B, T, in]), an out that fills no SIMD lane group, dropout.
  const [batch, tokens, inF, outF, r] = [2, 3, 16, 11, 4];
  const random = rng(22);
  const shapes = [[batch, tokens, inF], [outF, inF], [r, inF], [outF, r]];
  const values = shapes.map((sh) => randomF32(random, sh.reduce((a, b) => a * b, 1)));
  const weighting = randomF32(random, batch * tokens * outF);
  // trainable[i]: whether leaf i requires a gradient (a frozen B takes the matmul path for dB's absence).
  const run = (loraUpOps: boolean, trainable: readonly boolean[]) => {
    const calls = { loraUp: 0, loraUpBackward: 0, matmul: 0 };
    const counting = new Proxy(backend, {
      get(target, key, receiver) {
        const value: unknown = Reflect.get(target, key, receiver);
        if (typeof key !== "string" || !(key in calls) || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          calls[key as keyof typeof calls]++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const g = createGraph(counting, { recording: true, loraUpOps });
    const leaves = values.map((v, i) => g.param(backend.upload(v, shapes[i]!, "f32"), trainable[i]!));
    const y = g.loraLinear(leaves[0]!, leaves[1]!, leaves[2]!, leaves[3]!, { scale: 1.75, dropout: 0.2, seed: 9 }, "bf16");
    assert.deepEqual(y.value.shape, [batch, tokens, outF]);
    const out = Array.from(backend.readRaw(y.value));
    g.backward(weightedSum(g, y, weighting));
    const grads = leaves.map((l) => (l.grad ? Array.from(backend.readRaw(l.grad)) : null));
    g.dispose();
    return { out, grads, calls };
  };
  for (const trainable of [[true, true, true, true], [true, false, true, true], [false, false, true, false]]) {
    const viaMatmul = run(false, trainable);
    const viaUpOps = run(true, trainable);
    assert.deepEqual(viaUpOps.out, viaMatmul.out, `y, trainable ${trainable}`);
    assert.deepEqual(viaUpOps.grads, viaMatmul.grads, `gradients, trainable ${trainable}`);
    assert.equal(viaMatmul.calls.loraUp + viaMatmul.calls.loraUpBackward, 0);
    assert.equal(viaUpOps.calls.loraUp, 1);
    // du and dB from one call where both are needed; otherwise the matmul products.
    const both = trainable[3]! && (trainable[0]! || trainable[2]!);
    assert.equal(viaUpOps.calls.loraUpBackward, both ? 1 : 0, `trainable ${trainable}`);
  }
});

test("rmsNorm", () => {
  const [n, c] = [5, 7];
  checkOp("rmsNorm", [{ shape: [n, c], lo: -2, hi: 2 }, { shape: [c] }], (g, [x, w]) => g.rmsNorm(x!, w!, 1e-6), ([x, w]) => rmsNormRef(x!, w!, n, c, 1e-6), 9);
});

test("rope", () => {
  const [n, h, d] = [4, 2, 6];
  const angles = randomF32(rng(10), (n * d) / 2, -3, 3);
  const [cos, sin] = [Float32Array.from(angles, Math.cos), Float32Array.from(angles, Math.sin)];
  const [ct, st] = [backend.upload(cos, [n, d / 2], "f32"), backend.upload(sin, [n, d / 2], "f32")];
  checkOp("rope", [{ shape: [n, h, d] }], (g, [x]) => g.rope(x!, ct, st), ([x]) => ropeRef(x!, cos, sin, n, h, d), 10);
});

test("attention, every mask kind", () => {
  for (const { name, dims, mask, visible } of attentionCases(backend)) {
    const { b, t, s, hq, hkv, d } = dims;
    const scale = 1 / Math.sqrt(d);
    checkOp(
      `attention ${name}`,
      [{ shape: [b, t, hq, d], lo: -2, hi: 2 }, { shape: [b, s, hkv, d], lo: -2, hi: 2 }, { shape: [b, s, hkv, d] }],
      (g, [q, k, v]) => g.attention(q!, k!, v!, mask, scale),
      ([q, k, v]) => attentionRef(q!, k!, v!, dims, visible, scale),
      11,
    );
  }
});

test("reshape, sliceRows, concatRows", () => {
  checkOp("reshape", [{ shape: [2, 6] }], (g, [x]) => g.mul(g.reshape(x!, [3, 4]), g.reshape(x!, [3, -1])), ([x]) => x!.map((v) => v * v), 12);
  checkOp("sliceRows", [{ shape: [5, 3] }], (g, [x]) => g.sliceRows(x!, 1, 3), ([x]) => x!.slice(3, 12), 13);
  checkOp("concatRows", [{ shape: [2, 3] }, { shape: [3, 3] }], (g, [a, b]) => g.concatRows([a!, b!]), ([a, b]) => [...a!, ...b!], 14);
});

test("gatherRows (repeated rows accumulate), scatterRows, permute", () => {
  const index = backend.upload(Int32Array.of(3, 0, 3), [3], "i32");
  const rows = (x: Float64Array, r: number) => Array.from(x.slice(r * 3, r * 3 + 3));
  checkOp("gatherRows", [{ shape: [4, 3] }], (g, [x]) => g.gatherRows(x!, index), ([x]) => [3, 0, 3].flatMap((r) => rows(x!, r)), 15);
  const slots = backend.upload(Int32Array.of(2, 0), [2], "i32");
  checkOp(
    "scatterRows",
    [{ shape: [4, 3] }, { shape: [2, 3] }],
    (g, [dst, src]) => g.scatterRows(dst!, slots, src!),
    ([dst, src]) => [rows(src!, 1), rows(dst!, 1), rows(src!, 0), rows(dst!, 3)].flat(),
    16,
  );
  const perm = Int32Array.from({ length: 12 }, (_, i) => (i % 4) * 3 + Math.floor(i / 4));
  const permT = backend.upload(perm, [12], "i32");
  checkOp("permute", [{ shape: [4, 3] }], (g, [x]) => g.permute(x!, permT, [3, 4]), ([x]) => Array.from(perm, (j) => x![j]!), 17);
});

test("crossEntropy is the mean over non-ignored rows", () => {
  const labels = Int32Array.of(2, -100, 6, 0);
  const lt = backend.upload(labels, [4], "i32");
  checkOp("crossEntropy", [{ shape: [4, 7], lo: -3, hi: 3 }], (g, [x]) => g.crossEntropy(x!, lt, -100), ([x]) => [crossEntropyRef(x!, labels, 7, -100) / 3], 18);
  const g = createGraph(backend, { recording: false });
  const allIgnored = backend.upload(Int32Array.of(-100, -100), [2], "i32");
  const loss = g.crossEntropy(g.constant(backend.zeros([2, 3], "f32")), allIgnored, -100);
  assert.ok(Number.isNaN(backend.read(loss.value)[0]), "no counted row gives NaN, as torch");
});

test("a value used twice sums both gradient paths; frozen inputs get no gradient", () => {
  // y = x + x·Wᵀ with W frozen in bf16: dx = r + r·W.
  const random = rng(19);
  const x = randomF32(random, 3 * 4);
  const w = randomF32(random, 4 * 4);
  const r = randomF32(random, 12);
  const g = createGraph(backend, { recording: true });
  const xv = g.param(backend.upload(x, [3, 4], "f32"), true);
  const wv = g.param(backend.upload(w, [4, 4], "bf16"), false);
  g.backward(weightedSum(g, g.add(xv, g.linear(xv, wv)), r));
  const wBf16 = backend.read(wv.value);
  const expected = matmulRef(r, wBf16, 3, 4, 4).map((v, i) => v + r[i]!);
  assertClose(backend.read(xv.grad!), expected, 1e-6, "dx");
  assert.equal(wv.grad, null);
});

test("backward accumulates into a leaf gradient that already exists", () => {
  const g = createGraph(backend, { recording: true });
  const x = g.param(backend.upload(Float32Array.of(1, 2), [2], "f32"), true);
  x.grad = backend.upload(Float32Array.of(10, 20), [2], "f32");
  g.backward(weightedSum(g, g.scale(x, 3), Float32Array.of(1, 1)));
  assert.deepEqual(Array.from(backend.read(x.grad)), [13, 23]);
});

/** A two-layer block with a captured (closure) LoRA-like parameter, dropout and attention. */
function block(g: Graph, x: Var, w1: Var, w2: Var, norm: Var): Var {
  const h = g.rmsNorm(x, norm, 1e-6);
  const a = g.dropout(g.swiglu(g.linear(h, w1), g.linear(h, w2)), 0.2, 77);
  const q = g.reshape(a, [1, 5, 2, 2]);
  const att = g.attention(q, q, q, { kind: "causal", queryOffset: 0 }, 0.5);
  return g.add(x, g.reshape(att, [5, 4]));
}

function runBlocks(useCheckpoint: boolean): { grads: Float32Array[]; loss: number } {
  const random = rng(20);
  const g = createGraph(backend, { recording: true });
  const x = g.param(backend.upload(randomF32(random, 20), [5, 4], "f32"), true);
  const w1 = g.param(backend.upload(randomF32(random, 16), [4, 4], "f32"), true);
  const w2 = g.param(backend.upload(randomF32(random, 16), [4, 4], "f32"), true);
  const norm = g.param(backend.upload(randomF32(random, 4, 0.5, 1.5), [4], "f32"), true);
  const r = randomF32(random, 20);
  let h: Var = x;
  for (let layer = 0; layer < 2; layer++) {
    h = useCheckpoint ? g.checkpoint([h], ([input]) => block(g, input!, w1, w2, norm)) : block(g, h, w1, w2, norm);
  }
  const loss = weightedSum(g, h, r);
  g.backward(loss);
  const result = { grads: [x, w1, w2, norm].map((v) => backend.read(v.grad!) as Float32Array), loss: backend.read(loss.value)[0]! };
  g.dispose();
  return result;
}

test("checkpoint gives the same loss and gradients as recording everything", () => {
  const plain = runBlocks(false);
  const checkpointed = runBlocks(true);
  assert.equal(checkpointed.loss, plain.loss);
  plain.grads.forEach((grad, i) => assert.deepEqual(checkpointed.grads[i], grad, `gradient ${i}`));
});

test("checkpoint keeps only its output alive between forward and backward", () => {
  const random = rng(21);
  const g = createGraph(backend, { recording: true });
  const x = g.param(backend.upload(randomF32(random, 20), [5, 4], "f32"), true);
  const w = g.param(backend.upload(randomF32(random, 16), [4, 4], "f32"), true);
  const before = backend.memory().live;
  const y = g.checkpoint([x], ([input]) => g.gelu(g.linear(g.gelu(g.linear(input!, w)), w)));
  assert.equal(backend.memory().live - before, y.value.byteLength, "only the output survives the first run");
  g.dispose();
});

test("scope frees intermediates without recording; dispose frees the rest", () => {
  const random = rng(22);
  const g = createGraph(backend, { recording: false });
  const x = g.constant(backend.upload(randomF32(random, 12), [3, 4], "f32"));
  const w = g.constant(backend.upload(randomF32(random, 16), [4, 4], "f32"));
  const norm = g.constant(backend.upload(new Float32Array(4).fill(1), [4], "f32"));
  const before = backend.memory().live;
  const y = g.scope(() => g.rmsNorm(g.gelu(g.linear(g.gelu(g.linear(x, w)), w)), norm, 1e-6));
  assert.equal(backend.memory().live - before, y.value.byteLength);
  const [a, b] = g.scope(() => {
    const h = g.linear(y, w);
    return [g.reshape(h, [12]), g.scale(h, 2)] as const;
  });
  assert.equal(backend.memory().live - before, y.value.byteLength + a!.value.byteLength + b!.value.byteLength, "a view keeps its storage");
  g.dispose();
  assert.equal(backend.memory().live, before);
});

test("a recording graph's dispose frees everything but leaves and their gradients", () => {
  const random = rng(23);
  const before = backend.memory().live;
  const g = createGraph(backend, { recording: true });
  const x = g.param(backend.upload(randomF32(random, 12), [3, 4], "f32"), true);
  const labels = backend.upload(Int32Array.of(0, 3, 1), [3], "i32");
  const leafBytes = backend.memory().live - before;
  g.backward(g.crossEntropy(g.gelu(g.scale(x, 2)), labels, -100));
  g.dispose();
  assert.equal(backend.memory().live - before, leafBytes + x.grad!.byteLength);
});

test("backward refuses a graph that does not record or a loss with no trainable input", () => {
  const g = createGraph(backend, { recording: false });
  const x = g.param(backend.upload(Float32Array.of(1), [1], "f32"), true);
  assert.throws(() => g.backward(g.scale(x, 2)), /does not record/);
  const h = createGraph(backend, { recording: true });
  assert.throws(() => h.backward(h.scale(h.constant(backend.zeros([1], "f32")), 2)), /does not depend/);
});
