import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { parse as parseYaml } from "yaml";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { readTrainingPrompt } from "../../src/lora/training-prompt.ts";
import { readMetrics } from "../../src/metrics/run-metrics.ts";
import { runEvaluation } from "../../src/eval/evaluate.ts";
import { predictImages } from "../../src/eval/predict.ts";
import { readConfigFile } from "../../src/train/config.ts";
import { FIXTURES } from "./fixture-batches.ts";
import { runTraining } from "../../src/train/run.ts";
import { shouldStopEarly } from "../../src/train/trainer.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { readEvents } from "../helpers/tfevents-reader.ts";
import { quiet } from "./quiet-output.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "./tiny-dataset.ts";

function withValidation() {
  const d = tinyDataset();
  return { ...d, splits: new Map([...d.splits, ["validation", d.splits.get("train")!.slice(0, 3)]]) };
}

test("a run with eval_strategy steps writes metrics.jsonl, TensorBoard events, the prompt record and a model card", async () => {
  await withTempDir("splint-metrics-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, withValidation(), "arrow");
    const out = join(root, "run");
    const result = await runTraining({
      modelDir: TINY_MODEL,
      dataset,
      outDir: out,
      config: { ...TINY_RECIPE, save_strategy: "no", eval_strategy: "steps", eval_steps: 2, per_device_eval_batch_size: 2, class_names: ["avulsion", "comminuted"], prompt: "Which fracture? One of: {classes}." },
      output: quiet,
    });
    assert.equal(result.steps, 6);

    // metrics.jsonl: a training entry every step (logging_steps 1), an eval entry at steps 2, 4, 6.
    const entries = await readMetrics(result.metricsFile);
    const train = entries.filter((e) => "loss" in e);
    const evals = entries.filter((e) => "eval_loss" in e);
    assert.deepEqual(train.map((e) => e.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(evals.map((e) => e.step), [2, 4, 6]);
    for (const e of train) assert.ok("learning_rate" in e && "grad_norm" in e && Number.isFinite(e.loss));
    for (const e of result.evaluations) {
      assert.ok(e.eval_loss > 0 && Number.isFinite(e.eval_loss));
      assert.ok(e.eval_accuracy >= 0 && e.eval_accuracy <= 1);
      assert.equal(e.eval_samples, 3);
    }
    assert.deepEqual(result.history.map((h) => h.loss), train.map((e) => ("loss" in e ? e.loss : NaN)));

    // TensorBoard: one event file whose scalars are the same numbers.
    const tbDir = join(out, "tensorboard");
    const files = readdirSync(tbDir);
    assert.equal(files.length, 1);
    const events = readEvents(await readFile(join(tbDir, files[0]!)));
    assert.equal(events[0]!.fileVersion, "brain.Event:2");
    const lossPoints = events.filter((e) => "train/loss" in e.scalars).map((e) => [e.step, e.scalars["train/loss"]]);
    assert.deepEqual(lossPoints, train.map((e) => [e.step, Math.fround("loss" in e ? e.loss : NaN)]));
    assert.deepEqual(events.filter((e) => "eval/accuracy" in e.scalars).map((e) => e.step), [2, 4, 6]);

    // The prompt and template are recorded, with the taught names.
    const recorded = await readTrainingPrompt(result.adapterDir);
    assert.ok(recorded);
    assert.equal(recorded.record.prompt, "Which fracture? One of: avulsion, comminuted.");
    assert.deepEqual(recorded.record.classNames, ["avulsion", "comminuted"]);
    assert.equal(recorded.record.template, "short");

    // eval and predict ask the adapter that way without being told: its names, prompt and template.
    const evaluated = await runEvaluation({ model: TINY_MODEL, adapter: result.adapterDir, dataset, split: "validation", mode: "score", batchSize: 3, maxNewTokens: 4, out: join(root, "eval"), output: quiet });
    assert.deepEqual(evaluated.summary.classNames, ["avulsion", "comminuted"]);
    assert.equal(evaluated.summary.template, "short");
    const image = join(FIXTURES, "images", "gray_70x50.png");
    const [predicted] = await predictImages({ model: TINY_MODEL, adapter: result.adapterDir, images: [image], mode: "score", maxNewTokens: 4, batchSize: 1, output: quiet });
    assert.deepEqual(Object.keys(predicted!.probabilities!).sort(), ["avulsion", "comminuted"]);
    // The prompt really is the recorded one: a different prompt gives different scores.
    const [other] = await predictImages({ model: TINY_MODEL, adapter: result.adapterDir, images: [image], mode: "score", maxNewTokens: 4, batchSize: 1, prompt: null, output: quiet });
    assert.notDeepEqual(other!.probabilities, predicted!.probabilities);

    // Model card: PEFT's front matter, the settings, the evaluations, the clinical-use line.
    const card = await readFile(result.modelCard, "utf8");
    const match = /^---\n([\s\S]*?)\n---\n/.exec(card);
    assert.ok(match, "front matter");
    const front = parseYaml(match[1]!) as Record<string, unknown>;
    assert.equal(front.library_name, "peft");
    assert.equal(front.pipeline_tag, "image-text-to-text");
    assert.equal(front.base_model, "tiny");
    assert.ok((front.tags as string[]).includes("base_model:adapter:tiny") && (front.tags as string[]).includes("lora"));
    assert.match(card, /Not for clinical use/);
    assert.match(card, /\| r \/ lora_alpha \/ lora_dropout \| 4 \/ 8 \/ 0\.1 \|/);
    assert.match(card, /## Evaluation during training/);
    assert.equal((card.match(/^\| [246] \| /gm) ?? []).length, 3);
  });
});

test("the tutorial's hyper-parameters as TRL/PEFT keys train the same adapter as splint's own keys", async () => {
  await withTempDir("splint-trl-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    // The tutorial's LoraConfig and SFTConfig, key for key (its output_dir and push_to_hub are
    // options of `splint train`, --out and --push-to-hub), shortened to 2 steps on the tiny model.
    const trl = join(root, "trl.yaml");
    await writeFile(
      trl,
      [
        "task_type: CAUSAL_LM",
        "r: 16",
        "lora_alpha: 32",
        "lora_dropout: 0.05",
        'bias: "none"',
        "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
        "modules_to_save: null",
        "num_train_epochs: 1",
        "per_device_train_batch_size: 2",
        "per_device_eval_batch_size: 2",
        "gradient_accumulation_steps: 4",
        "gradient_checkpointing: true",
        "optim: adamw_torch",
        "logging_steps: 0.1",
        "save_strategy: epoch",
        "learning_rate: 2.0e-4",
        "bf16: false",
        "fp16: false",
        "max_grad_norm: 0.3",
        "warmup_ratio: 0.5",
        "lr_scheduler_type: linear",
        "report_to: none",
        "gradient_checkpointing_kwargs: {use_reentrant: false}",
        "dataset_kwargs: {skip_prepare_dataset: true}",
        "remove_unused_columns: false",
        "label_names: [labels]",
        "max_length: 2048",
        "max_steps: 2",
        "",
      ].join("\n"),
    );
    const ours = { r: 16, lora_alpha: 32, lora_dropout: 0.05, per_device_train_batch_size: 2, gradient_accumulation_steps: 4, learning_rate: 2e-4, bf16: false, max_grad_norm: 0.3, warmup_steps: 1, report_to: [], max_seq_len: 2048, max_steps: 2 };
    const a = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "a"), config: await readConfigFile(trl), configSource: trl, output: quiet });
    const b = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "b"), config: ours, output: quiet });
    const bytes = async (dir: string) => readFile(join(dir, "adapter_model.safetensors"));
    assert.ok((await bytes(a.adapterDir)).equals(await bytes(b.adapterDir)), "same adapter bytes");
    const resolved = JSON.parse(await readFile(a.configFile, "utf8")) as Record<string, unknown>;
    assert.equal(resolved.warmup_steps, 0, "warmup_ratio replaced the default warm-up steps");
    assert.deepEqual(resolved.report_to, []);
    assert.deepEqual(readdirSync(a.runDir).includes("tensorboard"), false, "report_to none writes no event files");
  });
});

