import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { writeSafetensors, writeShardedCheckpoint, type TensorToWrite } from "../../src/io/safetensors.ts";
import type { Mistral3Config } from "../../src/models/mistral3/config.ts";
import { expectedWeights } from "../../src/models/mistral3/weights.ts";
import { f32ArrayToBf16 } from "../../src/tensor/bf16.ts";
import { f32ArrayToFp8E4m3 } from "../../src/tensor/fp8.ts";
import { Rng } from "../../src/util/rng.ts";

/** Host weights of a random model by canonical name. */
export function randomHostWeights(config: Mistral3Config, seed: number): Map<string, { shape: readonly number[]; data: Float32Array }> {
  const rng = new Rng(seed);
  const out = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const spec of expectedWeights(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const isNorm = spec.shape.length === 1;
    const data = Float32Array.from({ length: size }, () => (isNorm ? 1 : 0) + (isNorm ? 0.1 : 0.08) * (2 * rng.next() - 1) * 1.7);
    out.set(spec.name, { shape: spec.shape, data });
  }
  return out;
}

const toLegacy = (name: string) =>
  name
    .replace(/^lm_head\./, "language_model.lm_head.")
    .replace(/^model\.language_model\./, "language_model.model.")
    .replace(/^model\.vision_tower\./, "vision_tower.")
    .replace(/^model\.multi_modal_projector\./, "multi_modal_projector.");

/**
 * Writes a checkpoint folder: config.json plus weights in the requested layout. `fp8` stores the
 * 7 decoder linears per layer as F8_E4M3 with a 0-d F32 weight_scale_inv (and an activation_scale),
 * like the FP8 Instruct checkpoints.
 */
export async function writeCheckpoint(
  dir: string,
  rawConfig: Record<string, unknown>,
  weights: Map<string, { shape: readonly number[]; data: Float32Array }>,
  layout: { prefixes: "legacy" | "new"; dtype: "F32" | "BF16"; tied?: boolean; fp8?: boolean; shardBytes?: number },
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "config.json"), JSON.stringify(rawConfig));
  const tensors: TensorToWrite[] = [];
  for (const [name, { shape, data }] of weights) {
    if (layout.tied && name === "lm_head.weight") continue;
    const key = layout.prefixes === "legacy" ? toLegacy(name) : name;
    const isDecoderLinear = /^model\.language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(name);
    if (layout.fp8 && isDecoderLinear) {
      let max = 0;
      for (const x of data) max = Math.max(max, Math.abs(x));
      const scale = max / 448;
      tensors.push({ name: key, dtype: "F8_E4M3", shape, data: f32ArrayToFp8E4m3(data, scale) });
      tensors.push({ name: key.replace(/weight$/, "weight_scale_inv"), dtype: "F32", shape: [], data: Float32Array.of(scale) });
      tensors.push({ name: key.replace(/weight$/, "activation_scale"), dtype: "F32", shape: [], data: Float32Array.of(0.5) });
    } else if (layout.dtype === "BF16") {
      tensors.push({ name: key, dtype: "BF16", shape, data: f32ArrayToBf16(data) });
    } else {
      tensors.push({ name: key, dtype: "F32", shape, data });
    }
  }
  if (layout.shardBytes) await writeShardedCheckpoint(dir, tensors, layout.shardBytes);
  else await writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
}
