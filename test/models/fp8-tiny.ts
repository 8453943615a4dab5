/**
 * A tiny Mistral3 whose decoder linears are per-tensor fp8 (the FP8 Instruct layout), with a LoRA
 * pair on every q/k/v/o/gate/up/down of both towers, and the same weights widened for reference:
 * exactly to f32 (fp8 · scale), or to bf16 as transformers dequantizes (bf16(fp8 · scale)). Used by
 * the CPU parity test (test/models/fp8-parity.test.ts) and the CUDA parity cases.
 */
import { createGraph } from "../../src/autograd/tape.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { buildMistral3, forwardMistral3, type Mistral3Inputs, type Mistral3Model } from "../../src/models/mistral3/model.ts";
import { expectedWeights } from "../../src/models/mistral3/weights.ts";
import type { Backend, MatmulPrecision } from "../../src/tensor/backend.ts";
import { bf16ArrayToF32, f32ArrayToBf16 } from "../../src/tensor/bf16.ts";
import { f32ArrayToFp8E4m3, FP8_E4M3_MAX, fp8E4m3ArrayToF32 } from "../../src/tensor/fp8.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { tinyConfig } from "./tiny-model.ts";

/** tinyConfig's sizes (vision 32, text 48). */
export const FP8_TINY_CONFIG = tinyConfig();

const DECODER_LINEAR = /^model\.language_model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight$/;
const LORA_TARGET = /\.(?:q|k|v|o|gate|up|down)_proj$/;
export const LORA_R = 4;

/** Host values, drawn once so every variant and backend holds the same model. */
export interface Fp8TinyHost {
  weights: Map<string, { shape: readonly number[]; values: Float32Array; fp8?: { bytes: Uint8Array; scale: number } }>;
  lora: Map<string, { a: Float32Array; b: Float32Array; in: number; out: number }>;
}

/** `random(n)` gives n values in [-1, 1) (each caller's own seeded generator). */
export function fp8TinyHost(random: (n: number) => Float32Array): Fp8TinyHost {
  const weights: Fp8TinyHost["weights"] = new Map();
  const lora: Fp8TinyHost["lora"] = new Map();
  for (const spec of expectedWeights(FP8_TINY_CONFIG)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const u = random(n);
    if (spec.shape.length === 1) {
      weights.set(spec.name, { shape: spec.shape, values: u.map((x) => 1 + 0.1 * x) });
      continue;
    }
    const values = u.map((x) => 0.12 * x);
    if (DECODER_LINEAR.test(spec.name)) {
      // Per-tensor scale as the FP8 checkpoints compute it: amax / 448, not a power of two.
      const scale = Math.fround(values.reduce((m, x) => Math.max(m, Math.abs(x)), 0) / FP8_E4M3_MAX);
      const bytes = f32ArrayToFp8E4m3(values, scale);
      weights.set(spec.name, { shape: spec.shape, values: fp8E4m3ArrayToF32(bytes, scale), fp8: { bytes, scale } });
    } else {
      // bf16-representable, so the f32 variant holds exactly what the bf16 ones do.
      weights.set(spec.name, { shape: spec.shape, values: bf16ArrayToF32(f32ArrayToBf16(values)) });
    }
    const path = spec.name.slice(0, -".weight".length);
    if (spec.linear && LORA_TARGET.test(path)) {
      const [out, inF] = spec.shape as [number, number];
      lora.set(path, { a: random(LORA_R * inF).map((x) => 0.3 * x), b: random(out * LORA_R).map((x) => 0.3 * x), in: inF, out });
    }
  }
  return { weights, lora };
}

/**
 * "fp8": the decoder linears as stored (fp8 + scale), the other matrices bf16, as in the FP8
 * checkpoint. "bf16": the decoder linears widened and rounded to bf16 as transformers'
 * dequantization writes them, the rest the same bf16. "f32": everything f32 with the same values
 * (fp8 · scale exactly, the bf16 ones widened). Norms are f32 in every variant.
 */
