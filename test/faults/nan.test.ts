// Defect 5: NaN is never swallowed. CPU attention keeps an all-NaN row NaN, predict refuses NaN
// scores (no "NaN%"), an adapter holding NaN is refused naming the tensor, and merge writes no NaN
// weights (nothing at all is written).
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { assertFiniteScores } from "../../src/eval/classify.ts";
import { openSafetensors, toFloat32, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.ts";
import { mergeAdapter } from "../../src/lora/merge.ts";
import { InputError, SplintError } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { runSplintAsync } from "./helpers/cli.ts";

const F = join(import.meta.dirname, "..", "fixtures");
const MODEL = join(F, "models", "tiny");
const ADAPTER = join(F, "lora", "tiny", "adapter");

/** Rewrites a safetensors file with `change` applied to the tensor named `key` (as f32). */
async function poison(file: string, key: string, change: (values: Float32Array) => void): Promise<void> {
  const source = await openSafetensors(file);
  const tensors: TensorToWrite[] = [];
  try {
    for (const name of source.keys()) {
      const stored = await source.read(name);
      const data = Float32Array.from(toFloat32(stored));
      if (name === key) change(data);
      tensors.push({ name, dtype: "F32", shape: stored.shape, data });
    }
  } finally {
    await source.close();
  }
  await writeSafetensors(file, tensors, { format: "pt" });
}

test("CPU attention: a row whose visible scores are all NaN stays NaN (it was zeros)", () => {
  const backend = createCpuBackend();
  const q = Float32Array.of(Number.NaN, Number.NaN, 1, 1);
  const kv = Float32Array.of(1, 1, 1, 1);
  const { out, lse } = backend.attention(backend.upload(q, [1, 2, 1, 2], "f32"), backend.upload(kv, [1, 2, 1, 2], "f32"), backend.upload(kv, [1, 2, 1, 2], "f32"), { kind: "causal", queryOffset: 0 }, 1);
  const values = Array.from(backend.read(out));
  assert.ok(values.slice(0, 2).every(Number.isNaN), `row 0 is NaN, got ${values.slice(0, 2).join(", ")}`);
  assert.deepEqual(values.slice(2), [1, 1], "the healthy row is untouched");
  assert.ok(Number.isNaN(backend.read(lse)[0]!));
});

test("class scores that are not finite are refused, naming the image", () => {
  assert.throws(
    () => assertFiniteScores([{ predicted: 0, answer: "a", match: "exact", scores: [-1, -2] }, { predicted: 0, answer: "a", match: "exact", scores: [Number.NaN, -1] }], ["ok.png", "bad.png"]),
    (e) => e instanceof SplintError && /bad\.png are not finite \(NaN\)/.test(e.message),
  );
});

test("an adapter holding NaN: predict and merge refuse it naming the tensor, and merge writes nothing", async () => {
  await withTempDir("splint-faults-nan-", async (dir) => {
    const adapter = join(dir, "adapter");
    await cp(ADAPTER, adapter, { recursive: true });
    const weights = join(adapter, "adapter_model.safetensors");
    const source = await openSafetensors(weights);
    const key = source.keys().find((k) => k.endsWith("lora_B.weight"))!;
    await source.close();
    await poison(weights, key, (v) => (v[3] = Number.NaN));

    const predict = await runSplintAsync(["predict", "--model", MODEL, "--adapter", adapter, "--classes", "a,b", join(F, "images", "gray_70x50.png")]);
    assert.equal(predict.status, 2, predict.stderr);
    assert.ok(predict.stderr.includes(`tensor ${key} holds NaN at index 3`), predict.stderr);
    assert.doesNotMatch(predict.stdout, /NaN%/);

    const out = join(dir, "merged");
    await assert.rejects(mergeAdapter({ modelDir: MODEL, adapterDir: adapter, outDir: out }), (e) => e instanceof InputError && e.message.includes(key));
    assert.ok(!existsSync(out));
  });
});

test("merge: a base weight that is NaN after the LoRA update is refused and no output folder appears", async () => {
  await withTempDir("splint-faults-nan-", async (dir) => {
    const model = join(dir, "model");
    await cp(MODEL, model, { recursive: true });
    const weights = join(model, "model.safetensors");
    const source = await openSafetensors(weights);
    const key = source.keys().find((k) => k.endsWith("q_proj.weight") && k.includes("language_model"))!;
    await source.close();
    await poison(weights, key, (v) => (v[0] = Number.POSITIVE_INFINITY));
    const out = join(dir, "merged");
    await assert.rejects(mergeAdapter({ modelDir: model, adapterDir: ADAPTER, outDir: out }), (e) => e instanceof InputError && e.message.includes(`weight ${key} is`) && /nothing was written/.test(e.message));
    assert.ok(!existsSync(out));
    assert.ok((await readFile(weights)).length > 0, "the input model is left as it was");
  });
});
