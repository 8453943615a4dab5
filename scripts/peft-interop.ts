/**
 * splint's half of the PEFT interoperability check (scripts/peft-interop.py is the other half):
 * on the CPU backend, loads a model folder, attaches a fresh LoRA adapter (the tutorial's settings:
 * q,k,v,o,gate,up,down of the decoder and the vision tower, r16, alpha 32), trains it for a few
 * AdamW steps on the inputs' labels so B is no longer zero, saves it in PEFT format with
 * saveAdapter, and writes splint's logits on the same inputs with and without the adapter.
 *
 *   node --import tsx scripts/peft-interop.ts --model test/fixtures/models/tiny \
 *     --inputs test/fixtures/forward/inputs/images_multi.safetensors --out DIR
 *
 * Writes DIR/adapter/{adapter_config.json,adapter_model.safetensors} and DIR/splint-logits.safetensors
 * (`logits` and `base_logits`, f32 [B,T,V]) and prints a JSON summary.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createGraph } from "../src/autograd/tape.ts";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { readForwardInputs } from "../src/cli/commands/forward.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { initAdapter, saveAdapter, type LoraSettings } from "../src/lora/adapter.ts";
import type { LoraPair } from "../src/lora/lora-linear.ts";
import { ForwardContext } from "../src/models/mistral3/context.ts";
import { forwardMistral3, loadMistral3, type Mistral3Inputs, type Mistral3Model } from "../src/models/mistral3/model.ts";
import type { Backend } from "../src/tensor/backend.ts";
import { TUTORIAL_DEFAULTS } from "../src/train/config.ts";
import { AdamW, type Parameter } from "../src/train/optimizer.ts";
import { Rng } from "../src/util/rng.ts";
import { loraSettingsFor } from "../src/train/run.ts";

const SETTINGS: LoraSettings = loraSettingsFor(TUTORIAL_DEFAULTS, null);
const TRAIN_STEPS = 5;
const LEARNING_RATE = 2e-2;

function logitsOf(backend: Backend, model: Mistral3Model, inputs: Mistral3Inputs): Float32Array {
  const graph = createGraph(backend, { recording: false });
  const ctx = new ForwardContext(graph);
  try {
    const out = forwardMistral3(ctx, model, { ...inputs, labels: undefined });
    return backend.read(out.logits.value) as Float32Array;
  } finally {
    graph.dispose();
    ctx.release();
  }
}

/** AdamW steps on the inputs' loss (dropout on, as in training); returns the losses. */
function train(backend: Backend, model: Mistral3Model, inputs: Mistral3Inputs, params: Parameter[]): number[] {
  const optimizer = new AdamW(backend, params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  const trainable = new Set(params.map((p) => p.value));
  const losses: number[] = [];
  try {
    for (let step = 1; step <= TRAIN_STEPS; step++) {
      const graph = createGraph(backend, { recording: true });
      const ctx = new ForwardContext(graph, { trainable, dropoutSeed: step });
      try {
        const out = forwardMistral3(ctx, model, inputs, { checkpointLayers: true });
        losses.push((backend.read(out.loss!.value) as Float32Array)[0]!);
        graph.backward(out.loss!);
        const grads = params.map((p) => {
          const grad = ctx.varOf(p.value)?.grad;
          if (!grad) throw new Error(`no gradient for ${p.name}`);
          return grad;
        });
        optimizer.step(grads, LEARNING_RATE);
        for (const g of grads) g.free();
      } finally {
        graph.dispose();
        ctx.release();
      }
    }
  } finally {
    optimizer.free();
  }
  return losses;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: "test/fixtures/models/tiny" },
      inputs: { type: "string", default: "test/fixtures/forward/inputs/images_multi.safetensors" },
      out: { type: "string", default: "out/peft-interop" },
    },
  });
  const backend = createCpuBackend();
  const model = await loadMistral3(values.model!, backend);
  const inputs = await readForwardInputs(values.inputs!);
  if (!inputs.labels) throw new Error(`${values.inputs} has no labels to train on`);

  const baseLogits = logitsOf(backend, model, inputs);
  const paths = initAdapter(SETTINGS, model.linears, backend, new Rng(7));
  const params: Parameter[] = paths.flatMap((path) => {
    const pair = model.linears.get(path)!.lora!;
    return [
      { name: `${path}.lora_A.weight`, value: pair.a },
      { name: `${path}.lora_B.weight`, value: pair.b },
    ];
  });
  const losses = train(backend, model, inputs, params);
  const pairs: LoraPair[] = paths.map((path) => model.linears.get(path)!.lora!);
  const maxAbsB = Math.max(...pairs.map((pair) => (backend.read(pair.b) as Float32Array).reduce((m, x) => Math.max(m, Math.abs(x)), 0)));

  await mkdir(values.out!, { recursive: true });
  const adapterDir = join(values.out!, "adapter");
  await saveAdapter(adapterDir, SETTINGS, model.linears, backend);
  const logits = logitsOf(backend, model, inputs);
  const { batch: B, seqLen: T } = inputs;
  const V = logits.length / (B * T);
  const logitsFile = join(values.out!, "splint-logits.safetensors");
  await writeSafetensors(
    logitsFile,
    [
      { name: "logits", dtype: "F32", shape: [B, T, V], data: logits },
      { name: "base_logits", dtype: "F32", shape: [B, T, V], data: baseLogits },
    ],
    { format: "pt" },
  );
  const vision = paths.filter((p) => p.includes("vision_tower")).length;
  const summary = { adapterDir, logitsFile, loraPairs: paths.length, visionPairs: vision, trainSteps: TRAIN_STEPS, learningRate: LEARNING_RATE, losses, maxAbsB, settings: SETTINGS };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

await main();
