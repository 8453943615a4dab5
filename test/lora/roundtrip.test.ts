import assert from "node:assert/strict";
import { cp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { readForwardInputs } from "../../src/cli/commands/forward.ts";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import { loadAdapter, saveAdapter } from "../../src/lora/adapter.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { maxDiffOnTokens, readF32Tensors } from "../helpers/tensors.ts";

const F = join(import.meta.dirname, "..", "fixtures");
const backend = createCpuBackend();

test("peft's adapter → splint load → splint save → load again: same tensors under the same keys, peft's logits", async () => {
  await withTempDir("splint-roundtrip-", async (root) => {
    const first = await loadMistral3(join(F, "models", "tiny"), backend);
    const settings = await loadAdapter(join(F, "lora", "tiny", "adapter"), first.linears, backend);
    const saved = join(root, "adapter");
    await saveAdapter(saved, settings, first.linears, backend);
    freeMistral3(first);

    const original = await readF32Tensors(join(F, "lora", "tiny", "adapter", "adapter_model.safetensors"));
    const written = await readF32Tensors(join(saved, "adapter_model.safetensors"));
    assert.deepEqual([...written.keys()].sort(), [...original.keys()].sort());
    for (const [key, values] of original) assert.deepEqual(written.get(key), values, key);
    const config = JSON.parse(await readFile(join(saved, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual([config.peft_type, config.r, config.lora_alpha, config.task_type], ["LORA", 4, 8, "CAUSAL_LM"]);

    const second = await loadMistral3(join(F, "models", "tiny"), backend);
    await loadAdapter(saved, second.linears, backend);
    const inputs = await readForwardInputs(join(F, "forward", "inputs", "images_multi.safetensors"));
    const graph = createGraph(backend, { recording: false });
    const ctx = new ForwardContext(graph);
    const got = backend.read(forwardMistral3(ctx, second, inputs).logits.value) as Float32Array;
    const want = (await readF32Tensors(join(F, "lora", "tiny", "images_multi.out.safetensors"))).get("logits")!;
    const worst = maxDiffOnTokens(got, want, inputs.attentionMask, want.length / (inputs.batch * inputs.seqLen));
    graph.dispose();
    ctx.release();
    freeMistral3(second);
    assert.ok(worst < 1e-4, `max |Δ| ${worst}`);
  });
});

test("an adapter for another architecture (Llama key names) is refused with the file named", async () => {
  await withTempDir("splint-roundtrip-", async (root) => {
    const adapter = join(root, "llama-adapter");
    await cp(join(F, "lora", "tiny", "adapter"), adapter, { recursive: true });
    const file = join(adapter, "adapter_model.safetensors");
    const source = await readF32Tensors(file);
    await writeSafetensors(
      file,
      [...source].map(([key, data]) => ({ name: key.replace("model.language_model.", "model."), dtype: "F32" as const, shape: key.includes("lora_A") ? [4, data.length / 4] : [data.length / 4, 4], data })),
    );
    const model = await loadMistral3(join(F, "models", "tiny"), backend);
    try {
      await assert.rejects(loadAdapter(adapter, model.linears, backend), (e: Error) => {
        assert.ok(e.message.startsWith(`${file}: the adapter does not fit this model`), e.message);
        assert.match(e.message, /match no linear layer of this model \(an adapter for another architecture\?\): base_model\.model\.model\.layers\./);
        return true;
      });
    } finally {
      freeMistral3(model);
    }
  });
});
