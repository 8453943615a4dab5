import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { readForwardInputs } from "../../src/cli/commands/forward.ts";
import { openCheckpoint, openSafetensors, toFloat32 } from "../../src/io/safetensors.ts";
import { mergeAdapter } from "../../src/lora/merge.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
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
