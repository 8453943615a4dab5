import { createGraph } from "../../autograd/tape.ts";
import type { Graph } from "../../autograd/graph.ts";
import { detectBackend, type BackendPreference } from "../../backends/cuda/detect.ts";
import type { Output } from "../../util/output.ts";
import { resolveModelAndAdapter } from "../../hub/resolve.ts";
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

export interface ModelSessionOptions {
  /** PEFT adapter folder or Hub id to load on top. */
  readonly adapterDir?: string;
  /** Hub revision of the model when it is a Hub id without `@revision`. */
  readonly revision?: string;
  readonly dtype?: WeightDtype;
  readonly matmulPrecision?: MatmulPrecision;
  /** Progress and notes; pass `plainOutput` (src/util/output.ts) for log lines only. */
  readonly output: Output;
  readonly backend?: BackendPreference;
}

/**
 * Loads a model (and optionally a PEFT adapter) with a progress bar. Either may be a local folder
 * or a Hub id (`owner/name[@revision]`), fetched into the shared Hugging Face cache first.
 */
export async function openModelSession(modelOrId: string, opts: ModelSessionOptions): Promise<ModelSession> {
  const refs = await resolveModelAndAdapter(modelOrId, opts.adapterDir, { output: opts.output, ...(opts.revision !== undefined ? { revision: opts.revision } : {}) });
  const modelDir = refs.model.dir;
  const adapterDir = refs.adapter?.dir;
  // A broken adapter folder fails before minutes of weight loading, not after.
  if (adapterDir) await readAdapterConfig(adapterDir);
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
  const adapter = adapterDir ? await loadAdapter(adapterDir, model.linears, backend) : null;
  return { backend, model, adapter, inferenceGraph: () => createGraph(backend, { recording: false }) };
}
