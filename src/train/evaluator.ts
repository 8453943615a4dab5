import { createGraph } from "../autograd/tape.ts";
import type { DatasetRow } from "../data/types.ts";
import { ClassPrompts } from "../eval/class-prompts.ts";
import type { ClassifierOptions } from "../eval/classify.ts";
import { classifyRows } from "../eval/evaluate.ts";
import { LoraBf16Copies } from "../lora/bf16-copies.ts";
import type { EvalMetrics } from "../metrics/run-metrics.ts";
import { readGenerationConfig } from "../models/mistral3/generation-config.ts";
import { ForwardContext } from "../models/mistral3/context.ts";
import { forwardMistral3, type Mistral3Model } from "../models/mistral3/model.ts";
import type { Backend } from "../tensor/backend.ts";
import { collate, type CollatorSettings } from "./collator.ts";

/**
 * Evaluation during training (eval_strategy): the adapter as it stands, dropout off, on the eval
 * split, measured two ways —
 * - eval_loss: the training objective (same collator: template, prompt, loss_on, max_seq_len),
 *   each batch's mean token loss weighted by its examples, as the Trainer's evaluation loop does;
 * - eval_accuracy: score mode (every class answer ranked by its log-likelihood after the prompt),
 *   which needs no generation and always names a class, so it is cheap and comparable over steps.
 */
export function trainingEvaluator(opts: {
  readonly backend: Backend;
  readonly model: Mistral3Model;
  readonly modelDir: string;
  readonly rows: readonly DatasetRow[];
  /** The answers taught, in label order. */
  readonly classNames: readonly string[];
  readonly collator: CollatorSettings;
  readonly batchSize: number;
}): () => Promise<Omit<EvalMetrics, "step" | "epoch">> {
  const { backend, model, rows, collator } = opts;
  const generation = readGenerationConfig(opts.modelDir);
  const classifier: ClassifierOptions = {
    model,
    newGraph: () => createGraph(backend, { recording: false }),
    tokenizer: collator.tokenizer,
    prompts: new ClassPrompts(collator.tokenizer, collator.template, opts.classNames, collator.prompt),
    mode: "score",
    maxNewTokens: 1,
    eosTokenIds: generation.eosTokenIds ?? [collator.tokenizer.eosId],
    padTokenId: generation.padTokenId ?? model.config.text_config.pad_token_id ?? collator.tokenizer.padId,
  };
  return async () => {
    const started = performance.now();
    let weighted = 0;
    const bf16Copies = LoraBf16Copies.forModel(backend, model.linears.values());
    try {
      for (let start = 0; start < rows.length; start += opts.batchSize) {
        const slice = rows.slice(start, start + opts.batchSize);
        const batch = await collate(
          slice.map((r, i) => ({ image: r.image.bytes, answer: opts.classNames[r.label]!, name: r.image.path ?? `eval[${start + i}]` })),
          collator,
        );
        const graph = createGraph(backend, { recording: false });
        const ctx = new ForwardContext(graph, { bf16Copies });
        try {
          const { loss } = forwardMistral3(ctx, model, batch.inputs, { checkpointLayers: false, scoredPositionsOnly: true });
          weighted += (backend.read(loss!.value) as Float32Array)[0]! * slice.length;
        } finally {
          graph.dispose();
          ctx.release();
        }
      }
    } finally {
      bf16Copies?.free();
    }
    const predictions = await classifyRows(classifier, collator.processor, rows, opts.batchSize);
    const correct = predictions.filter((p) => p.predicted === p.label).length;
    return {
      eval_loss: weighted / rows.length,
      eval_accuracy: correct / rows.length,
      eval_samples: rows.length,
      eval_runtime: (performance.now() - started) / 1000,
    };
  };
}
