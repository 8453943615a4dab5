import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { readConfigFile, resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { InputError } from "../../src/util/errors.ts";

test("defaults are the tutorial's LoraConfig and SFTConfig", () => {
  const c = TUTORIAL_DEFAULTS;
  assert.deepEqual([c.r, c.lora_alpha, c.lora_dropout], [16, 32, 0.05]);
  assert.deepEqual([c.per_device_train_batch_size, c.gradient_accumulation_steps, c.num_train_epochs], [2, 4, 1]);
  assert.deepEqual([c.learning_rate, c.max_grad_norm, c.warmup_steps, c.lr_scheduler_type], [2e-4, 0.3, 25, "linear"]);
  assert.deepEqual(c.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]);
});

test("a YAML file overrides defaults and is type-checked with the file named in errors", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-cfg-"));
  const good = join(dir, "good.yaml");
  await writeFile(good, "r: 8\nlearning_rate: 1.0e-3\ntarget_modules: [q_proj, v_proj]\nloss_on: all\n");
  const c = resolveConfig(TUTORIAL_DEFAULTS, await readConfigFile(good), good);
  assert.equal(c.r, 8);
  assert.equal(c.learning_rate, 1e-3);
  assert.deepEqual(c.target_modules, ["q_proj", "v_proj"]);
  assert.equal(c.loss_on, "all");
  assert.equal(c.lora_alpha, 32);

  const bad = join(dir, "bad.yaml");
  await writeFile(bad, "r: 2.5\n");
  await assert.rejects(async () => resolveConfig(TUTORIAL_DEFAULTS, await readConfigFile(bad), bad), (e: unknown) => {
    assert.ok(e instanceof InputError);
    assert.match(e.message, /bad\.yaml: "r" must be an integer/);
    return true;
  });
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { lr: 1 }, "flags"), /unknown setting "lr"/);
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { loss_on: "prompt" }, "flags"), /one of completion, all/);
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { lora_dropout: 1 }, "flags"), /lora_dropout/);
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { adam_beta2: 1 }, "flags"), /flags: "adam_beta2" must be in \[0, 1\)/);
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { warmup_steps: -1 }, "flags"), /"warmup_steps" must not be negative/);
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { num_train_epochs: 0 }, "flags"), /"num_train_epochs" must be positive/);
  assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, { save_strategy: "steps" }, "flags"), /save_strategy "steps" needs "save_steps" above 0/);
  const listFile = join(dir, "list.yaml");
  await writeFile(listFile, "- 1\n- 2\n");
  await assert.rejects(readConfigFile(listFile), /expected a mapping/);
});
