// LoraBf16Copies: the fast tier's bf16 copies of the LoRA masters, kept across passes and
// refreshed after each optimizer step, give the numbers of casting the masters in every pass.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { LoraBf16Copies } from "../../src/lora/bf16-copies.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import type { Backend, MatmulPrecision } from "../../src/tensor/backend.ts";
import { trainLoop, type StepRecord } from "../../src/train/trainer.ts";
import { fixtureBatches, fixtureRecipe, FIXTURES } from "../train/fixture-batches.ts";
import { quiet } from "../train/quiet-output.ts";

const MODEL = join(FIXTURES, "models", "tiny");
const ADAPTER = join(FIXTURES, "train", "tiny", "initial_adapter");

async function adaptedModel(backend: Backend, precision: MatmulPrecision) {
  const model = await loadMistral3(MODEL, backend, { matmulPrecision: precision });
  const adapter = await loadAdapter(ADAPTER, model.linears, backend);
  return { model, adapter };
}

test("copies hold each f32 A and B of the bf16 layers as cast rounds it, and change only on refresh()", async () => {
  const backend = createCpuBackend();
  const { model } = await adaptedModel(backend, "bf16");
  const pairs = [...model.linears.values()].filter((l) => l.lora);
  assert.ok(pairs.length > 0);
  const copies = LoraBf16Copies.forModel(backend, model.linears.values())!;
  try {
    const raw = (t: Parameters<Backend["readRaw"]>[0]) => Array.from(backend.readRaw(t));
    for (const { lora } of pairs) {
      for (const master of [lora!.a, lora!.b]) assert.deepEqual(raw(copies.get(master)!), raw(backend.cast(master, "bf16")));
    }
    const a = pairs[0]!.lora!.a;
    const before = raw(copies.get(a)!);
    backend.scaleInPlace(a, 3);
    assert.deepEqual(raw(copies.get(a)!), before, "a copy changes only on refresh()");
    copies.refresh();
    assert.deepEqual(raw(copies.get(a)!), raw(backend.cast(a, "bf16")));
    assert.notDeepEqual(raw(copies.get(a)!), before);
  } finally {
    copies.free();
    freeMistral3(model);
  }
  // The exact tier reads the f32 masters themselves: no copies.
  const exact = await adaptedModel(backend, "f32");
  assert.equal(LoraBf16Copies.forModel(backend, exact.model.linears.values()), null);
  freeMistral3(exact.model);
});

test("training with kept copies gives the losses, norms and adapter of casting in every pass, with 2 casts per pair per micro-batch fewer", async () => {
  const config = fixtureRecipe(6);
  const run = async (keepBf16Copies: boolean) => {
    const inner = createCpuBackend();
    let casts = 0;
    const backend = new Proxy(inner, {
      get(target, key, receiver) {
        if (key === "cast") {
          return (...args: Parameters<Backend["cast"]>) => {
            casts++;
            return target.cast(...args);
          };
        }
        return Reflect.get(target, key, receiver) as unknown;
      },
    });
    const { model, adapter } = await adaptedModel(backend, "bf16");
    const runDir = await mkdtemp(join(tmpdir(), "splint-bf16-copies-"));
    try {
      const steps: StepRecord[] = [];
      await trainLoop({ backend, model, adapter, config, source: await fixtureBatches("labels"), runDir, output: quiet, keepBf16Copies, onStep: (r) => steps.push(r) });
      const finalAdapter = [...model.linears.values()].flatMap((l) => (l.lora ? [Array.from(inner.read(l.lora.a)), Array.from(inner.read(l.lora.b))] : []));
      const pairs = [...model.linears.values()].filter((l) => l.lora).length;
      return { steps: steps.map((s) => [s.loss, s.grad_norm]), finalAdapter, casts, pairs };
    } finally {
      freeMistral3(model);
      await rm(runDir, { recursive: true, force: true });
    }
  };
  const kept = await run(true);
  const perPass = await run(false);
  assert.deepEqual(kept.steps, perPass.steps);
  assert.deepEqual(kept.finalAdapter, perPass.finalAdapter);
  const microBatches = config.max_steps * config.gradient_accumulation_steps;
  assert.equal(perPass.casts - kept.casts, 2 * kept.pairs * microBatches);
});
