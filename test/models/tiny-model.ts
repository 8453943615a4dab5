import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { parseMistral3Config, type Mistral3Config } from "../../src/models/mistral3/config.ts";
import { buildMistral3, type Mistral3Model } from "../../src/models/mistral3/model.ts";
import { expectedWeights } from "../../src/models/mistral3/weights.ts";
import type { Backend, MatmulPrecision } from "../../src/tensor/backend.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { Rng } from "../../src/util/rng.ts";

/** A random Mistral3 small enough for unit tests (the fixtures' sizes: vision 32, text 48). */
export function tinyConfig(overrides: { text?: Record<string, unknown>; top?: Record<string, unknown> } = {}): Mistral3Config {
  return parseMistral3Config({
    model_type: "mistral3",
    image_token_index: 10,
    spatial_merge_size: 2,
    ...overrides.top,
    text_config: {
      model_type: "ministral3",
      hidden_size: 48,
      intermediate_size: 96,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      vocab_size: 64,
      rope_parameters: {
        rope_type: "yarn",
        rope_theta: 1e6,
        factor: 16,
        original_max_position_embeddings: 8,
        beta_fast: 32,
        beta_slow: 1,
        mscale: 1,
        mscale_all_dim: 1,
        llama_4_scaling_beta: 0.1,
      },
      ...overrides.text,
    },
    vision_config: {
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      patch_size: 14,
      hidden_act: "silu",
    },
  });
}

function normal(rng: Rng): number {
  const u = Math.max(rng.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

export function randomTensor(backend: Backend, shape: readonly number[], rng: Rng, std: number, mean = 0): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return backend.upload(Float32Array.from({ length: size }, () => mean + std * normal(rng)), shape, "f32");
}

export function tinyModel(config = tinyConfig(), seed = 1, backend = createCpuBackend(), precision: MatmulPrecision = "f32"): Mistral3Model {
  const rng = new Rng(seed);
  const weights = new Map<string, Tensor>();
  for (const spec of expectedWeights(config)) {
    const isNorm = spec.shape.length === 1;
    weights.set(spec.name, randomTensor(backend, spec.shape, rng, isNorm ? 0.1 : 0.08, isNorm ? 1 : 0));
  }
  return buildMistral3(config, weights, false, precision);
}
