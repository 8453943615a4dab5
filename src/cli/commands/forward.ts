import type { Command } from "commander";
import { openSafetensors, toFloat32, toInt32, writeSafetensors, type StoredTensor, type TensorSource, type TensorToWrite } from "../../io/safetensors.ts";
import { resolveModel } from "../../hub/resolve.ts";
import { ForwardContext } from "../../models/mistral3/context.ts";
import { forwardMistral3, type Mistral3Inputs } from "../../models/mistral3/model.ts";
import { openModelSession } from "../../models/mistral3/runtime.ts";
import type { WeightDtype } from "../../models/mistral3/weights.ts";
import { loraGradients } from "../../train/grads.ts";
import { InputError } from "../../util/errors.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { ADAPTER_FLAG, ADAPTER_HELP, MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

/**
 * `splint forward`: the parity interface. Reads HF-named inputs from a safetensors file, runs the
 * model once, writes `logits` (f32 [B,T,V]) and, with labels, `loss` (f32 [1]) as transformers
 * computes them, so anyone can compare splint with transformers tensor by tensor. With --grads, the
 * gradients of the adapter's LoRA tensors too, keyed as in adapter_model.safetensors.
 */
export function registerForward(program: Command): void {
  program
    .command("forward")
    .description("Run one forward pass on HF-named inputs and write logits (and loss) to safetensors")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .option(ADAPTER_FLAG, ADAPTER_HELP)
    .requiredOption("--inputs <file>", "safetensors with input_ids, attention_mask, [pixel_values, image_sizes], [labels]")
    .requiredOption("--out <file>", "safetensors to write logits (and loss) to")
    .option("--grads <file>", "with --adapter and labels: write d loss / d every LoRA tensor under PEFT's key names (dropout off)")
    .option("--dtype <dtype>", "weights in memory: auto (as stored), f32 or bf16", "auto")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
For parity checks against transformers: the inputs are tensors a Python script saved with the
processor's names; the logits (and loss, with labels) are written under the same names.

Examples:
  splint forward --model models/tiny --inputs inputs.safetensors --out logits.safetensors
  splint forward --model models/tiny --adapter runs/demo/train/adapter --inputs batch.safetensors --out out.safetensors --grads grads.safetensors`,
    )
    .action(async (opts: { model: string; revision?: string; adapter?: string; inputs: string; out: string; grads?: string; dtype: string; matmul: string; json?: boolean }) => {
      const output = createOutput(Boolean(opts.json));
      if (!["auto", "f32", "bf16"].includes(opts.dtype)) throw new InputError("--dtype", `must be auto, f32 or bf16, got ${JSON.stringify(opts.dtype)}`);
      if (opts.grads && !opts.adapter) throw new InputError("--grads", "needs --adapter (the gradients are those of its LoRA tensors)");
      const inputs = await readForwardInputs(opts.inputs);
      if (opts.grads && !inputs.labels) throw new InputError(opts.inputs, `has no tensor "labels", which --grads needs for a loss`);
      const modelDir = await resolveModel(opts.model, { output, ...revisionOption(opts.revision) });
      const adapterDir = opts.adapter === undefined ? undefined : await resolveModel(opts.adapter, { output });
      const session = await openModelSession(modelDir, { adapterDir, dtype: opts.dtype as WeightDtype, matmulPrecision: parseMatmulPrecision(opts.matmul), output });
      const started = performance.now();
      let logits: Float32Array;
      let loss: number | undefined;
      let grads: TensorToWrite[] = [];
      if (opts.grads) {
        ({ logits, loss, grads } = loraGradients(session.backend, session.model, inputs));
      } else {
        const graph = session.inferenceGraph();
        const ctx = new ForwardContext(graph);
        try {
          const out = forwardMistral3(ctx, session.model, inputs);
          logits = session.backend.read(out.logits.value) as Float32Array;
          loss = out.loss ? (session.backend.read(out.loss.value) as Float32Array)[0] : undefined;
        } finally {
          graph.dispose();
          ctx.release();
        }
      }
      if (opts.grads) await writeSafetensors(opts.grads, grads, { format: "pt" });
      const seconds = (performance.now() - started) / 1000;
      const { batch: B, seqLen: T } = inputs;
      const V = logits.length / (B * T);
      const tensors = [{ name: "logits", dtype: "F32" as const, shape: [B, T, V], data: logits }];
      if (loss !== undefined) tensors.push({ name: "loss", dtype: "F32" as const, shape: [1], data: Float32Array.of(loss) });
      await writeSafetensors(opts.out, tensors, { format: "pt" });
      const result = { out: opts.out, grads: opts.grads ?? null, batch: B, seqLen: T, vocab: V, loss: loss ?? null, seconds, tokensPerSecond: (B * T) / seconds };
      output.result(result, () =>
        [
          `wrote ${opts.out}: logits [${B},${T},${V}]${loss !== undefined ? `, loss ${loss.toPrecision(6)}` : ""}`,
          ...(opts.grads ? [`wrote ${opts.grads}: gradients of ${grads.length} LoRA tensors`] : []),
          `${(B * T).toLocaleString("en")} tokens in ${seconds.toFixed(2)} s (${result.tokensPerSecond.toFixed(1)} tokens/s)`,
        ].join("\n"),
      );
    });
}

const KNOWN = new Set(["input_ids", "attention_mask", "pixel_values", "image_sizes", "labels"]);

/** Reads and checks the HF-named input tensors (every error names the file and the tensor). */
export async function readForwardInputs(file: string): Promise<Mistral3Inputs> {
  const source = await openSafetensors(file);
  try {
    const unknown = source.keys().filter((k) => !KNOWN.has(k));
    if (unknown.length > 0) {
      const shown = unknown.slice(0, 6).map((k) => `"${k}"`).join(", ");
      throw new InputError(file, `${unknown.length} unexpected tensor(s): ${shown}${unknown.length > 6 ? ", …" : ""}`, `an inputs file holds only ${[...KNOWN].join(", ")}`);
    }
    const ids = await readTensor(source, file, "input_ids", 2, true);
    if (!ids) throw new InputError(file, `has no tensor "input_ids"`);
    const [B, T] = ids.shape as [number, number];
    const ints = (t: StoredTensor) => toInt32(t);
    const mask = await readTensor(source, file, "attention_mask", 2, true);
    const labels = await readTensor(source, file, "labels", 2, true);
    for (const [name, t] of [["attention_mask", mask], ["labels", labels]] as const) {
      if (t && (t.shape[0] !== B || t.shape[1] !== T)) throw new InputError(file, `tensor "${name}" is [${t.shape.join(",")}], input_ids is [${B},${T}]`);
    }
    const maskValues = mask ? ints(mask) : undefined;
    if (maskValues?.some((m) => m !== 0 && m !== 1)) throw new InputError(file, `tensor "attention_mask" holds values other than 0 and 1`);
    const pixels = await readTensor(source, file, "pixel_values", 4, false);
    const sizes = await readTensor(source, file, "image_sizes", 2, true);
    if (Boolean(pixels) !== Boolean(sizes)) throw new InputError(file, `"pixel_values" and "image_sizes" must be given together`);
    const inputs: Mistral3Inputs = { batch: B, seqLen: T, inputIds: ints(ids), attentionMask: maskValues, labels: labels ? ints(labels) : undefined, source: file };
    if (pixels && sizes) {
      const [N, C, H, W] = pixels.shape as [number, number, number, number];
      if (sizes.shape[0] !== N || sizes.shape[1] !== 2) throw new InputError(file, `tensor "image_sizes" is [${sizes.shape.join(",")}], expected [${N},2] for ${N} image(s)`);
      inputs.images = { pixelValues: toFloat32(pixels), shape: [N, C, H, W], imageSizes: ints(sizes) };
    }
    return inputs;
  } finally {
    await source.close();
  }
}

async function readTensor(source: TensorSource, file: string, name: string, rank: number, integer: boolean): Promise<StoredTensor | undefined> {
  if (!source.has(name)) return undefined;
  const t = await source.read(name);
  if (t.shape.length !== rank) throw new InputError(file, `tensor "${name}" has shape [${t.shape.join(",")}], expected ${rank} dimensions`);
  const isInt = ["I64", "I32", "I16", "I8", "U8", "BOOL"].includes(t.dtype);
  if (integer !== isInt) throw new InputError(file, `tensor "${name}" is ${t.dtype}, expected ${integer ? "an integer dtype (I64)" : "a float dtype (F32)"}`);
  return t;
}
