import assert from "node:assert/strict";
import { cp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createOutput } from "../../src/cli/output.ts";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { synthesizeDatasetDict } from "../../src/data/synth.ts";
import { runCalibration } from "../../src/eval/calibrate.ts";
import { readCalibrationFile } from "../../src/eval/calibration-file.ts";
import { runEvaluation } from "../../src/eval/evaluate.ts";
import { openSafetensors, toFloat32, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.ts";
import { InputError } from "../../src/util/errors.ts";
import { REPO_ROOT } from "../helpers/cli.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

process.env.SPLINT_NO_PROGRESS = "1";
const quiet = { ...createOutput(true), log() {} };

/** The tiny fixture model with its output projection multiplied by 32: the same ranking of answers, far sharper probabilities. */
async function overConfidentModel(dir: string): Promise<void> {
  await cp(join(REPO_ROOT, "test/fixtures/models/tiny"), dir, { recursive: true });
  const file = join(dir, "model.safetensors");
  const source = await openSafetensors(file);
  const tensors: TensorToWrite[] = [];
  for (const name of source.keys()) {
    const t = await source.read(name);
    if (name === "language_model.lm_head.weight") tensors.push({ name, dtype: "F32", shape: t.shape, data: toFloat32(t).map((x) => 32 * x) });
    else tensors.push({ name, dtype: t.dtype, shape: t.shape, data: t.data });
  }
  await source.close();
  await writeSafetensors(file, tensors);
}

test("temperature scaling fitted on validation lowers the validation NLL of an over-confident tiny model, and eval applies it", async () => {
  await withTempDir("splint-temperature-", async (dir) => {
    const model = join(dir, "model");
    await overConfidentModel(model);
    const synth = await synthesizeDatasetDict({ perClass: 2, testPerClass: 1, seed: 9, size: 32 });
    const dataset = join(dir, "ds");
    await saveDatasetDict(dataset, { classNames: synth.classNames, splits: new Map([["validation", synth.splits.get("train")!], ["test", synth.splits.get("test")!]]) }, "arrow");
    const common = { model, dataset, batchSize: 10, maxNewTokens: 8, template: "short", output: quiet };
    const file = join(dir, "calibration.json");

    await assert.rejects(runCalibration({ ...common, split: "test", out: file }), (e: unknown) => e instanceof InputError && /--split/.test(e.message));

    const { calibration } = await runCalibration({ ...common, split: "validation", out: file });
    // A random model is right about one time in ten, while scores 32 times too sharp put nearly all
    // the probability on one class. Its ranking carries no information, so the best temperature is
    // as high as the search goes and the NLL falls to about that of a uniform guess, ln 10; the
    // synthetic-logit test and the demo (a trained model) check fits that stop inside the range.
    assert.ok(calibration.temperature > 2, `T = ${calibration.temperature}`);
    assert.ok(calibration.nll.before > 10, JSON.stringify(calibration.nll));
    assert.ok(calibration.nll.after < calibration.nll.before && calibration.nll.after <= Math.log(10) + 0.05, JSON.stringify(calibration.nll));
    assert.ok(calibration.ece.after < calibration.ece.before, JSON.stringify(calibration.ece));
    assert.equal(calibration.fittedOn.n, 20);
    assert.deepEqual(await readCalibrationFile(file), calibration);

    // Eval with the file applies T: the same validation images give the fitted NLL at T, the raw one at 1.
    const run = await runEvaluation({ ...common, split: "validation", mode: "score", calibration: file, out: join(dir, "eval") });
    const c = run.summary.calibration!;
    assert.equal(c.temperature, calibration.temperature);
    assert.ok(Math.abs(c.raw.nll - calibration.nll.before) < 1e-9);
    assert.ok(Math.abs(c.scaled!.nll - calibration.nll.after) < 1e-9);
    const lines = (await readFile(join(dir, "eval/predictions.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { confidence: number });
    assert.ok(lines.every((p) => p.confidence > 0 && p.confidence <= 1));
  });
});
