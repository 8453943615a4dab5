// splint against the committed transformers/peft fixtures (test/fixtures/README.md): logits and loss
// of every forward case, per-stage activations, the LoRA adapter's logits and greedy generation.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { readForwardInputs } from "../../src/cli/commands/forward.ts";
import { openSafetensors, toFloat32, toInt32 } from "../../src/io/safetensors.ts";
import { detach, loadAdapter } from "../../src/lora/adapter.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { generateMistral3, prefillPositions } from "../../src/models/mistral3/generate.ts";
import { forwardMistral3, freeMistral3, loadMistral3, type Mistral3Inputs, type Mistral3Model } from "../../src/models/mistral3/model.ts";
import { FIXTURES, referenceBackend } from "../helpers/reference.ts";
import { maxDiffOnTokens } from "../helpers/tensors.ts";

const fixture = (rel: string) => join(FIXTURES, rel);

interface Tolerance {
  logits_abs: number;
  loss_abs: number;
}
interface Manifest {
  forward: { case: string; model: string; inputs: string; outputs: string; tolerance: Tolerance }[];
  activations: { file: string; inputs: string; model: string; tolerance_abs: number };
  lora: { adapter: string; base: string; cases: LoraCase[]; fp8_base_cases?: (LoraCase & { base: string; adapter: string })[] };
  generate: { case: string; model: string; adapter: string | null; inputs: string; outputs: string; new_tokens: number[][] }[];
}
interface LoraCase {
  case: string;
  inputs: string;
  outputs: string;
  grads: string;
  grad_tolerance_abs: number;
  tolerance: Tolerance;
}
const manifest = JSON.parse(readFileSync(fixture("manifest.json"), "utf8")) as Manifest;
/** Every adapter case with its base model: the bf16 base and the fp8 base. */
const loraCases = [
  ...manifest.lora.cases.map((c) => ({ ...c, base: manifest.lora.base, adapter: manifest.lora.adapter })),
  ...(manifest.lora.fp8_base_cases ?? []),
];

const backend = referenceBackend();
const models = new Map<string, Promise<Mistral3Model>>();
const modelOf = (rel: string) => {
  if (!models.has(rel)) models.set(rel, loadMistral3(fixture(rel), backend));
  return models.get(rel)!;
};

async function readFloats(rel: string): Promise<Map<string, { shape: readonly number[]; data: Float32Array | Int32Array }>> {
  const source = await openSafetensors(fixture(rel));
  const out = new Map<string, { shape: readonly number[]; data: Float32Array | Int32Array }>();
  for (const key of source.keys()) {
    const t = await source.read(key);
    out.set(key, { shape: t.shape, data: t.dtype === "I64" ? toInt32(t) : toFloat32(t) });
  }
  await source.close();
  return out;
}

function runForward(model: Mistral3Model, inputs: Mistral3Inputs, capture?: Map<string, Float32Array>) {
  const graph = createGraph(backend, { recording: false });
  const ctx = new ForwardContext(graph);
  try {
    const out = forwardMistral3(ctx, model, inputs, {
      capture: capture ? (name, v) => capture.set(name, Float32Array.from(backend.read(v.value) as Float32Array)) : undefined,
    });
    return {
      logits: backend.read(out.logits.value) as Float32Array,
      loss: out.loss ? (backend.read(out.loss.value) as Float32Array)[0]! : undefined,
    };
  } finally {
    graph.dispose();
    ctx.release();
  }
}

/**
 * One forward case and the fixture's outputs for it: splint's logits and loss, the reference
 * logits (V wide) and loss, and the largest logits difference on real tokens.
 */
async function againstFixture(model: Mistral3Model, inputsRel: string, outputsRel: string) {
  const inputs = await readForwardInputs(fixture(inputsRel));
  const expected = await readFloats(outputsRel);
  const { logits, loss } = runForward(model, inputs);
  const reference = expected.get("logits")!.data as Float32Array;
  const V = reference.length / (inputs.batch * inputs.seqLen);
  const diff = maxDiffOnTokens(logits, reference, inputs.attentionMask, V);
  const refLoss = (expected.get("loss")!.data as Float32Array)[0]!;
  return { inputs, logits, loss, reference, V, diff, refLoss };
}

