import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { openSafetensors, toFloat32 } from "../../src/io/safetensors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { maxDiffOnTokens, readF32Tensors } from "../helpers/tensors.ts";

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "..", "..");
const F = join(ROOT, "test", "fixtures");

test("splint forward --adapter --grads writes logits, loss and PEFT-keyed gradients matching peft", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-forward-"));
  try {
    const out = join(dir, "out.safetensors");
    const grads = join(dir, "grads.safetensors");
    const { stdout } = await run(process.execPath, [
      join(ROOT, "bin", "splint.js"),
      "forward",
      "--model", join(F, "models", "tiny"),
      "--adapter", join(F, "lora", "tiny", "adapter"),
      "--inputs", join(F, "forward", "inputs", "images_multi.safetensors"),
      "--out", out,
      "--grads", grads,
      "--json",
    ], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });
    const result = JSON.parse(stdout) as { loss: number; batch: number; seqLen: number; vocab: number };
    assert.deepEqual([result.batch, result.seqLen, result.vocab], [2, 38, 1500]);
    const reference = await readF32Tensors(join(F, "lora", "tiny", "images_multi.out.safetensors"));
    assert.ok(Math.abs(result.loss - reference.get("loss")![0]!) < 1e-5);
    const written = await readF32Tensors(out);
    assert.ok(Math.abs(written.get("loss")![0]! - result.loss) < 1e-7);
    // images_multi has no padding inside the compared rows' real tokens: compare everything the mask keeps.
    const inputs = await openSafetensors(join(F, "forward", "inputs", "images_multi.safetensors"));
    const mask = toFloat32(await inputs.read("attention_mask"));
    await inputs.close();
    const worst = maxDiffOnTokens(written.get("logits")!, reference.get("logits")!, mask, 1500);
    assert.ok(worst < 1e-4, `max |Δlogits| ${worst}`);
    const g = await readF32Tensors(grads);
    const refGrads = await readF32Tensors(join(F, "lora", "tiny", "images_multi.grads.safetensors"));
    assert.deepEqual([...g.keys()].sort(), [...refGrads.keys()].sort());
    for (const [key, ref] of refGrads) {
      const got = g.get(key)!;
      const diff = ref.reduce((m, x, i) => Math.max(m, Math.abs(x - got[i]!)), 0);
      assert.ok(diff < 1e-4, `${key}: ${diff}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("splint forward --matmul bf16 reaches the linear layers: near the f32 logits, not equal to them", async () => {
  await withTempDir("splint-forward-", async (dir) => {
    const forward = async (matmul: string) => {
      const out = join(dir, `${matmul}.safetensors`);
      await run(process.execPath, [
        join(ROOT, "bin", "splint.js"),
        "forward",
        "--model", join(F, "models", "tiny"),
        "--inputs", join(F, "forward", "inputs", "images_multi.safetensors"),
        "--out", out,
        "--matmul", matmul,
      ], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });
      return (await readF32Tensors(out)).get("logits")!;
    };
    const exact = await forward("f32");
    const autocast = await forward("bf16");
    const worst = exact.reduce((m, x, i) => Math.max(m, Math.abs(x - autocast[i]!)), 0);
    assert.ok(worst > 0, "identical logits: --matmul bf16 changed nothing");
    assert.ok(worst < 0.1, `max |Δlogits| ${worst} (bf16 rounding of every linear input)`);
  });
});

test("splint forward names the file and the tensor when the inputs are wrong", async () => {
  await assert.rejects(
    run(process.execPath, [
      join(ROOT, "bin", "splint.js"),
      "forward",
      "--model", join(F, "models", "tiny"),
      "--inputs", join(F, "lora", "tiny", "images_multi.grads.safetensors"),
      "--out", join(tmpdir(), "never.safetensors"),
    ]),
    (error: { code: number; stderr: string }) => {
      assert.equal(error.code, 2);
      assert.match(error.stderr, /images_multi\.grads\.safetensors: 56 unexpected tensor\(s\): "base_model\.model\./);
      return true;
    },
  );
});

test("an image count that does not match the [IMG] tokens is reported with the inputs file", async () => {
  const { writeSafetensors, toInt32 } = await import("../../src/io/safetensors.ts");
  const dir = await mkdtemp(join(tmpdir(), "splint-forward-"));
  try {
    const source = await openSafetensors(join(F, "forward", "inputs", "images_multi.safetensors"));
    const tensorsIn = [];
    for (const key of source.keys()) {
      const t = await source.read(key);
      if (key === "input_ids") {
        const ids = toInt32(t);
        ids[ids.indexOf(10)] = 5; // one [IMG] slot fewer than the images need
        tensorsIn.push({ name: key, dtype: "I64" as const, shape: t.shape, data: BigInt64Array.from(ids, (v) => BigInt(v)) });
      } else tensorsIn.push({ name: key, dtype: t.dtype, shape: t.shape, data: t.data });
    }
    await source.close();
    const file = join(dir, "bad.safetensors");
    await writeSafetensors(file, tensorsIn);
    await assert.rejects(
      run(process.execPath, [join(ROOT, "bin", "splint.js"), "forward", "--model", join(F, "models", "tiny"), "--inputs", file, "--out", join(dir, "o.safetensors")], {
        env: { ...process.env, SPLINT_NO_PROGRESS: "1" },
      }),
      (error: { code: number; stderr: string }) => {
        assert.equal(error.code, 2);
        assert.match(error.stderr, /bad\.safetensors: tensor "input_ids": 15 \[IMG\] tokens \(id 10\) but the 3 image\(s\) give 16 features/);
        return true;
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
