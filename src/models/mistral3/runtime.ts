import { createGraph } from "../../autograd/tape.ts";
import type { Graph } from "../../autograd/graph.ts";
import { detectBackend, type BackendPreference } from "../../backends/cuda/detect.ts";
import type { Output } from "../../util/output.ts";
import { loadAdapter, readAdapterConfig, type LoraSettings } from "../../lora/adapter.ts";
import type { Backend, MatmulPrecision } from "../../tensor/backend.ts";
import { loadMistral3, type Mistral3Model } from "./model.ts";
import type { WeightDtype } from "./weights.ts";

/** A loaded model with the backend it lives on, as the CLI commands use it. */
export interface ModelSession {
  readonly backend: Backend;
  readonly model: Mistral3Model;
  readonly adapter: LoraSettings | null;
  /** A fresh inference graph on the model's backend. */
  inferenceGraph(): Graph;
}

/** Loads a model folder (and optionally a PEFT adapter folder) with a progress bar. */
export async function openModelSession(
  modelDir: string,
  opts: { adapterDir?: string; dtype?: WeightDtype; matmulPrecision?: MatmulPrecision; output: Output; backend?: BackendPreference },
): Promise<ModelSession> {
  // A broken adapter folder fails before minutes of weight loading, not after.
  if (opts.adapterDir) await readAdapterConfig(opts.adapterDir);
  const { backend, reason } = detectBackend({ prefer: opts.backend });
  opts.output.log(reason);
  let bar: ReturnType<Output["progress"]> | undefined;
  const model = await loadMistral3(modelDir, backend, {
    dtype: opts.dtype ?? "auto",
    matmulPrecision: opts.matmulPrecision,
    onProgress(done, total) {
      bar ??= opts.output.progress("loading weights", total, "tensors");
      bar.update(done);
    },
  });
  bar?.stop();
  const adapter = opts.adapterDir ? await loadAdapter(opts.adapterDir, model.linears, backend) : null;
  return { backend, model, adapter, inferenceGraph: () => createGraph(backend, { recording: false }) };
}
