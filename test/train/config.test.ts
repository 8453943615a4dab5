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

test("TRL/PEFT keys: aliases, inert plumbing, keys splint takes elsewhere, and typos named with a suggestion", () => {
  const c = resolveConfig(TUTORIAL_DEFAULTS, { max_length: 1024, evaluation_strategy: "epoch", task_type: "CAUSAL_LM", bias: "none", modules_to_save: null, fp16: false, report_to: "none", label_names: ["labels"] }, "tutorial.yaml");
  assert.equal(c.max_seq_len, 1024);
  assert.equal(c.eval_strategy, "epoch");
  assert.deepEqual(c.report_to, []);
  assert.ok(!("bias" in c) && !("max_length" in c), "inert keys and aliases leave no trace");
  assert.deepEqual(resolveConfig(TUTORIAL_DEFAULTS, { report_to: "all" }, "f").report_to, ["tensorboard"]);
  const fails = (overrides: Record<string, unknown>, message: RegExp, hint?: RegExp) =>
    assert.throws(() => resolveConfig(TUTORIAL_DEFAULTS, overrides, "cfg.yaml"), (e: unknown) => {
      assert.ok(e instanceof InputError);
      assert.match(e.message, message);
      if (hint) assert.match(e.hint ?? "", hint);
      return true;
    });
  fails({ learning_rte: 1e-4 }, /cfg\.yaml: unknown setting "learning_rte"/, /did you mean "learning_rate"/);
  fails({ lora_alfa: 16 }, /unknown setting "lora_alfa"/, /did you mean "lora_alpha"/);
  fails({ output_dir: "x" }, /"output_dir" is not a setting in splint/, /--out DIR/);
  fails({ push_to_hub: true }, /"push_to_hub"/, /--push-to-hub/);
  fails({ bias: "all" }, /"bias" "all" is not supported \(splint trains the LoRA pairs only\)/, /"none"/);
  fails({ fp16: true }, /"fp16" true is not supported/, /false/);
  fails({ report_to: "wandb" }, /report_to "wandb" is not supported/, /wandb sync --sync-tensorboard/);
  fails({ max_length: 10, max_seq_len: 20 }, /"max_seq_len" and "max_length" both set max_seq_len|"max_length" and "max_seq_len" both set/);
  fails({ early_stopping_patience: 2 }, /needs evaluations to watch/);
  fails({ class_names: ["a", "a"] }, /"class_names" lists "a" twice/);
  fails({ warmup_steps: 5, warmup_ratio: 0.1 }, /both set/);
});

test("warmup_ratio: transformers' rule (steps win when above 0), and a ratio alone replaces the default 25 steps", async () => {
  const { warmupSteps } = await import("../../src/train/trainer.ts");
  const ratio = resolveConfig(TUTORIAL_DEFAULTS, { warmup_ratio: 0.1 }, "f");
  assert.equal(ratio.warmup_steps, 0);
  assert.equal(warmupSteps(ratio, 95), 10); // ceil(9.5)
  assert.equal(warmupSteps(TUTORIAL_DEFAULTS, 95), 25);
  // A resolved config (both keys, steps 0) resolves to itself.
  assert.deepEqual(resolveConfig(TUTORIAL_DEFAULTS, { ...ratio }, "f"), ratio);
});
