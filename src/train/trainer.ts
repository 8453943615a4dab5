import { appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createGraph } from "../autograd/tape.ts";
import type { Output, Progress } from "../util/output.ts";
import { adapterKey, type LoraSettings } from "../lora/adapter.ts";
import { LoraBf16Copies } from "../lora/bf16-copies.ts";
import type { LoraLinear } from "../lora/lora-linear.ts";
import { ForwardContext } from "../models/mistral3/context.ts";
import { forwardMistral3, type Mistral3Model } from "../models/mistral3/model.ts";
import type { Backend } from "../tensor/backend.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError, InterruptedError, SplintError } from "../util/errors.ts";
import { stopReason } from "../util/interrupt.ts";
import { checkpointDir, listCheckpoints, loadOptimizerState, readTrainerState, saveCheckpoint, type TrainerState } from "./checkpoint.ts";
import type { TrainBatch } from "./collator.ts";
import type { TrainConfig } from "./config.ts";
import { AdamW, AdamW8bit, type Optimizer, type Parameter } from "./optimizer.ts";
import { Rng } from "../util/rng.ts";
import { learningRate } from "./schedule.ts";
import { isEvalEntry, METRICS_FILE, RunMetrics, type EvalMetrics } from "../metrics/run-metrics.ts";
import type { Communicator } from "../dist/communicator.ts";

/**
 * The training loop of the Hugging Face Trainer as the tutorial runs it: micro-batches of
 * per_device_train_batch_size examples, gradients accumulated over gradient_accumulation_steps of
 * them, each micro-batch's mean token loss divided by the number of micro-batches in its step
 * ("mean_per_micro", the fixtures' reference rule), clipping to max_grad_norm, AdamW with fp32
 * moments (or block-wise 8-bit ones with optim adamw_8bit), the learning-rate schedule stepped after each update (so update 1 runs at lr(0)).
 *
 * Everything that decides a step is a function of the step number and saved state: the data
 * position follows from the step, dropout seeds come from an Rng whose state is checkpointed,
 * the adapter and moments are saved in f32. So a resumed run continues bit for bit.
 *
 * Data parallel (a communicator of N ranks): the global step stays what it is on one process (the
 * same gradient_accumulation_steps micro-batches, same order, same dropout seeds); rank r runs the
 * micro-batches k with k mod N = r, each still weighted 1/count, and the gradients are summed over
 * the ranks. So N ranks compute the one-process step up to the order of the sums, the data order
 * does not depend on N (a run may resume on another rank count), and the optimizer steps
 * identically everywhere. Only rank 0 writes logs, metrics and checkpoints, and evaluates.
 */

/** Where micro-batches come from: a fixed count per epoch, each addressable by (epoch, index). */
export interface MicroBatchSource {
  readonly length: number;
  get(epoch: number, index: number): Promise<TrainBatch>;
}

export interface StepRecord {
  /** 1-based optimizer step. */
  step: number;
  /** Fractional epoch reached after this step. */
  epoch: number;
  /** The step's objective: Σ over its micro-batches of mean loss / micro-batches. */
  loss: number;
  lr: number;
  /** Total gradient norm before clipping. */
  grad_norm: number;
  tokens: number;
  supervised: number;
  images: number;
  seconds: number;
  /** With on_nan "skip-step": true when this step's update was dropped (non-finite loss or gradient). */
  skipped?: boolean;
}

export interface TrainLoopOptions {
  backend: Backend;
  model: Mistral3Model;
  /** The adapter's settings (written with every checkpoint); its pairs are attached to model.linears. */
  adapter: LoraSettings;
  config: TrainConfig;
  source: MicroBatchSource;
  runDir: string;
  /** Continue from the run's latest checkpoint, whose adapter must already be attached. */
  resumeFrom?: string;
  output: Output;
  /** Called after every optimizer step (tests, demos). */
  onStep?: (record: StepRecord) => void;
  /**
   * Checked between micro-batches: an abort stops the run at that safe point, saving a checkpoint
   * of the last finished step (unless one exists), and throws InterruptedError.
   */
  signal?: AbortSignal;
  /**
   * Evaluates the adapter as it is now (on the eval split), for eval_strategy steps/epoch; without
   * it, eval_strategy must be "no".
   */
  evaluate?: () => Promise<Omit<EvalMetrics, "step" | "epoch">>;
  /** Data-parallel group (absent: one process). */
  communicator?: Communicator;
  /**
   * Keep bf16 copies of the LoRA masters between passes, refreshed after each optimizer step
   * (LoraBf16Copies; default true). false casts them in every pass instead: the same numbers,
   * the reference the copies are tested against.
   */
  keepBf16Copies?: boolean;
}

