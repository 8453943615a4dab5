import assert from "node:assert/strict";
import { test } from "node:test";
import { parseMistral3Config } from "../../src/models/mistral3/config.ts";
import { canonicalName, expectedWeights, planWeights } from "../../src/models/mistral3/weights.ts";
import type { SafetensorsDType } from "../../src/io/safetensors.ts";

const config = parseMistral3Config({
  model_type: "mistral3",
  text_config: {
    model_type: "ministral3",
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 4,
    vocab_size: 20,
  },
  vision_config: { hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, patch_size: 2 },
});

/** The keys transformers writes (legacy prefixes), with their shapes. */
function legacyCheckpoint(): Map<string, { dtype: SafetensorsDType; shape: readonly number[] }> {
  const out = new Map<string, { dtype: SafetensorsDType; shape: readonly number[] }>();
  for (const spec of expectedWeights(config)) {
    const key = spec.name
      .replace(/^lm_head\./, "language_model.lm_head.")
      .replace(/^model\.language_model\./, "language_model.model.")
      .replace(/^model\.vision_tower\./, "vision_tower.")
      .replace(/^model\.multi_modal_projector\./, "multi_modal_projector.");
    out.set(key, { dtype: "BF16", shape: spec.shape });
  }
  return out;
}

function plan(keys: Map<string, { dtype: SafetensorsDType; shape: readonly number[] }>) {
  return planWeights(config, [...keys.keys()], (k) => keys.get(k)!, "ckpt");
}

test("legacy and new prefixes resolve to the same canonical names", () => {
  assert.equal(canonicalName("language_model.model.layers.3.mlp.up_proj.weight"), "model.language_model.layers.3.mlp.up_proj.weight");
  assert.equal(canonicalName("model.language_model.layers.3.mlp.up_proj.weight"), "model.language_model.layers.3.mlp.up_proj.weight");
  assert.equal(canonicalName("language_model.lm_head.weight"), "lm_head.weight");
  assert.equal(canonicalName("vision_tower.ln_pre.weight"), "model.vision_tower.ln_pre.weight");
  assert.equal(canonicalName("multi_modal_projector.linear_1.weight"), "model.multi_modal_projector.linear_1.weight");
  assert.equal(canonicalName("lm_head.weight"), "lm_head.weight");
});

test("a complete legacy checkpoint plans every tensor; without lm_head the head is tied", () => {
  const keys = legacyCheckpoint();
  const full = plan(keys);
  assert.equal(full.tiedHead, false);
  assert.equal(full.tensors.length, expectedWeights(config).length);
  keys.delete("language_model.lm_head.weight");
  const tied = plan(keys);
  assert.equal(tied.tiedHead, true);
  assert.equal(tied.tensors.length, expectedWeights(config).length - 1);
});

test("missing, unexpected and mis-shaped tensors are reported together", () => {
  const keys = legacyCheckpoint();
  keys.delete("language_model.model.layers.0.mlp.up_proj.weight");
  keys.set("language_model.model.layers.0.mlp.extra.weight", { dtype: "BF16", shape: [2] });
  keys.set("vision_tower.ln_pre.weight", { dtype: "BF16", shape: [9] });
  assert.throws(
    () => plan(keys),
    (error: Error) => {
      assert.match(error.message, /^ckpt: /);
      assert.match(error.message, /1 missing:\n  model\.language_model\.layers\.0\.mlp\.up_proj\.weight/);
      assert.match(error.message, /1 unexpected:\n  language_model\.model\.layers\.0\.mlp\.extra\.weight/);
      assert.match(error.message, /vision_tower\.ln_pre\.weight is \[9\], the config implies \[8\]/);
      return true;
    },
  );
});

test("fp8 weights need their weight_scale_inv; activation_scale is ignored; fp8 norms are refused", () => {
  const keys = legacyCheckpoint();
  const q = "language_model.model.layers.0.self_attn.q_proj";
  keys.set(`${q}.weight`, { dtype: "F8_E4M3", shape: [8, 8] });
  assert.throws(() => plan(keys), /q_proj\.weight_scale_inv \(scale of an F8_E4M3 weight\)/);
  keys.set(`${q}.weight_scale_inv`, { dtype: "F32", shape: [] });
  keys.set(`${q}.activation_scale`, { dtype: "F32", shape: [] });
  const p = plan(keys);
  const planned = p.tensors.find((t) => t.key === `${q}.weight`);
  assert.equal(planned?.scaleKey, `${q}.weight_scale_inv`);
  assert.deepEqual(p.ignored, [`${q}.activation_scale`]);
  keys.set("language_model.model.norm.weight", { dtype: "F8_E4M3", shape: [8] });
  assert.throws(() => plan(keys), /language_model\.model\.norm\.weight is F8_E4M3/);
});

test("the same tensor under both prefixes is an error, not a silent pick", () => {
  const keys = legacyCheckpoint();
  keys.set("model.vision_tower.ln_pre.weight", { dtype: "BF16", shape: [8] });
  assert.throws(() => plan(keys), /both the legacy and the new name:\n  vision_tower\.ln_pre\.weight and model\.vision_tower\.ln_pre\.weight/);
});
