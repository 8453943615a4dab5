import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import {
  adapterConfigJson,
  adapterKey,
  loraScopeExclude,
  initAdapter,
  loadAdapter,
  moduleRankAlpha,
  parseAdapterConfig,
  parseAdapterKey,
  saveAdapter,
  targetedModules,
  type LoraSettings,
} from "../../src/lora/adapter.ts";
import { Rng } from "../../src/util/rng.ts";
import { tinyModel } from "./tiny-model.ts";

const TUTORIAL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

function settings(overrides: Partial<LoraSettings> = {}): LoraSettings {
  return parseAdapterConfig({ r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: TUTORIAL_TARGETS, ...overrides }, "adapter_config.json");
}

test("the tutorial's target_modules hit the decoder and the vision tower, never the projector or head", () => {
  const model = tinyModel();
  const hit = targetedModules(settings(), model.linears.keys());
  // 2 decoder layers × 7 + 2 vision layers × 7
  assert.equal(hit.length, 28);
  assert.ok(hit.includes("model.language_model.layers.1.self_attn.q_proj"));
  assert.ok(hit.includes("model.vision_tower.transformer.layers.0.feed_forward.gate_proj"));
  assert.ok(!hit.some((p) => p.includes("multi_modal_projector") || p === "lm_head"));
  // A regex string is a full match (PEFT), e.g. language-only.
  const language = targetedModules(settings({ target_modules: String.raw`model\.language_model.*\.(q_proj|v_proj)` }), model.linears.keys());
  assert.equal(language.length, 4);
  assert.equal(targetedModules(settings({ target_modules: "all-linear" }), model.linears.keys()).length, model.linears.size - 1);
});

test("--lora-scope becomes a PEFT exclude_modules regex that splits decoder and vision tower", () => {
  const model = tinyModel();
  const language = targetedModules(settings({ exclude_modules: loraScopeExclude("language") }), model.linears.keys());
  const vision = targetedModules(settings({ exclude_modules: loraScopeExclude("vision") }), model.linears.keys());
  assert.equal(language.length, 14);
  assert.ok(language.every((p) => p.startsWith("model.language_model.")));
  assert.equal(vision.length, 14);
  assert.ok(vision.every((p) => p.startsWith("model.vision_tower.")));
  assert.equal(loraScopeExclude("all"), null);
  assert.equal(adapterConfigJson(settings({ exclude_modules: loraScopeExclude("language") })).exclude_modules, loraScopeExclude("language"));
});

test("rank_pattern / alpha_pattern override r and alpha per module; rslora scales by √r", () => {
  const s = settings({ rank_pattern: { "self_attn.q_proj": 2 }, alpha_pattern: { down_proj: 3 } });
  assert.deepEqual(moduleRankAlpha(s, "model.language_model.layers.0.self_attn.q_proj"), { r: 2, alpha: 8 });
  assert.deepEqual(moduleRankAlpha(s, "model.language_model.layers.0.mlp.down_proj"), { r: 4, alpha: 3 });
  assert.deepEqual(moduleRankAlpha(s, "model.vision_tower.transformer.layers.0.attention.q_proj"), { r: 4, alpha: 8 });
});

test("PEFT keys: legacy transformers prefixes resolve to the same module", () => {
  assert.deepEqual(parseAdapterKey("base_model.model.model.language_model.layers.0.mlp.up_proj.lora_A.weight"), {
    path: "model.language_model.layers.0.mlp.up_proj",
    which: "A",
  });
  assert.deepEqual(parseAdapterKey("base_model.model.language_model.model.layers.0.mlp.up_proj.lora_B.weight"), {
    path: "model.language_model.layers.0.mlp.up_proj",
    which: "B",
  });
  assert.deepEqual(parseAdapterKey("base_model.model.vision_tower.transformer.layers.1.attention.o_proj.lora_A.weight"), {
    path: "model.vision_tower.transformer.layers.1.attention.o_proj",
    which: "A",
  });
  assert.equal(parseAdapterKey("base_model.model.lm_head.weight"), null);
});

test("save then load reproduces every LoRA tensor; config round-trips", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-adapter-"));
  try {
    const source = tinyModel();
    const backend = source.text.embedTokens.backend;
    const s = settings({ use_rslora: true });
    initAdapter(s, source.linears, backend, new Rng(5));
    // Make B non-zero so the round trip checks real values.
    for (const l of source.linears.values()) if (l.lora) backend.addInPlace(l.lora.b, backend.upload(Float32Array.from({ length: l.lora.b.size }, (_, i) => Math.sin(i)), l.lora.b.shape, "f32"));
    await saveAdapter(dir, s, source.linears, backend);

    const target = tinyModel();
    const loaded = await loadAdapter(dir, target.linears, backend);
    assert.equal(loaded.use_rslora, true);
    assert.deepEqual(loaded.target_modules, TUTORIAL_TARGETS);
    for (const [path, l] of source.linears) {
      const other = target.linears.get(path)!;
      assert.equal(Boolean(other.lora), Boolean(l.lora), path);
      if (!l.lora) continue;
      assert.deepEqual(backend.read(other.lora!.a), backend.read(l.lora.a));
      assert.deepEqual(backend.read(other.lora!.b), backend.read(l.lora.b));
      assert.equal(other.lora!.scale, 8 / 2);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("an adapter of another architecture or with wrong shapes is refused with every problem listed", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-adapter-"));
  try {
    const model = tinyModel();
    const backend = model.text.embedTokens.backend;
    await writeFile(join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj"] }));
    const f32 = (shape: number[]) => ({ dtype: "F32" as const, shape, data: new Float32Array(shape[0]! * shape[1]!) });
    await writeSafetensors(join(dir, "adapter_model.safetensors"), [
      { name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", ...f32([4, 48]) },
      { name: adapterKey("model.language_model.layers.0.self_attn.q_proj", "A"), ...f32([4, 47]) },
      { name: adapterKey("model.language_model.layers.0.self_attn.q_proj", "B"), ...f32([64, 4]) },
    ]);
    await assert.rejects(loadAdapter(dir, model.linears, backend), (error: Error) => {
      assert.match(error.message, /match no linear layer of this model \(an adapter for another architecture\?\): base_model\.model\.model\.layers\.0/);
      assert.match(error.message, /lora_A\.weight is \[4,47\], expected \[4,48\]/);
      assert.match(error.message, /no LoRA weights for model\.vision_tower\.transformer\.layers\.0\.attention\.q_proj/);
      return true;
    });
    assert.ok([...model.linears.values()].every((l) => l.lora === null), "nothing attached after a refused adapter");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("unsupported PEFT options are refused, not ignored", () => {
  assert.throws(() => settings({ use_dora: true } as Partial<LoraSettings>), /use_dora/);
  assert.throws(() => parseAdapterConfig({ peft_type: "IA3", target_modules: ["q_proj"] }, "a.json"), /peft_type "IA3"/);
  assert.throws(() => parseAdapterConfig({ target_modules: ["q_proj"], modules_to_save: ["lm_head"] }, "a.json"), /modules_to_save/);
});
