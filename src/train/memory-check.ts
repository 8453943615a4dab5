/**
 * `splint train`'s memory check, run before the first weight is read: plans the run with the
 * memory planner (memory-plan.ts) against the card, adopts the setting it picks, and refuses a run
 * that cannot fit instead of letting it die in cudaMalloc minutes later.
 */
import type { LoraSettings } from "../lora/adapter.ts";
import type { Mistral3Config } from "../models/mistral3/config.ts";
import type { Backend } from "../tensor/backend.ts";
import { SplintError } from "../util/errors.ts";
import type { TrainBatch } from "./collator.ts";
import type { TrainConfig } from "./config.ts";
import { loraTargetsOf, microBatchShapeOf, residentWeightsOf } from "./memory-inputs.ts";
import { chooseSetting, deviceMemoryFromName, formatDecision, refusal, type MemoryDecision } from "./memory-plan.ts";

/** Micro-batches collated to measure the data's shape (the first ones of the first epoch). */
export const SHAPE_SAMPLE = 4;

export interface MemoryCheckOptions {
  modelDir: string;
  modelConfig: Mistral3Config;
  config: TrainConfig;
  adapter: LoraSettings;
  backend: Backend;
  /** Card memory in bytes, over what the backend reports (--gpu-memory); checks a CPU run too. */
  gpuMemoryBytes?: number;
  /** The first micro-batches the run will train on. */
  sample: () => Promise<TrainBatch[]>;
  /** A resumed run keeps its settings: the check may only refuse. */
  resume: boolean;
  log: (line: string) => void;
}

/** The refusal: a SplintError that carries the plan (every setting tried and its estimate). */
export class MemoryPlanError extends SplintError {
  constructor(
    message: string,
    hint: string,
    readonly decision: MemoryDecision,
  ) {
    super(message, hint);
    this.name = "MemoryPlanError";
  }
}

export interface MemoryCheckResult {
  config: TrainConfig;
  decision: MemoryDecision;
}

/** The card's memory: the override, else the CUDA device's, else null (a CPU run is not checked). */
export function cardMemory(backend: Backend, override: number | undefined): { bytes: number | null; source: string } {
  if (override !== undefined) return { bytes: override, source: "--gpu-memory" };
  if (backend.name !== "cuda" || !("device" in backend) || typeof backend.device !== "string") return { bytes: null, source: `${backend.name} backend` };
  return { bytes: deviceMemoryFromName(backend.device), source: backend.device };
}

/** Null when there is no card to check against (CPU backend without --gpu-memory). */
export async function checkTrainingMemory(opts: MemoryCheckOptions): Promise<MemoryCheckResult | null> {
  const device = cardMemory(opts.backend, opts.gpuMemoryBytes);
  if (device.bytes === null) return null;
  const { config, modelConfig } = opts;
  const weights = await residentWeightsOf(opts.modelDir, modelConfig, config.bf16 ? "auto" : "f32");
  const perRow = microBatchShapeOf(await opts.sample(), modelConfig.vision_config.patch_size);
  const decision = chooseSetting(
    { config: modelConfig, weights, lora: { targets: loraTargetsOf(modelConfig, opts.adapter), dropout: opts.adapter.lora_dropout }, optimizer: config.optim, precision: config.bf16 ? "bf16" : "f32" },
    { gradient_checkpointing: config.gradient_checkpointing, per_device_train_batch_size: config.per_device_train_batch_size, gradient_accumulation_steps: config.gradient_accumulation_steps },
    (rows) => ({ rows, ...perRow }),
    device,
    !opts.resume,
  );
  for (const line of formatDecision(decision)) opts.log(line);
  if (!decision.fits) {
    throw new MemoryPlanError(
      `this run ${refusal(decision)}`,
      (decision.estimate.fp8Weights === 0 ? "use the FP8 checkpoint of the model, " : "") +
        "lower max_image_edge or max_seq_len, or train a smaller model" +
        (opts.resume ? "; a resumed run keeps its micro-batch, so a new run could also shrink it" : "") +
        (opts.gpuMemoryBytes === undefined ? "" : "; --gpu-memory sets the card's size in GiB"),
      decision,
    );
  }
  return { config: { ...config, ...decision.setting }, decision };
}
