import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { readForwardInputs } from "../../src/cli/commands/forward.ts";
import { openCheckpoint, openSafetensors, toBf16Bits, toFloat32, toFp8Bytes } from "../../src/io/safetensors.ts";
import { mergeAdapter } from "../../src/lora/merge.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { bf16ToF32, f32ToBf16 } from "../../src/tensor/bf16.ts";
import { FP8_E4M3_TABLE } from "../../src/tensor/fp8.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { maxDiffOnTokens } from "../helpers/tensors.ts";

const F = join(import.meta.dirname, "..", "fixtures");
const backend = createCpuBackend();

/** Largest |Δ| of the merged model's logits against peft's (unmerged) ones, on real tokens. */
async function logitsDiff(modelDir: string, reference: string): Promise<number> {
  const model = await loadMistral3(modelDir, backend, { dtype: "f32" });
  const inputs = await readForwardInputs(join(F, "forward", "inputs", "images_multi.safetensors"));
  const graph = createGraph(backend, { recording: false });
  const ctx = new ForwardContext(graph);
  try {
    const got = backend.read(forwardMistral3(ctx, model, inputs).logits.value) as Float32Array;
    const ref = await openSafetensors(join(F, reference));
    const want = toFloat32(await ref.read("logits"));
    await ref.close();
    return maxDiffOnTokens(got, want, inputs.attentionMask, want.length / (inputs.batch * inputs.seqLen));
  } finally {
    graph.dispose();
    ctx.release();
    freeMistral3(model);
  }
}

test("merging the peft adapter into the tiny model gives peft's adapted logits without an adapter (f32, sharded)", async () => {
  await withTempDir("splint-merge-", async (root) => {
    const out = join(root, "merged");
    const result = await mergeAdapter({ modelDir: join(F, "models", "tiny"), adapterDir: join(F, "lora", "tiny", "adapter"), outDir: out, maxShardBytes: 300_000, dtype: "f32", backend });
    assert.equal(result.mergedModules, 28);
    assert.ok(result.shards.length > 1, "several shards");
    assert.deepEqual((await readdir(out)).sort(), [...result.shards, "model.safetensors.index.json", "config.json", ...result.copiedFiles].sort());
    for (const name of ["tokenizer.json", "processor_config.json", "chat_template.jinja", "generation_config.json"]) assert.ok(result.copiedFiles.includes(name), name);
    assert.ok((await logitsDiff(out, "lora/tiny/images_multi.out.safetensors")) < 1e-4);
  });
});

test("an FP8 base merges to BF16 and loses its quantization_config", async () => {
  await withTempDir("splint-merge-", async (root) => {
    const out = join(root, "merged");
    const result = await mergeAdapter({ modelDir: join(F, "models", "tiny-fp8"), adapterDir: join(F, "lora", "tiny", "adapter"), outDir: out, backend });
    assert.equal(result.dequantizedFp8, 14);
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(config.quantization_config, undefined);
    const merged = await openCheckpoint(out);
    const dtypes = new Set(merged.keys().map((k) => merged.info(k).dtype));
    assert.ok(merged.keys().every((k) => !/weight_scale_inv|activation_scale/.test(k)));
    await merged.close();
    assert.deepEqual([...dtypes], ["BF16"]);
    // BF16 rounding of the merged weights is the only difference from peft's fp8 + adapter logits.
    const diff = await logitsDiff(out, "lora/tiny-fp8/images_multi.out.safetensors");
    assert.ok(diff < 0.1, `max |Δ| ${diff}`);
  });
});