for (const c of manifest.forward) {
  test(`forward ${c.model} ${c.case}: logits and loss match transformers`, async () => {
    const { inputs, logits, loss, reference, V, diff, refLoss } = await againstFixture(await modelOf(c.model), c.inputs, c.outputs);
    assert.ok(diff <= c.tolerance.logits_abs, `max |Δlogits| ${diff} > ${c.tolerance.logits_abs}`);
    if (!scoresPaddedPosition(inputs)) {
      assert.ok(Math.abs(loss! - refLoss) <= c.tolerance.loss_abs, `loss ${loss} vs ${refLoss}`);
      return;
    }
    // A left-padded row whose first real token has a label is scored by the logits of the pad
    // before it. Its query sees no key: transformers' eager attention (the fixtures') averages all
    // values there, its SDPA path and splint give zeros. So compare the loss over the positions
    // whose logits are meaningful, computed the same way from both sets of logits.
    const ours = lossOverRealPositions(logits, inputs, V);
    const theirs = lossOverRealPositions(reference, inputs, V);
    assert.ok(Math.abs(ours - theirs) <= c.tolerance.loss_abs, `loss over real positions ${ours} vs ${theirs}`);
  });
}

function scoresPaddedPosition(inputs: Mistral3Inputs): boolean {
  const { batch: B, seqLen: T, attentionMask: mask, labels } = inputs;
  if (!mask || !labels) return false;
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) if (mask[b * T + t] === 0 && labels[b * T + t + 1] !== -100) return true;
  return false;
}

/** transformers' shifted mean cross-entropy, over the positions that are real tokens. */
function lossOverRealPositions(logits: Float32Array, inputs: Mistral3Inputs, V: number): number {
  const { batch: B, seqLen: T, attentionMask: mask, labels } = inputs;
  let sum = 0;
  let count = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const label = labels![b * T + t + 1]!;
      if (label === -100 || mask![b * T + t] === 0) continue;
      const row = logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let z = 0;
      for (const x of row) z += Math.exp(x - max);
      sum += max + Math.log(z) - row[label]!;
      count++;
    }
  }
  return sum / count;
}

test("per-stage activations of images_multi match transformers (localises a mismatch)", async () => {
  const a = manifest.activations;
  const model = await modelOf(a.model);
  const inputs = await readForwardInputs(fixture(a.inputs));
  const captured = new Map<string, Float32Array>();
  runForward(model, inputs, captured);
  const expected = await readFloats(a.file);
  const failures: string[] = [];
  for (const [name, ref] of expected) {
    const got = captured.get(name);
    if (!got) {
      failures.push(`${name}: not captured`);
      continue;
    }
    // text.* stages: only real tokens count (padding rows are not meaningful).
    const width = ref.shape[ref.shape.length - 1]!;
    const mask = name.startsWith("text.") ? inputs.attentionMask : undefined;
    const diff = maxDiffOnTokens(got, ref.data as Float32Array, mask, width);
    if (!(diff <= a.tolerance_abs)) failures.push(`${name}: max |Δ| ${diff}`);
  }
  assert.deepEqual(failures, []);
});

for (const c of loraCases) {
  test(`LoRA adapter written by peft on ${c.base}: ${c.case} logits and loss match peft + transformers`, async () => {
    const model = await modelOf(c.base);
    await loadAdapter(fixture(c.adapter), model.linears, backend);
    try {
      const { loss, diff, refLoss } = await againstFixture(model, c.inputs, c.outputs);
      assert.ok(diff <= c.tolerance.logits_abs, `max |Δlogits| ${diff}`);
      assert.ok(Math.abs(loss! - refLoss) <= c.tolerance.loss_abs, `loss ${loss} vs ${refLoss}`);
    } finally {
      detach(model.linears.values());
    }
  });
}

