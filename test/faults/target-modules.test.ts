// Defect 7: target_modules as PEFT matches it (check_target_module_exists): a list matches module
// names by suffix at a dot boundary, a string is one regex that must match the whole name; a bad
// regex is an input error naming the file and field (it was an internal error, exit 70).
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { adapterConfigJson, parseAdapterConfig, targetedModules } from "../../src/lora/adapter.ts";
import { pythonRegexToJs } from "../../src/lora/module-pattern.ts";
import { readConfigFile, resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { loraSettingsFor } from "../../src/train/run.ts";
import { EXIT, InputError } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { runSplintAsync } from "./helpers/cli.ts";

const PATHS = [
  "model.language_model.layers.0.self_attn.q_proj",
  "model.language_model.layers.0.self_attn.xq_proj",
  "model.language_model.layers.0.mlp.up_proj",
  "model.vision_tower.transformer.layers.0.attention.q_proj",
  "lm_head",
];
const pick = (target_modules: string[] | string, exclude_modules: string[] | string | null = null) => targetedModules({ target_modules, exclude_modules }, PATHS);

test("a list matches whole names or dot-separated suffixes, never a partial word", () => {
  assert.deepEqual(pick(["q_proj"]), ["model.language_model.layers.0.self_attn.q_proj", "model.vision_tower.transformer.layers.0.attention.q_proj"]);
  assert.deepEqual(pick(["self_attn.q_proj"]), ["model.language_model.layers.0.self_attn.q_proj"]);
  assert.deepEqual(pick(["lm_head"]), ["lm_head"]);
});

test("a string is a full-match regex: no implicit suffix, no partial match", () => {
  assert.deepEqual(pick("q_proj"), [], "re.fullmatch('q_proj', path) is false for every dotted path");
  assert.deepEqual(pick(String.raw`.*language_model.*\.(q_proj|up_proj)`), ["model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.0.mlp.up_proj"]);
  assert.deepEqual(pick("all-linear"), PATHS.slice(0, 4));
  // Python spellings translate: named groups.
  assert.equal(pythonRegexToJs("(?P<m>q|v)_proj(?P=m)"), "(?<m>q|v)_proj\\k<m>");
  assert.deepEqual(pick(String.raw`.*\.(?P<name>q_proj)`), ["model.language_model.layers.0.self_attn.q_proj", "model.vision_tower.transformer.layers.0.attention.q_proj"]);
});

test("a regex string in a config file stays one regex (it was split on commas) and survives adapter_config.json", async () => {
  await withTempDir("splint-faults-modules-", async (dir) => {
    const file = join(dir, "train.yaml");
    await writeFile(file, 'target_modules: ".*\\\\.(q|up){1,2}_proj"\nlora_scope: language\n');
    const config = resolveConfig(TUTORIAL_DEFAULTS, await readConfigFile(file), file);
    assert.equal(config.target_modules, String.raw`.*\.(q|up){1,2}_proj`);
    const settings = parseAdapterConfig(adapterConfigJson(loraSettingsFor(config, null)), "adapter_config.json");
    assert.deepEqual(targetedModules(settings, PATHS), ["model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.0.mlp.up_proj"], "scope language excludes the vision tower");
  });
});

test("a bad regex is an input error naming the file and field, in a config, an adapter, and through the CLI (exit 2, not 70)", async () => {
  await withTempDir("splint-faults-modules-", async (dir) => {
    assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { target_modules: "(q_proj" }, "train.yaml"), (e) => e instanceof InputError && /^train\.yaml \(target_modules\): "\(q_proj" is not a valid regular expression/.test(e.message));
    assert.throws(() => parseAdapterConfig({ target_modules: ".*", rank_pattern: { "[": 4 } }, "a/adapter_config.json"), (e) => e instanceof InputError && /a\/adapter_config\.json \(rank_pattern\)/.test(e.message));
    const adapter = join(dir, "adapter");
    await mkdir(adapter);
    await writeFile(join(adapter, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: "model.*(q_proj" }));
    await writeFile(join(adapter, "adapter_model.safetensors"), "");
    const run = await runSplintAsync(["merge", "--model", join(import.meta.dirname, "..", "fixtures", "models", "tiny"), "--adapter", adapter, "--out", join(dir, "merged")]);
    assert.equal(run.status, EXIT.usage, run.stderr);
    assert.match(run.stderr, /adapter_config\.json \(target_modules\): "model\.\*\(q_proj" is not a valid regular expression/);
    assert.doesNotMatch(run.stderr, /internal error/);
    const train = await runSplintAsync(["train", "--model", "m", "--dataset", "d", "--out", join(dir, "run"), "--target-modules", "(q|v_proj"]);
    assert.equal(train.status, EXIT.usage, train.stderr);
    assert.match(train.stderr, /target_modules\): "\(q\|v_proj" is not a valid regular expression/);
  });
});