test("an FP8 base merges to the right BF16 values: bf16(fp8 · weight_scale_inv + alpha/r · B·A); bf16 tensors copied bit for bit", async () => {
  await withTempDir("splint-merge-", async (root) => {
    const out = join(root, "merged");
    const base = join(F, "models", "tiny-fp8");
    await mergeAdapter({ modelDir: base, adapterDir: join(F, "lora", "tiny", "adapter"), outDir: out, backend });
    const src = await openCheckpoint(base);
    const merged = await openCheckpoint(out);
    const adapter = await openSafetensors(join(F, "lora", "tiny", "adapter", "adapter_model.safetensors"));
    const scale = 8 / 4; // lora_alpha / r of the fixture adapter
    /** Compares a merged tensor with bf16(W + scale·B·A), W given per element; returns the share rounded exactly so. */
    const check = async (key: string, module: string, weight: (i: number) => number): Promise<number> => {
      const a = toFloat32(await adapter.read(`base_model.model.${module}.lora_A.weight`));
      const b = toFloat32(await adapter.read(`base_model.model.${module}.lora_B.weight`));
      const got = await merged.read(key);
      assert.equal(got.dtype, "BF16", key);
      const [rows, cols] = got.shape as [number, number];
      const r = a.length / cols;
      const bits = toBf16Bits(got);
      let exact = 0;
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          let delta = 0;
          for (let k = 0; k < r; k++) delta += b[i * r + k]! * a[k * cols + j]!;
          const want = weight(i * cols + j) + scale * delta;
          const value = bf16ToF32(bits[i * cols + j]!);
          // One bf16 rounding (8 significant bits): within half an ulp, 2^-8 of the value, plus f32 noise.
          assert.ok(Math.abs(value - want) <= 2 ** -8 * Math.abs(want) + 1e-7, `${key}[${i},${j}]: ${value} vs ${want}`);
          if (bits[i * cols + j] === f32ToBf16(want)) exact++;
        }
      }
      return exact / (rows * cols);
    };
    try {
      const fp8Keys = src.keys().filter((k) => src.info(k).dtype === "F8_E4M3");
      assert.equal(fp8Keys.length, 14);
      for (const key of fp8Keys) {
        const bytes = toFp8Bytes(await src.read(key));
        const s = toFloat32(await src.read(key.replace(/\.weight$/, ".weight_scale_inv")))[0]!;
        const module = key.replace(/^language_model\.model\./, "model.language_model.").replace(/\.weight$/, "");
        // W = fp8 · weight_scale_inv (a multiply: ministral3.md §5.3); f32 sums in another order
        // than the merge's may round differently at a tie, nowhere else.
        const share = await check(key, module, (i) => FP8_E4M3_TABLE[bytes[i]!]! * s);
        assert.ok(share > 0.99, `${key}: ${share} rounded as bf16(f32 sum)`);
      }
      // A bf16 linear the adapter touches (the vision tower's) is merged and rounded once the same way.
      const vision = "vision_tower.transformer.layers.0.attention.q_proj.weight";
      const w = toFloat32(await src.read(vision));
      assert.ok((await check(vision, `model.${vision.slice(0, -".weight".length)}`, (i) => w[i]!)) > 0.99);
      // Tensors the adapter does not touch keep their stored bf16 bits.
      for (const key of ["language_model.model.embed_tokens.weight", "language_model.model.norm.weight", "language_model.lm_head.weight"]) {
        assert.deepEqual(toBf16Bits(await merged.read(key)), toBf16Bits(await src.read(key)), key);
      }
    } finally {
      await src.close();
      await merged.close();
      await adapter.close();
    }
  });
});

test("merge refuses a mismatched adapter (naming the file) and an occupied --out, writing nothing", async () => {
  await withTempDir("splint-merge-", async (root) => {
    const adapter = join(root, "adapter");
    await cp(join(F, "lora", "tiny", "adapter"), adapter, { recursive: true });
    const cfg = JSON.parse(await readFile(join(adapter, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(adapter, "adapter_config.json"), JSON.stringify({ ...cfg, r: 8 }));
    const out = join(root, "merged");
    await assert.rejects(mergeAdapter({ modelDir: join(F, "models", "tiny"), adapterDir: adapter, outDir: out, backend }), /adapter_model\.safetensors: the adapter does not fit this model:[\s\S]*expected \[8,48\]/);
    assert.ok(!existsSync(out));
    await writeFile(join(root, "occupied"), "x");
    await assert.rejects(mergeAdapter({ modelDir: join(F, "models", "tiny"), adapterDir: join(F, "lora", "tiny", "adapter"), outDir: root, backend }), /already exists and is not empty/);
  });
});