test("bf16 autocast (matmulPrecision bf16) on the bf16 base with the peft adapter stays near the f32 reference and is not the exact path", async () => {
  const c = loraCases[0]!;
  const autocast = await loadMistral3(fixture(c.base), backend, { matmulPrecision: "bf16" });
  try {
    await loadAdapter(fixture(c.adapter), autocast.linears, backend);
    const { diff, loss, refLoss } = await againstFixture(autocast, c.inputs, c.outputs);
    const exact = await modelOf(c.base);
    await loadAdapter(fixture(c.adapter), exact.linears, backend);
    let exactDiff: number;
    try {
      exactDiff = (await againstFixture(exact, c.inputs, c.outputs)).diff;
    } finally {
      detach(exact.linears.values());
    }
    assert.ok(diff > 10 * exactDiff, `autocast (${diff}) should differ from the reference more than the exact path (${exactDiff})`);
    // Every linear input rounded to bf16 (2^-9 relative) through the vision tower, projector and
    // decoder: 0.032 measured on logits, 6e-4 on the loss; the bounds leave about 3× (8×) room.
    assert.ok(diff <= 0.1, `max |Δlogits| ${diff}`);
    assert.ok(Math.abs(loss! - refLoss) <= 5e-3, `loss ${loss} vs ${refLoss}`);
  } finally {
    freeMistral3(autocast);
  }
});

for (const c of manifest.generate) {
  test(`greedy generation ${c.case}${c.adapter ? " with the adapter" : ""} is token-identical to transformers`, async () => {
    const model = await modelOf(c.model);
    if (c.adapter) await loadAdapter(fixture(c.adapter), model.linears, backend);
    try {
      const inputs = await readForwardInputs(fixture(c.inputs));
      const expected = await readFloats(c.outputs);
      const result = generateMistral3(model, () => createGraph(backend, { recording: false }), inputs, {
        maxNewTokens: 8,
        eosTokenIds: [model.config.text_config.eos_token_id],
        padTokenId: 11,
      });
      const sequences = expected.get("sequences")!;
      assert.deepEqual(Array.from(result.sequences), Array.from(sequences.data));
      const positions = expected.get("prefill_position_ids");
      if (positions) {
        const mask = inputs.attentionMask ?? new Int32Array(inputs.batch * inputs.seqLen).fill(1);
        assert.deepEqual(Array.from(prefillPositions(mask, inputs.batch, inputs.seqLen)), Array.from(positions.data));
      }
    } finally {
      detach(model.linears.values());
    }
  });
}

for (const [c, checkpointLayers] of loraCases.flatMap((c) => [[c, false], [c, true]] as const)) {
  test(`LoRA gradients on ${c.base}, ${c.case}, match peft (gradient checkpointing ${checkpointLayers ? "on" : "off"})`, async () => {
    const gradsFile = c.grads;
    const model = await modelOf(c.base);
    await loadAdapter(fixture(c.adapter), model.linears, backend);
    const graph = createGraph(backend, { recording: true });
    const trainable = new Set([...model.linears.values()].flatMap((l) => (l.lora ? [l.lora.a, l.lora.b] : [])));
    const ctx = new ForwardContext(graph, { trainable });
    try {
      const inputs = await readForwardInputs(fixture(c.inputs));
      const { loss } = forwardMistral3(ctx, model, inputs, { checkpointLayers });
      graph.backward(loss!);
      const expected = await readFloats(gradsFile);
      const failures: string[] = [];
      for (const [path, linear] of model.linears) {
        if (!linear.lora) continue;
        for (const [which, t] of [["A", linear.lora.a], ["B", linear.lora.b]] as const) {
          const key = `base_model.model.${path}.lora_${which}.weight`;
          const ref = expected.get(key)!.data as Float32Array;
          const grad = ctx.varOf(t)?.grad;
          if (!grad) {
            failures.push(`${key}: no gradient`);
            continue;
          }
          const got = backend.read(grad) as Float32Array;
          let worst = 0;
          let scale = 1;
          for (let i = 0; i < ref.length; i++) {
            worst = Math.max(worst, Math.abs(got[i]! - ref[i]!));
            scale = Math.max(scale, Math.abs(ref[i]!));
          }
          if (!(worst <= c.grad_tolerance_abs * scale)) failures.push(`${key}: max |Δ| ${worst}`);
        }
      }
      assert.deepEqual(failures, []);
      assert.equal(expected.size, trainable.size);
    } finally {
      for (const t of trainable) ctx.varOf(t)?.grad?.free();
      graph.dispose();
      ctx.release();
      detach(model.linears.values());
    }
  });
}