test("early stopping follows EarlyStoppingCallback: patience counts evaluations without improvement", () => {
  const e = (eval_loss: number, eval_accuracy = 0) => ({ step: 0, epoch: 0, eval_loss, eval_accuracy, eval_samples: 1, eval_runtime: 0 });
  assert.equal(shouldStopEarly([e(3), e(2), e(2.5)], "eval_loss", 2), false);
  assert.equal(shouldStopEarly([e(3), e(2), e(2.5), e(2)], "eval_loss", 2), true, "equal is no improvement");
  assert.equal(shouldStopEarly([e(1, 0.5), e(1, 0.4), e(1, 0.6)], "eval_accuracy", 2), false);
  assert.equal(shouldStopEarly([e(1, 0.5), e(1, 0.4)], "eval_accuracy", 1), true);
  assert.equal(shouldStopEarly([e(1), e(2), e(3)], "eval_loss", 0), false, "patience 0 never stops");
});

test("early stopping ends the run when the watched metric stops improving, and the card says so", async () => {
  await withTempDir("splint-early-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, withValidation(), "arrow");
    // A learning rate too small to change any answer: accuracy stays put, so the second
    // evaluation is no improvement and patience 1 stops the run there.
    const result = await runTraining({
      modelDir: TINY_MODEL,
      dataset,
      outDir: join(root, "run"),
      config: { ...TINY_RECIPE, learning_rate: 1e-12, save_strategy: "no", eval_strategy: "steps", eval_steps: 1, early_stopping_patience: 1, metric_for_best_model: "eval_accuracy" },
      output: quiet,
    });
    assert.equal(result.stoppedEarly, 2);
    assert.equal(result.steps, 2);
    assert.equal(result.history.length, 2);
    assert.match(await readFile(result.modelCard, "utf8"), /2 optimizer steps \(early stopping at step 2\)/);
  });
});