export interface TrainLoopResult {
  /** Optimizer steps done (fewer than planned when early stopping ended the run). */
  steps: number;
  history: StepRecord[];
  checkpoints: string[];
  logFile: string;
  /** Steps whose update was dropped under on_nan "skip-step". */
  skippedSteps: number[];
  metricsFile: string;
  /** Every evaluation of the run, earlier ones of a resumed run included. */
  evaluations: EvalMetrics[];
  /** The step early stopping ended the run at, or null. */
  stoppedEarly: number | null;
}

/** Optimizer steps between evaluations (eval_steps; 0 means logging_steps, as in transformers). */
export function evalInterval(config: TrainConfig, totalSteps: number, logEvery: number): number {
  if (config.eval_steps === 0) return logEvery;
  return config.eval_steps < 1 ? Math.max(1, Math.ceil(totalSteps * config.eval_steps)) : Math.round(config.eval_steps);
}

/** Warm-up steps: warmup_steps when above 0, else ceil(total × warmup_ratio) (transformers' get_warmup_steps). */
export function warmupSteps(config: TrainConfig, totalSteps: number): number {
  return config.warmup_steps > 0 ? config.warmup_steps : Math.ceil(totalSteps * config.warmup_ratio);
}

/**
 * transformers' EarlyStoppingCallback: an evaluation improves when it beats the best so far
 * (lower eval_loss, higher eval_accuracy); after `patience` evaluations in a row without, stop.
 */
export function shouldStopEarly(evaluations: readonly EvalMetrics[], metric: TrainConfig["metric_for_best_model"], patience: number): boolean {
  if (patience < 1) return false;
  const better = (a: number, b: number) => (metric === "eval_loss" ? a < b : a > b);
  let best: number | null = null;
  let stale = 0;
  for (const e of evaluations) {
    const v = e[metric];
    if (best === null || better(v, best)) {
      best = v;
      stale = 0;
    } else stale++;
  }
  return stale >= patience;
}

export const TRAIN_LOG_FILE = "train_log.jsonl";

/** Optimizer steps of a run (transformers' rule: max_steps wins, else epochs × steps per epoch). */
export function planSteps(config: TrainConfig, microPerEpoch: number): { stepsPerEpoch: number; totalSteps: number } {
  if (microPerEpoch < 1) throw new InputError("dataset", "has no training examples");
  const stepsPerEpoch = Math.ceil(microPerEpoch / config.gradient_accumulation_steps);
  const totalSteps = config.max_steps > 0 ? config.max_steps : Math.ceil(config.num_train_epochs * stepsPerEpoch);
  if (totalSteps < 1) throw new InputError("num_train_epochs", `gives no optimizer step (${config.num_train_epochs} epochs of ${stepsPerEpoch} steps)`);
  return { stepsPerEpoch, totalSteps };
}

/** The LoRA tensors that train, under their PEFT names, in a fixed order. */
export function loraParameters(linears: ReadonlyMap<string, LoraLinear>): Parameter[] {
  const out: Parameter[] = [];
  for (const [path, l] of linears) {
    if (!l.lora) continue;
    out.push({ name: adapterKey(path, "A"), value: l.lora.a }, { name: adapterKey(path, "B"), value: l.lora.b });
  }
  return out;
}

