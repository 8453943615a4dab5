import { readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { detectBackend } from "../backends/cuda/detect.ts";
import { type Output, plainOutput } from "../util/output.ts";
import { loadDataset } from "../data/load-dataset.ts";
import type { DatasetDict } from "../data/types.ts";
import { hubSettings } from "../hub/settings.ts";
import { resolveModelRef } from "../hub/resolve.ts";
import { isHubRepoId } from "../hub/snapshot.ts";
import { pushAdapterToHub, type PushResult } from "../hub/upload.ts";
import { initAdapter, loadAdapter, loraScopeExclude, saveAdapter, type LoraSettings } from "../lora/adapter.ts";
import { freeMistral3, loadMistral3, readMistral3Config } from "../models/mistral3/model.ts";
import type { Backend } from "../tensor/backend.ts";
import { resolveChatTemplate } from "../text/chat-template.ts";
import { renderPrompt } from "../text/prompt.ts";
import { folderName, hubIdOfCachedFolder, MODEL_CARD_FILE, saveCardInfo, writeModelCard, type ModelCardInfo } from "../lora/model-card.ts";
import { writeTrainingPrompt } from "../lora/training-prompt.ts";
import type { EvalMetrics } from "../metrics/run-metrics.ts";
import { trainingEvaluator } from "./evaluator.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { lockFolder } from "../util/lock.ts";
import { loadImageProcessorConfig } from "../vision/image-processor.ts";
import { listCheckpoints } from "./checkpoint.ts";
import { boundImageEdge, collate, type CollatorSettings, type TrainBatch, type TrainExample } from "./collator.ts";
import { resolveConfig, TUTORIAL_DEFAULTS, type TrainConfig } from "./config.ts";
import { checkTrainingMemory, SHAPE_SAMPLE } from "./memory-check.ts";
import type { MemoryDecision } from "./memory-plan.ts";
import { Rng } from "../util/rng.ts";
import { trainLoop, type MicroBatchSource, type StepRecord } from "./trainer.ts";
import type { Communicator } from "../dist/communicator.ts";

/**
 * `splint train` as a function: model folder + dataset → a run folder holding
 * config.resolved.json, train_log.jsonl, checkpoints/checkpoint-<step>/ and the final adapter/.
 */

export const RESOLVED_CONFIG_FILE = "config.resolved.json";
export const ADAPTER_DIR = "adapter";

export interface RunTrainingOptions {
  /** Model folder (Hugging Face layout, with tokenizer and processor files), or a Hub id (`owner/name[@revision]`). */
  modelDir: string;
  /** Hub revision of `modelDir` when it is a Hub id without `@revision` (default main). */
  revision?: string;
  /** A dataset folder (`splint data import` / Python datasets), a Hub dataset id, or one already in memory. */
  dataset: string | DatasetDict;
  /** Split to train on (default "train"). */
  split?: string;
  /** The base model's Hub id, for the adapter config and model card (default: from a Hub-cache folder). */
  baseModelId?: string;
  /** The dataset's Hub id, for the model card's front matter. */
  datasetId?: string;
  /** The run folder. */
  outDir: string;
  /** Settings over the tutorial's defaults. With resume, those given must agree with the run's. */
  config?: Partial<TrainConfig>;
  /** Where `config` came from, for error messages (a file name or "command-line flags"). */
  configSource?: string;
  /** Continue the run in outDir from its newest checkpoint. */
  resume?: boolean;
  /** Upload the final adapter to this Hub repo (needs HF_TOKEN). */
  pushToHub?: string;
  /** Default: CUDA when available, else CPU. */
  backend?: Backend;
  /**
   * The card's memory in bytes for the memory check (memory-check.ts), over what the CUDA device
   * reports; given on a CPU run, the check runs as if on such a card. Without it a CPU run is not checked.
   */
  gpuMemoryBytes?: number;
  output?: Output;
  onStep?: (record: StepRecord) => void;
  signal?: AbortSignal;
  /**
   * Data-parallel group (trainer.ts says how the work is split). Only rank 0 writes into outDir;
   * every rank reads it on resume, so the ranks share its filesystem.
   */
  communicator?: Communicator;
}

export interface TrainResult {
  runDir: string;
  adapterDir: string;
  configFile: string;
  logFile: string;
  /** metrics.jsonl (Trainer names, eval entries included); TensorBoard files are in RUN/tensorboard. */
  metricsFile: string;
  modelCard: string;
  checkpoints: string[];
  steps: number;
  evaluations: EvalMetrics[];
  stoppedEarly: number | null;
  /** Steps run by this call (fewer than `steps` after a resume). */
  history: StepRecord[];
  finalLoss: number | null;
  resumedFrom: string | null;
  /** Steps whose update was dropped for a non-finite loss or gradient (on_nan "skip-step"). */
  skippedSteps: number[];
  pushed: PushResult | null;
  seconds: number;
  /** The memory check's plan, or null when the run was not checked (CPU without gpuMemoryBytes). */
  memory: MemoryDecision | null;
}

export async function runTraining(opts: RunTrainingOptions): Promise<TrainResult> {
  const runDir = resolve(opts.outDir);
  // The ranks of one data-parallel run share the folder and rank 0 alone writes it, so it alone
  // holds the lock.
  if ((opts.communicator?.rank ?? 0) !== 0) return trainLocked(opts, runDir);
  // Two trainings into one folder would interleave their checkpoints and logs.
  const lock = await lockFolder(runDir, "splint train");
  try {
    if (lock.recoveredStale) (opts.output ?? plainOutput).log(`${runDir}: took over the lock of a process that is gone (pid ${lock.recoveredStale.pid}, since ${lock.recoveredStale.since})`);
    return await trainLocked(opts, runDir);
  } finally {
    lock.release();
  }
}

async function trainLocked(opts: RunTrainingOptions, runDir: string): Promise<TrainResult> {
  const started = performance.now();
  const output = opts.output ?? plainOutput;
  const configFile = join(runDir, RESOLVED_CONFIG_FILE);
  const checkpoints = await listCheckpoints(runDir);
  const lead = (opts.communicator?.rank ?? 0) === 0;
  let config: TrainConfig;
  let resumeFrom: string | null = null;
  if (opts.resume) {
    const saved = await readResolvedConfig(configFile);
    config = resolveConfig(TUTORIAL_DEFAULTS, saved, configFile);
    const asked = resolveConfig(config, opts.config ?? {}, opts.configSource ?? "settings");
    const changed = (Object.keys(config) as (keyof TrainConfig)[]).filter((k) => JSON.stringify(config[k]) !== JSON.stringify(asked[k]));
    if (changed.length > 0) {
      throw new InputError(
        opts.configSource ?? "settings",
        `--resume continues ${runDir} as configured, but ${changed.map((k) => `${k} (${JSON.stringify(asked[k])} vs the run's ${JSON.stringify(config[k])})`).join(", ")} differ`,
        `drop those settings, or start a new run folder`,
      );
    }
    if (checkpoints.length > 0) resumeFrom = checkpoints[checkpoints.length - 1]!.dir;
    else if (await exists(join(runDir, ADAPTER_DIR, "adapter_config.json"))) {
      throw new InputError(runDir, "holds a finished run saved without checkpoints (save_strategy no), so there is nothing to resume", "pass another --out folder");
    } else {
      // Stopped before its first checkpoint: nothing was kept, so resuming is starting over with
      // the run's own settings.
      output.log(`${runDir}: the run stopped before its first checkpoint; starting it over from step 0`);
    }
  } else {
    config = resolveConfig(TUTORIAL_DEFAULTS, opts.config ?? {}, opts.configSource ?? "settings");
    // The other ranks skip this: rank 0 may already have written config.resolved.json.
    if (lead && (checkpoints.length > 0 || (await exists(join(runDir, ADAPTER_DIR, "adapter_config.json"))))) {
      throw new InputError(runDir, "already holds a training run", "continue it with --resume, or pass another --out folder");
    }
    if (lead && (await exists(configFile))) output.log(`${runDir}: an earlier run stopped before its first checkpoint; starting over`);
  }

  if (opts.pushToHub !== undefined) {
    // Checked now rather than after hours of training.
    if (!isHubRepoId(opts.pushToHub) || !opts.pushToHub.includes("/")) throw new InputError(opts.pushToHub, "not a Hub repo id of the form owner/name");
    if (!hubSettings().token) throw new InputError("HF_TOKEN", "not set; --push-to-hub needs a token with write access", "export HF_TOKEN=hf_… (https://huggingface.co/settings/tokens)");
  }
  const loaded = typeof opts.dataset === "string" ? await loadDataset(opts.dataset, { output }) : null;
  const dataset = loaded ? loaded.dataset : (opts.dataset as DatasetDict);
  const datasetName = loaded ? loaded.name : "dataset";
  const split = opts.split ?? "train";
  const rows = dataset.splits.get(split);
  if (!rows || rows.length === 0) {
    throw new InputError(datasetName, `has no examples in split "${split}"`, `its splits: ${[...dataset.splits.keys()].join(", ") || "none"}`);
  }
  // class_names renames the labels (same count, same order): the answers the model is taught.
  const classNames = config.class_names ?? dataset.classNames;
  if (classNames.length !== dataset.classNames.length) {
    throw new InputError(opts.configSource ?? "settings", `class_names has ${classNames.length} names, the dataset ${dataset.classNames.length} classes (${dataset.classNames.join(", ")})`, "give one name per class, in label order");
  }
  const examples: TrainExample[] = rows.map((row, i) => ({ image: row.image.bytes, answer: classNames[row.label]!, name: row.image.path ?? `${split}[${i}]` }));
  const evalRows = config.eval_strategy === "no" ? [] : dataset.splits.get(config.eval_split);
  if (!evalRows || (config.eval_strategy !== "no" && evalRows.length === 0)) {
    throw new InputError(datasetName, `has no examples in split "${config.eval_split}", which eval_strategy "${config.eval_strategy}" evaluates`, `set eval_split to one of: ${[...dataset.splits.keys()].join(", ")} (splint data import --val-fraction makes a validation split)`);
  }

  // A Hub id is downloaded (or found in the cache) now, after the cheap checks above; the adapter
  // and the model card record the id rather than the cache folder, as PEFT's would.
  const base = await resolveModelRef(opts.modelDir, { output, ...(opts.revision !== undefined ? { revision: opts.revision } : {}) });
  const modelDir = base.dir;
  const baseModelId = opts.baseModelId ?? base.snapshot?.repo ?? hubIdOfCachedFolder(modelDir);
  const hubDatasetId = loaded && loaded.dir !== loaded.name ? loaded.name.split("@")[0]! : undefined;
  const tokenizer = await loadTokenizer(modelDir);
  const collator: CollatorSettings = {
    tokenizer,
    template: resolveChatTemplate(config.template, modelDir),
    processor: boundImageEdge(loadImageProcessorConfig(modelDir), config.max_image_edge),
    prompt: renderPrompt(config.prompt, classNames),
    lossOn: config.loss_on,
    maxSeqLen: config.max_seq_len,
  };

  let backend = opts.backend;
  if (!backend) {
    const choice = detectBackend();
    backend = choice.backend;
    output.log(choice.reason);
  }
  const memory = await checkTrainingMemory({
    modelDir,
    modelConfig: await readMistral3Config(modelDir),
    config,
    adapter: loraSettingsFor(config, baseModelId ?? opts.modelDir),
    backend,
    gpuMemoryBytes: opts.gpuMemoryBytes,
    sample: async () => {
      const source = shuffledSource(examples, config, collator);
      return Promise.all(Array.from({ length: Math.min(SHAPE_SAMPLE, source.length) }, (_, i) => source.get(0, i)));
    },
    resume: resumeFrom !== null,
    log: (line) => output.log(line),
  });
  if (memory) config = memory.config;
  else if (config.gradient_checkpointing === "auto") {
    config = { ...config, gradient_checkpointing: false };
    output.log("gradient_checkpointing auto → false (no card to plan against on this backend: activations are kept)");
  }
  let bar: ReturnType<Output["progress"]> | undefined;
  const model = await loadMistral3(modelDir, backend, {
    dtype: config.bf16 ? "auto" : "f32",
    matmulPrecision: config.bf16 ? "bf16" : "f32",
    onProgress(done, total) {
      bar ??= output.progress("loading weights", total, "tensors");
      bar.update(done);
    },
  });
  bar?.stop();
  try {
    let adapter: LoraSettings;
    if (resumeFrom) {
      adapter = await loadAdapter(resumeFrom, model.linears, backend);
    } else {
      adapter = loraSettingsFor(config, baseModelId ?? opts.modelDir);
      const paths = initAdapter(adapter, model.linears, backend, new Rng(config.seed));
      if (lead) await writeFileAtomic(configFile, `${JSON.stringify(config, null, 2)}\n`);
      output.log(`LoRA r=${config.r} alpha=${config.lora_alpha} on ${paths.length} linear layers (scope ${config.lora_scope})`);
    }
    output.log(`run folder: ${runDir} (${examples.length} examples of split "${split}")`);

    const result = await trainLoop({
      backend,
      model,
      adapter,
      config,
      source: shuffledSource(examples, config, collator),
      runDir,
      resumeFrom: resumeFrom ?? undefined,
      output,
      onStep: opts.onStep,
      signal: opts.signal,
      communicator: opts.communicator,
      evaluate:
        config.eval_strategy === "no"
          ? undefined
          : trainingEvaluator({ backend, model, modelDir, rows: evalRows, classNames, collator, batchSize: config.per_device_eval_batch_size }),
    });
    const adapterDir = join(runDir, ADAPTER_DIR);
    if (!lead) return { ...rankResult(runDir, adapterDir, configFile, result, resumeFrom, started), memory: memory?.decision ?? null };
    await saveAdapter(adapterDir, adapter, model.linears, backend);
    // How it was asked, so eval and predict ask it the same way.
    await writeTrainingPrompt(
      adapterDir,
      { template: config.template, promptTemplate: config.prompt, prompt: collator.prompt, classNames, maxImageEdge: config.max_image_edge, lossOn: config.loss_on },
      collator.template,
    );
    const lastStep = result.history[result.history.length - 1];
    const card: ModelCardInfo = {
      baseModel: baseModelId ?? folderName(modelDir),
      datasetId: opts.datasetId ?? hubDatasetId ?? null,
      datasetName: opts.datasetId ?? hubDatasetId ?? (loaded ? folderName(loaded.dir) : datasetName),
      split,
      examples: examples.length,
      classNames,
      config,
      steps: result.steps,
      stoppedEarly: result.stoppedEarly,
      finalLoss: lastStep ? lastStep.loss : null,
      evaluations: result.evaluations,
      prompt: collator.prompt,
      template: collator.template.name,
    };
    await saveCardInfo(adapterDir, card);
    const modelCard = await writeModelCard(adapterDir, card);
    output.log(`adapter: ${adapterDir} (model card ${modelCard})`);
    output.log(`log: ${result.logFile}`);
    let pushed: PushResult | null = null;
    if (opts.pushToHub) {
      pushed = await pushAdapterToHub(opts.pushToHub, adapterDir, { commitMessage: `splint train: ${result.steps} steps` });
      output.log(`pushed to ${pushed.url}`);
    }
    const last = [...result.history].reverse().find((r) => !r.skipped);
    return {
      runDir,
      adapterDir,
      configFile,
      logFile: result.logFile,
      metricsFile: result.metricsFile,
      modelCard,
      checkpoints: (await listCheckpoints(runDir)).map((c) => c.dir),
      steps: result.steps,
      evaluations: result.evaluations,
      stoppedEarly: result.stoppedEarly,
      history: result.history,
      finalLoss: last ? last.loss : null,
      resumedFrom: resumeFrom,
      skippedSteps: result.skippedSteps,
      pushed,
      seconds: (performance.now() - started) / 1000,
      memory: memory?.decision ?? null,
    };
  } finally {
    freeMistral3(model);
  }
}

/**
 * The adapter settings a config implies. A scope narrower than "all" becomes a PEFT regex over the
 * module paths, so Python peft selects exactly the same layers from adapter_config.json.
 */
export function loraSettingsFor(config: TrainConfig, baseModel: string | null): LoraSettings {
  const prefix = { language: String.raw`model\.language_model`, vision: String.raw`model\.vision_tower` };
  // A list narrowed to a scope becomes one regex with the list's suffix rule; a regex (or
  // all-linear) keeps its own meaning and the scope goes into exclude_modules instead.
  const list = Array.isArray(config.target_modules) ? config.target_modules : null;
  const names = list?.map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|");
  const scoped = config.lora_scope !== "all";
  return {
    r: config.r,
    lora_alpha: config.lora_alpha,
    lora_dropout: config.lora_dropout,
    target_modules: scoped && list ? `${prefix[config.lora_scope as "language" | "vision"]}\\..*\\.(?:${names})` : config.target_modules,
    exclude_modules: scoped && !list ? loraScopeExclude(config.lora_scope) : null,
    use_rslora: config.use_rslora,
    rank_pattern: {},
    alpha_pattern: {},
    base_model_name_or_path: baseModel,
    task_type: "CAUSAL_LM",
  };
}

/** Micro-batches of a seeded per-epoch shuffle (the same seed and epoch give the same order). */
export function shuffledSource(examples: readonly TrainExample[], config: TrainConfig, collator: CollatorSettings): MicroBatchSource {
  const bs = config.per_device_train_batch_size;
  const orders = new Map<number, number[]>();
  const orderOf = (epoch: number): number[] => {
    let order = orders.get(epoch);
    if (!order) {
      order = new Rng(Math.imul(config.seed ^ 0x5bd1e995, 31) + epoch).permutation(examples.length);
      orders.clear();
      orders.set(epoch, order);
    }
    return order;
  };
  return {
    length: Math.ceil(examples.length / bs),
    get(epoch: number, index: number): Promise<TrainBatch> {
      const picked = orderOf(epoch).slice(index * bs, (index + 1) * bs).map((i) => examples[i]!);
      return collate(picked, collator);
    },
  };
}

/** What a rank other than 0 returns: the run's paths (rank 0 writes them) and the steps it took part in. */
function rankResult(runDir: string, adapterDir: string, configFile: string, result: Awaited<ReturnType<typeof trainLoop>>, resumedFrom: string | null, started: number): Omit<TrainResult, "memory"> {
  const last = result.history[result.history.length - 1];
  return {
    runDir,
    adapterDir,
    configFile,
    logFile: result.logFile,
    metricsFile: result.metricsFile,
    modelCard: join(adapterDir, MODEL_CARD_FILE),
    checkpoints: result.checkpoints,
    steps: result.steps,
    evaluations: result.evaluations,
    stoppedEarly: result.stoppedEarly,
    skippedSteps: result.skippedSteps,
    history: result.history,
    finalLoss: last ? last.loss : null,
    resumedFrom,
    pushed: null,
    seconds: (performance.now() - started) / 1000,
  };
}

async function readResolvedConfig(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    throw new InputError(file, "not found, so there is no run to resume", "start the run without --resume");
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new InputError(file, `not valid JSON (${(error as Error).message})`);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
