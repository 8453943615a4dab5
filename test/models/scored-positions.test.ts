// Training computes the head only where the loss counts a label; it must be the same loss and the
// same logits rows as the full forward.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { readForwardInputs } from "../../src/cli/commands/forward.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, IGNORE_INDEX, loadMistral3, shiftLabels } from "../../src/models/mistral3/model.ts";
import { FIXTURES } from "../helpers/reference.ts";

test("scoredPositionsOnly gives the full forward's loss and its logits at the scored rows", async () => {
  const backend = createCpuBackend();
  const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend);
  const inputs = await readForwardInputs(join(FIXTURES, "forward", "inputs", "images_multi.safetensors"));
  assert.ok(inputs.labels);
  const run = (scoredPositionsOnly: boolean) => {
    const ctx = new ForwardContext(createGraph(backend, { recording: false }));
    const out = forwardMistral3(ctx, model, inputs, { scoredPositionsOnly });
    const result = { logits: backend.read(out.logits.value) as Float32Array, loss: (backend.read(out.loss!.value) as Float32Array)[0]! };
    ctx.graph.dispose();
    ctx.release();
    return result;
  };
  const full = run(false);
  const scored = run(true);
  const shifted = shiftLabels(inputs.labels, inputs.batch, inputs.seqLen);
  const rows = [...shifted.keys()].filter((i) => shifted[i] !== IGNORE_INDEX);
  const V = model.config.text_config.vocab_size;
  assert.ok(rows.length > 0 && rows.length < inputs.batch * inputs.seqLen);
  assert.equal(scored.logits.length, rows.length * V);
  assert.ok(Math.abs(scored.loss - full.loss) <= 1e-6 * Math.abs(full.loss), `${scored.loss} vs ${full.loss}`);
  rows.forEach((row, k) => {
    for (let v = 0; v < V; v++) assert.equal(scored.logits[k * V + v], full.logits[row * V + v]);
  });
});