export async function trainLoop(opts: TrainLoopOptions): Promise<TrainLoopResult> {
  const { backend, model, config, source, output } = opts;
  const comm = opts.communicator;
  const rank = comm?.rank ?? 0;
  const world = comm?.worldSize ?? 1;
  const lead = rank === 0;
  const params = loraParameters(model.linears);
  if (params.length === 0) throw new SplintError("no LoRA pairs are attached to the model, so nothing would train");
  const trainable = new Set(params.map((p) => p.value));
  const adamSettings = { beta1: config.adam_beta1, beta2: config.adam_beta2, eps: config.adam_epsilon, weightDecay: config.weight_decay };
  const optimizer: Optimizer = config.optim === "adamw_8bit" ? new AdamW8bit(backend, params, adamSettings) : new AdamW(backend, params, adamSettings);
  const GA = config.gradient_accumulation_steps;
  const { stepsPerEpoch, totalSteps } = planSteps(config, source.length);
  const logEvery = config.logging_steps < 1 ? Math.max(1, Math.ceil(totalSteps * config.logging_steps)) : Math.round(config.logging_steps);
  const logFile = join(opts.runDir, TRAIN_LOG_FILE);
  if (config.eval_strategy !== "no" && !opts.evaluate) throw new SplintError(`eval_strategy "${config.eval_strategy}" needs an evaluation split, and none was given to the training loop`);
  const evalEvery = evalInterval(config, totalSteps, logEvery);
  const warmup = warmupSteps(config, totalSteps);
  // Dropout seeds: a stream of its own, apart from the adapter init's Rng(seed).
  let rng = new Rng(config.seed ^ 0x2545f491);
  let startStep = 0;
  let bar: Progress | undefined;
  let metrics: RunMetrics | undefined;
  let bf16Copies: LoraBf16Copies | null = null;

  try {
    if (opts.resumeFrom) {
      const state = await readTrainerState(opts.resumeFrom);
      if (state.totalSteps !== totalSteps) {
        throw new InputError(opts.resumeFrom, `was saved by a run of ${state.totalSteps} steps, this run has ${totalSteps}`, "resume with the same config and dataset");
      }
      await loadOptimizerState(opts.resumeFrom, optimizer);
      rng = new Rng(state.rng);
      startStep = state.step;
      if (lead) await truncateLog(logFile, startStep);
      output.log(`resuming from ${opts.resumeFrom} (step ${startStep} of ${totalSteps})`);
    } else if (lead) {
      await writeFileAtomic(logFile, "");
    }
    const opened = lead ? await RunMetrics.open(opts.runDir, { tensorboard: config.report_to.includes("tensorboard"), resumeStep: opts.resumeFrom ? startStep : undefined }) : null;
    metrics = opened?.metrics;
    const evaluations = opened ? opened.earlier.filter(isEvalEntry) : [];
    // Every rank starts from rank 0's adapter, whatever each one initialised or loaded.
    if (comm) for (const p of params) await comm.broadcast(p.value, 0);
    // Made from the adapter as it now stands (initialised, loaded or broadcast).
    if (opts.keepBf16Copies !== false) bf16Copies = LoraBf16Copies.forModel(backend, model.linears.values());
    let stoppedEarly: number | null = null;

    const history: StepRecord[] = [];
    const checkpoints: string[] = [];
    bar = output.progress("training", totalSteps, "steps");
    bar.update(startStep);
    let window = { loss: 0, steps: 0, tokens: 0, images: 0, seconds: 0 };
    let lastCheckpoint: string | null = opts.resumeFrom ?? null;
    let lastCheckpointStep = startStep;
    const skippedSteps: number[] = [];
    const saveAt = async (done: number, rngState: number) => {
      const dir = checkpointDir(opts.runDir, done);
      const state: TrainerState = { step: done, epoch: Math.floor(done / stepsPerEpoch), microBatch: (done % stepsPerEpoch) * GA, rng: rngState, totalSteps };
      // Rank 0 writes; the other ranks only note where the checkpoint is (for their messages).
      if (lead) {
        await saveCheckpoint(dir, state, { settings: opts.adapter, linears: model.linears }, optimizer, backend);
        checkpoints.push(dir);
      }
      lastCheckpoint = dir;
      lastCheckpointStep = done;
    };
    // A stop request is honoured between micro-batches: the update of the unfinished step has not
    // happened, so the adapter and moments are those after `step` steps and can be saved as such.
    const stopIfAsked = async (step: number, rngAtStepStart: number) => {
      if (!opts.signal?.aborted) return;
      const signal = stopReason(opts.signal);
      if (step > lastCheckpointStep) await saveAt(step, rngAtStepStart);
      if (step === 0) {
        throw new InterruptedError(signal, `training stopped at step 1 (interrupted) before any step finished; nothing to resume`, "run the same command again: it starts over");
      }
      throw new InterruptedError(signal, `training stopped at step ${step + 1} (interrupted); ${lastCheckpoint} holds the ${step} finished step${step === 1 ? "" : "s"}`, "continue with the same command and --resume");
    };

    for (let step = startStep; step < totalSteps; step++) {
      const started = performance.now();
      const rngAtStepStart = rng.snapshot;
      const epoch = Math.floor(step / stepsPerEpoch);
      const first = (step % stepsPerEpoch) * GA;
      const count = Math.min(GA, source.length - first);
      const grads: (Tensor | null)[] = params.map(() => null);
      // This rank's micro-batch mean losses, [1] each on the device: read with the gradient norm
      // in one read after the last micro-batch, so no micro-batch waits on the host.
      const losses: Tensor[] = [];
      let sumSquares: Tensor | null = null;
      let objective = 0;
      let tokens = 0;
      let supervised = 0;
      let images = 0;
      try {
        for (let k = 0; k < count; k++) {
          await stopIfAsked(step, rngAtStepStart);
          // Every rank draws every micro-batch's seed, so the seeds match the one-process run.
          const dropoutSeed = config.lora_dropout > 0 ? rng.seed() : undefined;
          if (k % world !== rank) continue;
          const batch = await source.get(epoch, first + k);
          losses.push(microStep(backend, model, batch, { trainable, dropoutSeed, bf16Copies, recompute: config.gradient_checkpointing, weight: 1 / count }, params, grads));
          tokens += batch.tokens;
          supervised += batch.supervised;
          images += batch.images;
        }
        const where = `step ${step + 1} (epoch ${epoch + 1})`;
        const keep = lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint}` : "no checkpoint was saved yet";
        // A pair no input reached (the vision tower in a text-only batch, or a rank without a
        // micro-batch this step) has a zero gradient.
        grads.forEach((g, i) => {
          if (!g) grads[i] = backend.zeros(params[i]!.value.shape, "f32");
        });
        const full = grads as Tensor[];
        // Summed before any check, so every rank sees the same loss and norm and decides alike.
        if (comm) for (const g of full) await comm.allReduce(g, "sum");
        // Σg² stays on the device for the clipped step; it and the losses come back in one read
        // (the step's one host sync). The objective is summed on the host in f64 in micro-batch
        // order, each loss weighted 1/count, as the loss was read per micro-batch before.
        sumSquares = backend.sumSquaresMany(full);
        const scalars = backend.concatRows([...losses, sumSquares]);
        let squares: number;
        try {
          const host = backend.read(scalars);
          for (let k = 0; k < losses.length; k++) objective += host[k]! * (1 / count);
          squares = host[losses.length]!;
        } finally {
          scalars.free();
        }
        if (comm) {
          const totals = backend.upload(Float32Array.from([objective, tokens, supervised, images]), [4], "f32");
          try {
            await comm.allReduce(totals, "sum");
            [objective, tokens, supervised, images] = Array.from(backend.read(totals)) as [number, number, number, number];
          } finally {
            totals.free();
          }
        }
        // The norm before clipping, as clip_grad_norm_ returns it; clipping itself happens inside
        // the optimizer step, from the device Σg².
        const gradNorm = Number.isFinite(objective) ? Math.sqrt(squares) : Number.NaN;
        const problem = !Number.isFinite(objective)
          ? `the training loss is ${objective} at ${where}`
          : !Number.isFinite(gradNorm)
            ? `the gradient norm is ${gradNorm} at ${where} (first non-finite gradient: ${firstNonFiniteGradient(backend, params, full)})`
            : null;
        if (problem !== null) {
          if (config.on_nan === "stop") {
            throw new SplintError(
              `${problem}; training stopped and ${keep}`,
              "lower learning_rate, raise warmup_steps or lower max_grad_norm, then --resume from that checkpoint (or train with --on-nan skip-step to drop such steps)",
            );
          }
          output.log(`${problem}; this step's update is skipped (on_nan skip-step)`);
          skippedSteps.push(step + 1);
          const seconds = (performance.now() - started) / 1000;
          const lr = learningRate(config.lr_scheduler_type, config.learning_rate, step, warmup, totalSteps);
          const record: StepRecord = { step: step + 1, epoch: (step + 1) / stepsPerEpoch, loss: objective, lr, grad_norm: gradNorm, tokens, supervised, images, seconds, skipped: true };
          history.push(record);
          opts.onStep?.(record);
          bar.update(step + 1, { skipped: skippedSteps.length });
          if (lead) await appendFile(logFile, `${JSON.stringify({ step: step + 1, epoch: Number(record.epoch.toFixed(4)), skipped: true, reason: problem })}\n`);
        } else {
          const lr = learningRate(config.lr_scheduler_type, config.learning_rate, step, warmup, totalSteps);
          optimizer.step(full, lr, config.max_grad_norm > 0 ? { sumSquares, maxNorm: config.max_grad_norm } : undefined);
          bf16Copies?.refresh();
          const seconds = (performance.now() - started) / 1000;
          const record: StepRecord = { step: step + 1, epoch: (step + 1) / stepsPerEpoch, loss: objective, lr, grad_norm: gradNorm, tokens, supervised, images, seconds };
          history.push(record);
          opts.onStep?.(record);
          window = { loss: window.loss + objective, steps: window.steps + 1, tokens: window.tokens + tokens, images: window.images + images, seconds: window.seconds + seconds };
          bar.update(step + 1, { loss: objective, lr });
          if (metrics && ((step + 1) % logEvery === 0 || step + 1 === totalSteps)) {
            const memory = backend.memory();
            const entry = {
              step: step + 1,
              epoch: Number(record.epoch.toFixed(4)),
              loss: window.loss / window.steps,
              lr,
              grad_norm: gradNorm,
              tokens_per_s: window.tokens / window.seconds,
              images_per_s: window.images / window.seconds,
              memory_live_bytes: memory.live,
              memory_peak_bytes: memory.peak,
            };
            await appendFile(logFile, `${JSON.stringify(entry)}\n`);
            await metrics.train({
              step: entry.step,
              epoch: entry.epoch,
              loss: entry.loss,
              learning_rate: lr,
              grad_norm: gradNorm,
              tokens_per_second: entry.tokens_per_s,
              images_per_second: entry.images_per_s,
              memory_live_bytes: memory.live,
              memory_peak_bytes: memory.peak,
            });
            window = { loss: 0, steps: 0, tokens: 0, images: 0, seconds: 0 };
          }
        }
      } finally {
        for (const g of grads) g?.free();
        for (const l of losses) l.free();
        sumSquares?.free();
      }

      const done = step + 1;
      const epochEnd = done % stepsPerEpoch === 0 || done === totalSteps;
      const evalNow = (config.eval_strategy === "steps" && done % evalEvery === 0) || (config.eval_strategy === "epoch" && epochEnd);
      if (evalNow && opts.evaluate && lead) {
        const result: EvalMetrics = { step: done, epoch: Number((done / stepsPerEpoch).toFixed(4)), ...(await opts.evaluate()) };
        evaluations.push(result);
        await metrics?.eval(result);
        output.log(`eval at step ${done}: loss ${result.eval_loss.toFixed(4)}, accuracy ${(100 * result.eval_accuracy).toFixed(1)}% (${result.eval_samples} examples)`);
        if (shouldStopEarly(evaluations, config.metric_for_best_model, config.early_stopping_patience)) stoppedEarly = done;
      }
      if (evalNow && comm) {
        // Rank 0 alone evaluates; the others learn its early-stopping decision from it.
        const flag = backend.upload(Float32Array.from([stoppedEarly === null ? 0 : 1]), [1], "f32");
        try {
          await comm.broadcast(flag, 0);
          stoppedEarly = backend.read(flag)[0] === 1 ? done : null;
        } finally {
          flag.free();
        }
      }
      const save = (config.save_strategy === "steps" && config.save_steps > 0 && done % config.save_steps === 0) || (config.save_strategy === "epoch" && epochEnd);
      if (save) await saveAt(done, rng.snapshot);
      if (stoppedEarly !== null) {
        output.log(`early stopping at step ${done}: ${config.metric_for_best_model} has not improved for ${config.early_stopping_patience} evaluation(s)`);
        break;
      }
    }
    return { steps: stoppedEarly ?? totalSteps, history, checkpoints, logFile, metricsFile: metrics?.file ?? join(opts.runDir, METRICS_FILE), evaluations, stoppedEarly, skippedSteps };
  } finally {
    bar?.stop();
    metrics?.close();
    optimizer.free();
    bf16Copies?.free();
  }
}

