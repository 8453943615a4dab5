import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { referenceBackend } from "../helpers/reference.ts";
import { readForwardInputs } from "../../src/cli/commands/forward.ts";
import { openSafetensors, toFloat32 } from "../../src/io/safetensors.ts";
import { detach, loadAdapter } from "../../src/lora/adapter.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { loraGradients } from "../../src/train/grads.ts";
import { FIXTURES } from "./fixture-batches.ts";

interface LoraCase {
  case: string;
  inputs: string;
  grads: string;
  loss: number;
  grad_tolerance_abs: number;
  base?: string;
  adapter?: string;
}
const manifest = JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8")) as {
  lora: { adapter: string; base: string; cases: LoraCase[]; fp8_base_cases?: LoraCase[] };
};
const cases = [
  ...manifest.lora.cases.map((c) => ({ ...c, base: manifest.lora.base, adapter: manifest.lora.adapter })),
  ...(manifest.lora.fp8_base_cases ?? []).map((c) => ({ ...c, base: c.base!, adapter: c.adapter! })),
];

for (const c of cases) {
  test(`loraGradients on ${c.base} (${c.case}) match peft's within ${c.grad_tolerance_abs}, keyed by PEFT names`, async () => {
    const backend = referenceBackend();
    const model = await loadMistral3(join(FIXTURES, c.base), backend);
    try {
      await loadAdapter(join(FIXTURES, c.adapter), model.linears, backend);
      const result = loraGradients(backend, model, await readForwardInputs(join(FIXTURES, c.inputs)));
      assert.ok(Math.abs(result.loss - c.loss) < 1e-5, `loss ${result.loss} vs ${c.loss}`);
      const reference = await openSafetensors(join(FIXTURES, c.grads));
      assert.deepEqual(result.grads.map((g) => g.name).sort(), reference.keys().sort());
      for (const g of result.grads) {
        const ref = toFloat32(await reference.read(g.name));
        const got = g.data as Float32Array;
        let worst = 0;
        let scale = 1;
        for (let i = 0; i < ref.length; i++) {
          worst = Math.max(worst, Math.abs(got[i]! - ref[i]!));
          scale = Math.max(scale, Math.abs(ref[i]!));
        }
        assert.ok(worst <= c.grad_tolerance_abs * scale, `${g.name}: max |Δ| ${worst}`);
      }
      await reference.close();
    } finally {
      detach(model.linears.values());
      freeMistral3(model);
    }
  });
}

test("loraGradients says what is missing: labels, or an adapter", async () => {
  const backend = referenceBackend();
  const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend);
  try {
    const inputs = await readForwardInputs(join(FIXTURES, "forward", "inputs", "text_rightpad.safetensors"));
    assert.throws(() => loraGradients(backend, model, inputs), /no LoRA adapter is attached/);
    await loadAdapter(join(FIXTURES, manifest.lora.adapter), model.linears, backend);
    assert.throws(() => loraGradients(backend, model, { ...inputs, labels: undefined }), /text_rightpad\.safetensors: has no "labels"/);
    // Text-only inputs never reach the vision tower: its LoRA gradients are zero, not missing.
    const { grads } = loraGradients(backend, model, inputs);
    const vision = grads.filter((g) => g.name.includes("vision_tower"));
    assert.equal(vision.length, 28);
    assert.ok(vision.every((g) => (g.data as Float32Array).every((x) => x === 0)));
  } finally {
    freeMistral3(model);
  }
});