export type Fp8Variant = "fp8" | "f32" | "bf16";

export function buildFp8Tiny(b: Backend, host: Fp8TinyHost, variant: Fp8Variant, precision: MatmulPrecision): { model: Mistral3Model; loraTensors: Tensor[] } {
  const weights = new Map<string, Tensor>();
  for (const [name, w] of host.weights) {
    if (variant === "fp8" && w.fp8) weights.set(name, b.upload(w.fp8.bytes, w.shape, "fp8_e4m3", w.fp8.scale));
    else if (variant !== "f32" && w.shape.length > 1) weights.set(name, b.upload(f32ArrayToBf16(w.values), w.shape, "bf16"));
    else weights.set(name, b.upload(w.values, w.shape, "f32"));
  }
  const model = buildMistral3(FP8_TINY_CONFIG, weights, false, precision);
  const loraTensors: Tensor[] = [];
  for (const [path, pair] of host.lora) {
    const a = b.upload(pair.a, [LORA_R, pair.in], "f32");
    const bb = b.upload(pair.b, [pair.out, LORA_R], "f32");
    model.linears.get(path)!.lora = { a, b: bb, scale: 2, dropout: 0 };
    loraTensors.push(a, bb);
  }
  return { model, loraTensors };
}

/** Two rows: one with two images of different sizes, one text-only and padded; labels on some tokens. */
export function fp8TinyInputs(): Mistral3Inputs {
  const pixelValues = new Float32Array(2 * 3 * 56 * 28);
  for (let i = 0; i < pixelValues.length; i++) pixelValues[i] = Math.sin(i * 0.37);
  const images = { pixelValues, shape: [2, 3, 56, 28] as const, imageSizes: Int32Array.from([56, 28, 28, 28]) };
  const row0 = [1, 10, 12, 10, 13, 5, 10, 13, 6, 7];
  const row1 = [1, 5, 9, 20, 33, 7, 8, 2, 0, 0];
  return {
    batch: 2,
    seqLen: 10,
    inputIds: Int32Array.from([...row0, ...row1]),
    labels: Int32Array.from([-100, -100, -100, -100, -100, 5, -100, -100, 6, 7, 1, 5, 9, 20, 33, 7, 8, 2, -100, -100]),
    attentionMask: Int32Array.from([...row0.map(() => 1), 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),
    images,
  };
}

export interface Fp8StepResult {
  logits: Float32Array;
  loss: Float32Array;
  /** Every LoRA gradient, concatenated in the pairs' order (A then B per module). */
  loraGrads: Float32Array;
}

/** One checkpointed forward and backward with only the LoRA pairs trainable; frees the model. */
export function fp8TinyStep(b: Backend, host: Fp8TinyHost, variant: Fp8Variant, precision: MatmulPrecision): Fp8StepResult {
  const { model, loraTensors } = buildFp8Tiny(b, host, variant, precision);
  const graph = createGraph(b, { recording: true });
  const ctx = new ForwardContext(graph, { trainable: new Set(loraTensors) });
  try {
    const out = forwardMistral3(ctx, model, fp8TinyInputs(), { checkpointLayers: true });
    const logits = b.read(out.logits.value) as Float32Array;
    const loss = b.read(out.loss!.value) as Float32Array;
    graph.backward(out.loss!);
    const parts = loraTensors.map((t) => {
      const grad = ctx.varOf(t)?.grad;
      if (!grad) throw new Error("a LoRA tensor got no gradient");
      const values = b.read(grad) as Float32Array;
      grad.free();
      return values;
    });
    const loraGrads = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      loraGrads.set(p, at);
      at += p.length;
    }
    return { logits, loss, loraGrads };
  } finally {
    graph.dispose();
    ctx.release();
    for (const t of model.weights.values()) t.free();
    for (const t of loraTensors) t.free();
  }
}