/** The PEFT name of the first parameter whose gradient holds NaN or ±Infinity, with the value. */
export function firstNonFiniteGradient(backend: Backend, params: readonly Parameter[], grads: readonly Tensor[]): string {
  for (let i = 0; i < grads.length; i++) {
    const values = backend.read(grads[i]!) as Float32Array;
    for (let j = 0; j < values.length; j++) {
      if (!Number.isFinite(values[j]!)) return `${params[i]!.name}[${j}] = ${values[j]}`;
    }
  }
  return "none found (the norm itself overflowed)";
}

/**
 * Forward and backward of one micro-batch; adds weight × d(mean loss) into grads (aligned with
 * params; the first gradient of each tensor is kept as it is). Returns the mean loss as a [1]
 * tensor the caller frees; nothing here waits on the host.
 */
function microStep(
  backend: Backend,
  model: Mistral3Model,
  batch: TrainBatch,
  opts: { trainable: ReadonlySet<Tensor>; dropoutSeed: number | undefined; bf16Copies: LoraBf16Copies | null; recompute: TrainConfig["gradient_checkpointing"]; weight: number },
  params: readonly Parameter[],
  grads: (Tensor | null)[],
): Tensor {
  // true: every layer recomputed; "selective": its norms' and SwiGLU's outputs remade where read.
  const graph = createGraph(backend, { recording: true, evictElementwise: opts.recompute === "selective" });
  const ctx = new ForwardContext(graph, { trainable: opts.trainable, dropoutSeed: opts.dropoutSeed, bf16Copies: opts.bf16Copies });
  try {
    const { loss } = forwardMistral3(ctx, model, batch.inputs, { checkpointLayers: opts.recompute === true, scoredPositionsOnly: true });
    // A copy outlives the graph's buffers, which dispose frees.
    const value = backend.copy(loss!.value);
    try {
      graph.backward(loss!, opts.weight);
      // Later micro-batches' gradients go into the step's sums in one launch (Backend.addMany).
      const sums: Tensor[] = [];
      const added: Tensor[] = [];
      params.forEach((p, i) => {
        const v = ctx.varOf(p.value);
        const g = v?.grad;
        if (!v || !g) return;
        v.grad = null;
        const acc = grads[i];
        if (acc) {
          sums.push(acc);
          added.push(g);
        } else {
          grads[i] = g;
        }
      });
      try {
        if (sums.length > 0) backend.addMany(sums, added);
      } finally {
        for (const g of added) g.free();
      }
    } catch (err) {
      value.free();
      throw err;
    }
    return value;
  } finally {
    graph.dispose();
    ctx.release();
  }
}

/** Drops log lines past the step a resumed run restarts from (they will be written again). */
async function truncateLog(file: string, step: number): Promise<void> {
  let text = "";
  try {
    text = await readFile(file, "utf8");
  } catch {
    // no log yet
  }
  const kept = text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .filter((line) => {
      try {
        return (JSON.parse(line) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
  await writeFileAtomic(file, kept.map((l) => `${l}\n`).join(""));
}

/** The newest checkpoint of a run folder, or null. */
export async function latestCheckpoint(runDir: string): Promise<string | null> {
  const all = await listCheckpoints(runDir);
  return all.length > 0 ? all[all.length - 1]!.dir : null;
}
