import assert from "node:assert/strict";
import { test } from "node:test";
import { parseAdapterConfig, targetedModules, adapterConfigJson } from "../../src/lora/adapter.ts";
import { resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { loraSettingsFor } from "../../src/train/run.ts";
import { tinyModel } from "../models/tiny-model.ts";

test("lora_scope narrows the tutorial's suffix targets to one tower, as a PEFT regex that survives adapter_config.json", () => {
  const paths = [...tinyModel().linears.keys()];
  const count = (scope: "all" | "language" | "vision") => {
    const settings = loraSettingsFor(resolveConfig(TUTORIAL_DEFAULTS, { lora_scope: scope }, "test"), null);
    // What PEFT (and splint) would select after a save and reload of the config.
    const reloaded = parseAdapterConfig(adapterConfigJson(settings), "adapter_config.json");
    return targetedModules(reloaded, paths);
  };
  assert.equal(count("all").length, 28);
  const language = count("language");
  assert.equal(language.length, 14);
  assert.ok(language.every((p) => p.startsWith("model.language_model.layers.")));
  const vision = count("vision");
  assert.equal(vision.length, 14);
  assert.ok(vision.every((p) => p.startsWith("model.vision_tower.transformer.layers.")));
});
