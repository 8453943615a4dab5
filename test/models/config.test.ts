import assert from "node:assert/strict";
import { test } from "node:test";
import { parseMistral3Config } from "../../src/models/mistral3/config.ts";
import { InputError } from "../../src/util/errors.ts";

// The 3B config as published (ministral3.md §1.1, §1.4, §1.5).
const ministral3b = {
  architectures: ["Mistral3ForConditionalGeneration"],
  model_type: "mistral3",
  image_token_index: 10,
  multimodal_projector_bias: false,
  projector_hidden_act: "gelu",
  spatial_merge_size: 2,
  vision_feature_layer: -1,
  text_config: {
    model_type: "ministral3",
    hidden_size: 3072,
    num_hidden_layers: 26,
    intermediate_size: 9216,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 128,
    vocab_size: 131072,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 262144,
    tie_word_embeddings: true,
    rope_parameters: {
      beta_fast: 32.0,
      beta_slow: 1.0,
      factor: 16.0,
      llama_4_scaling_beta: 0.1,
      mscale: 1.0,
      mscale_all_dim: 1.0,
      original_max_position_embeddings: 16384,
      rope_theta: 1000000.0,
      rope_type: "yarn",
      type: "yarn",
    },
  },
  vision_config: {
    attention_dropout: 0.0,
    head_dim: 64,
    hidden_act: "silu",
    hidden_size: 1024,
    image_size: 1540,
    intermediate_size: 4096,
    model_type: "pixtral",
    num_attention_heads: 16,
    num_channels: 3,
    num_hidden_layers: 24,
    patch_size: 14,
    rope_parameters: { rope_theta: 10000.0, rope_type: "default" },
    rope_theta: 10000.0,
  },
};

test("parses the Ministral 3 3B config with its YaRN block and vision hidden_act", () => {
  const c = parseMistral3Config(ministral3b);
  assert.equal(c.text_config.head_dim, 128);
  assert.equal(c.text_config.hidden_size, 3072);
  assert.equal(c.vision_config.hidden_act, "silu");
  assert.equal(c.vision_config.patch_size, 14);
  assert.equal(c.vision_config.head_dim, 64);
  assert.equal(c.tie_word_embeddings, true);
  assert.equal(c.quantization_config, null);
  const rope = c.text_config.rope;
  assert.equal(rope.rope_type, "yarn");
  if (rope.rope_type === "yarn") {
    assert.equal(rope.factor, 16);
    assert.equal(rope.original_max_position_embeddings, 16384);
    assert.equal(rope.llama_4_scaling_beta, 0.1);
    assert.equal(rope.mscale_all_dim, 1);
  }
});

test("v4-style rope_scaling + top-level rope_theta is read like rope_parameters", () => {
  const { rope_parameters, ...text } = ministral3b.text_config;
  const { rope_theta, ...scaling } = rope_parameters;
  const c = parseMistral3Config({ ...ministral3b, text_config: { ...text, rope_scaling: scaling, rope_theta: 1e9 } });
  assert.equal(c.text_config.rope.rope_theta, 1e9);
  assert.equal(c.text_config.rope.rope_type, "yarn");
  assert.equal(rope_theta, 1e6);
});

test("defaults follow transformers: plain mistral text, pixtral gelu vision, tied top level", () => {
  const c = parseMistral3Config({ model_type: "mistral3", text_config: { model_type: "mistral" }, vision_config: {} });
  assert.equal(c.text_config.rope.rope_type, "default");
  assert.equal(c.text_config.rope.rope_theta, 10000);
  assert.equal(c.text_config.rms_norm_eps, 1e-6);
  assert.equal(c.text_config.head_dim, 128); // hidden 4096 / 32 heads
  assert.equal(c.vision_config.hidden_act, "gelu");
  assert.equal(c.vision_config.patch_size, 16);
  assert.equal(c.tie_word_embeddings, true);
  assert.equal(c.image_token_index, 10);
});

test("fp8 quantization_config is accepted per tensor and refused block-wise", () => {
  const q = { quant_method: "fp8", activation_scheme: "static", weight_block_size: null, modules_to_not_convert: ["lm_head"] };
  assert.equal(parseMistral3Config({ ...ministral3b, quantization_config: q }).quantization_config?.quant_method, "fp8");
  assert.throws(() => parseMistral3Config({ ...ministral3b, quantization_config: { ...q, weight_block_size: [128, 128] } }), /block-wise/);
  assert.throws(() => parseMistral3Config({ ...ministral3b, quantization_config: { quant_method: "bitsandbytes" } }), InputError);
});

test("clear errors for unknown model types, activations and bad fields", () => {
  assert.throws(() => parseMistral3Config({ model_type: "llava" }, "m/config.json"), /m\/config.json: unsupported model_type "llava"/);
  assert.throws(() => parseMistral3Config({ ...ministral3b, text_config: { model_type: "qwen2" } }), /text_config.model_type "qwen2"/);
  assert.throws(
    () => parseMistral3Config({ ...ministral3b, vision_config: { ...ministral3b.vision_config, hidden_act: "relu" } }),
    /vision_config.hidden_act "relu"/,
  );
  assert.throws(
    () => parseMistral3Config({ ...ministral3b, text_config: { ...ministral3b.text_config, num_key_value_heads: 5 } }),
    /not a multiple of num_key_value_heads 5/,
  );
  assert.throws(
    () => parseMistral3Config({ ...ministral3b, text_config: { ...ministral3b.text_config, hidden_size: "big" } }),
    /text_config.hidden_size is "big"/,
  );
});
