/**
 * splint's LoRA training-step benchmark on the tutorial's micro-batch (issue 6, bench/README.md):
 * random bf16 weights of the Ministral 3 3B/8B/14B architecture built in memory, two examples of
 * one 644×644 image (552 image tokens), 160 prompt and 8 answer tokens each, completion-only loss,
 * gradient checkpointing, LoRA r16/alpha 32/dropout 0.05 on q,k,v,o,gate,up,down of the decoder and
 * the vision tower (PEFT suffix match), one AdamW step per micro-batch.
 *
 *   node --import tsx bench/train-step.ts --size 3b [--steps 3] [--warmup 1] [--out FILE.json]
 *   node --import tsx bench/train-step.ts --size 3b --plan         the HF config.json, the workload
 *                                                                  and the FLOP count, for the
 *                                                                  Python reference (no weights)
 *   --backend cpu --size tiny --image-size 56 --prompt-tokens 24   a local smoke run
 *   --weights fp8     the decoder linears in e4m3 with per-tensor scales, as the FP8 Instruct
 *                     checkpoints store them (workload.ts randomWeights); default bf16
 *   --lora-up-ops on  the bf16 tier's LoRA products with B through Backend.loraUp /
 *                     loraUpBackward (createGraph's loraUpOps) instead of cuBLASLt matmuls; default off
 *   --pdl off         without programmatic dependent launch (CudaBackend.setProgrammaticLaunch: each
 *                     kernel may be scheduled while the one before it finishes); default: the
 *                     backend's, on where the device has it (SPLINT_CUDA_PDL=0: off)
 *
 * Timing: each step ends with the device synchronised before the host clock is read; the result is
 * the median over the measured steps after the warm-up. One extra step afterwards synchronises at
 * the phase boundaries (vision tower + projector, decoder, head + loss, backward, optimizer) for a
 * profile; its total is reported separately since the synchronisations themselves cost a little.
 * On CUDA two more steps follow: one timed by CUDA events around every backend call (the op-class
 * profile, step-profile.ts) and one recorded by CUPTI, with nothing added to the stream, for the
 * exact GPU busy and idle time (`timeline`, step-timeline.ts; null where CUPTI is unavailable).
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { createGraph } from "../src/autograd/tape.ts";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { CudaError } from "../src/backends/cuda/errors.ts";
import { timelineFrom } from "../src/backends/cuda/activity.ts";
import { type CudaBackend, createCudaBackend } from "../src/backends/cuda/index.ts";
import { parseMatmulPrecision } from "../src/cli/matmul-flag.ts";
import { profileBackend, profileMarkdown, type StepProfile } from "./step-profile.ts";
import { stepTimeline, type StepTimeline, timelineMarkdown } from "./step-timeline.ts";
import { initAdapter, type LoraSettings } from "../src/lora/adapter.ts";
import { LoraBf16Copies } from "../src/lora/bf16-copies.ts";
import { parseMistral3Config, type Mistral3Config } from "../src/models/mistral3/config.ts";
import { ForwardContext } from "../src/models/mistral3/context.ts";
import { buildMistral3, forwardMistral3, type Mistral3Model } from "../src/models/mistral3/model.ts";
import type { Backend, MatmulPrecision } from "../src/tensor/backend.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import { AdamW, type Parameter } from "../src/train/optimizer.ts";
import { Rng } from "../src/util/rng.ts";
import {
  buildInputs,
  hfConfig,
  imageTokenBlock,
  LORA,
  median,
  OPTIMIZER,
  plannedStepMemory,
  randomWeights,
  SIZES,
  type Size,
  TUTORIAL_WORKLOAD,
  WEIGHT_KINDS,
  type WeightKind,
  type Workload,
} from "./workload.ts";

/** Names the timeline keeps, by total GPU time (the Markdown shows the first 10). */
const TIMELINE_NAMES = 20;

/** Dense bf16 tensor-core peak of the H100 SXM and H200 (datasheet, without sparsity). */
const PEAK_BF16_FLOPS = 989.4e12;

/**
 * Model FLOPs of one step, counted per matrix product the step must run (bf16 weights frozen,
 * LoRA products and elementwise work left out):
 *   linears inside checkpointed layers (vision and decoder): 3 × 2·in·out·rows
 *     (forward, recomputation in backward, input gradient; no weight gradient for frozen weights)
 *   projector and lm_head (not checkpointed, inputs need gradients): 2 × 2·in·out·rows
 *   patch conv (its input is pixels): 1 × 2·in·out·rows
 *   attention (QKᵀ and PV, only the pairs the mask keeps): 4 × 4·heads·head_dim·pairs
 *     (forward, recomputation, backward ≈ 2 forwards)
 * For the decoder this is 6·N·tokens, the usual count with recomputation.
 */
function stepFlops(config: Mistral3Config, w: Workload, seqLen: number): { flops: number; formula: string; linearParams: number } {
  const v = config.vision_config;
  const t = config.text_config;
  const patches = w.batch * (w.imageSize / v.patch_size) ** 2;
  const merged = patches / config.spatial_merge_size ** 2;
  const tokens = w.batch * seqLen;
  const visionLayer = 4 * v.hidden_size * v.hidden_size + 3 * v.hidden_size * v.intermediate_size;
  const q = t.num_attention_heads * t.head_dim;
  const kv = t.num_key_value_heads * t.head_dim;
  const decoderLayer = t.hidden_size * (2 * q + 2 * kv) + 3 * t.hidden_size * t.intermediate_size;
  const patchConv = v.hidden_size * v.num_channels * v.patch_size ** 2;
  const projector = v.hidden_size * v.hidden_size * config.spatial_merge_size ** 2 + v.hidden_size * t.hidden_size + t.hidden_size * t.hidden_size;
  const head = t.vocab_size * t.hidden_size;
  const segment = patches / w.batch;
  const visionPairs = w.batch * segment * segment;
  const decoderPairs = w.batch * ((seqLen * (seqLen + 1)) / 2);
  const flops =
    6 * v.num_hidden_layers * visionLayer * patches +
    6 * t.num_hidden_layers * decoderLayer * tokens +
    2 * patchConv * patches +
    4 * projector * merged +
    4 * head * tokens +
    16 * v.num_hidden_layers * v.num_attention_heads * v.head_dim * visionPairs +
    16 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * decoderPairs;
  const formula =
    "6·(vision layer linears)·patches + 6·(decoder layer linears)·tokens + 2·patch_conv·patches + 4·projector·merged_patches + 4·lm_head·tokens + 16·layers·heads·head_dim·attended_pairs (vision and causal decoder)";
  const linearParams = v.num_hidden_layers * visionLayer + t.num_hidden_layers * decoderLayer + patchConv + projector + head;
  return { flops, formula, linearParams };
}

interface Plan {
  size: Size;
  config: Record<string, unknown>;
  workload: Workload & { seqLen: number; imageTokensPerRow: number; tokensPerStep: number; patchesPerStep: number };
  lora: LoraSettings;
  optimizer: typeof OPTIMIZER;
  flopsPerStep: number;
  flopsFormula: string;
  linearParams: number;
  peakFlops: number;
}

function makePlan(size: Size, w: Workload): Plan {
  const raw = hfConfig(size);
  const config = parseMistral3Config(raw, `${size} config`);
  const v = config.vision_config;
  const imageTokensPerRow = imageTokenBlock(w.imageSize, v.patch_size, config.spatial_merge_size).length;
  const seqLen = imageTokensPerRow + w.promptTokens + w.answerTokens;
  const { flops, formula, linearParams } = stepFlops(config, w, seqLen);
  return {
    size,
    config: raw,
    workload: {
      ...w,
      seqLen,
      imageTokensPerRow,
      tokensPerStep: w.batch * seqLen,
      patchesPerStep: w.batch * (w.imageSize / v.patch_size) ** 2,
    },
    lora: LORA,
    optimizer: OPTIMIZER,
    flopsPerStep: flops,
    flopsFormula: formula,
    linearParams,
    peakFlops: PEAK_BF16_FLOPS,
  };
}

interface PhaseTimes {
  visionMs: number;
  decoderMs: number;
  headLossMs: number;
  backwardMs: number;
  optimizerMs: number;
  totalMs: number;
}


function main(): Promise<void> | void {
  const { values } = parseArgs({
    options: {
      size: { type: "string", default: "3b" },
      steps: { type: "string", default: "3" },
      warmup: { type: "string", default: "1" },
      backend: { type: "string", default: "cuda" },
      matmul: { type: "string", default: "bf16" },
      recompute: { type: "string", default: "full" },
      out: { type: "string" },
      plan: { type: "boolean", default: false },
      "image-size": { type: "string", default: String(TUTORIAL_WORKLOAD.imageSize) },
      "prompt-tokens": { type: "string", default: String(TUTORIAL_WORKLOAD.promptTokens) },
      "answer-tokens": { type: "string", default: String(TUTORIAL_WORKLOAD.answerTokens) },
      batch: { type: "string", default: String(TUTORIAL_WORKLOAD.batch) },
      weights: { type: "string", default: "bf16" },
      "lora-up-ops": { type: "string", default: "off" },
      pdl: { type: "string" },
    },
  });
  const size = values.size as Size;
  if (!SIZES.includes(size)) throw new Error(`--size must be one of ${SIZES.join(", ")}`);
  const weights = values.weights as WeightKind;
  if (!WEIGHT_KINDS.includes(weights)) throw new Error(`--weights must be one of ${WEIGHT_KINDS.join(", ")}`);
  const workload: Workload = {
    batch: Number(values.batch),
    imageSize: Number(values["image-size"]),
    promptTokens: Number(values["prompt-tokens"]),
    answerTokens: Number(values["answer-tokens"]),
  };
  if (workload.imageSize % 28 !== 0) throw new Error("--image-size must be a multiple of 28 (patch 14 × merge 2)");
  const plan = makePlan(size, workload);
  if (values.plan) {
    process.stdout.write(`${JSON.stringify(plan, null, 2)}\n`);
    return;
  }
  if (values.recompute !== "full" && values.recompute !== "selective" && values.recompute !== "none") {
    throw new Error("--recompute must be full (gradient checkpointing of every layer), selective (norm and SwiGLU outputs remade in the backward) or none");
  }
  if (values["lora-up-ops"] !== "on" && values["lora-up-ops"] !== "off") throw new Error("--lora-up-ops must be on or off");
  const loraUpOps = values["lora-up-ops"] === "on";
  if (values.pdl !== undefined && values.pdl !== "on" && values.pdl !== "off") throw new Error("--pdl must be on or off");
  const pdl = values.pdl === undefined ? undefined : values.pdl === "on";
  return run(plan, values.backend === "cpu" ? "cpu" : "cuda", parseMatmulPrecision(values.matmul), values.recompute, Number(values.warmup), Number(values.steps), values.out, weights, loraUpOps, pdl);
}

async function run(
  plan: Plan,
  backendName: "cpu" | "cuda",
  matmul: MatmulPrecision,
  recompute: "full" | "selective" | "none",
  warmup: number,
  steps: number,
  outFile: string | undefined,
  weightKind: WeightKind = "bf16",
  loraUpOps = false,
  pdl: boolean | undefined = undefined,
): Promise<void> {
  const log = (msg: string) => process.stderr.write(`[train-step ${plan.size}] ${msg}\n`);
  const inner: Backend = backendName === "cuda" ? createCudaBackend() : createCpuBackend();
  const config = parseMistral3Config(plan.config, `${plan.size} config`);
  const layers = config.text_config.num_hidden_layers + config.vision_config.num_hidden_layers;
  // The profiler times the model's, the graph's and the optimizer's calls alike during its one
  // step, and is absent from the measured steps.
  const cuda = inner.name === "cuda" ? (inner as CudaBackend) : null;
  if (cuda && pdl !== undefined) cuda.setProgrammaticLaunch(pdl);
  const profiler = cuda ? profileBackend(cuda, layers) : null;
  const backend: Backend = inner;
  const sync = (): void => cuda?.synchronize();
  const device = cuda ? cuda.device : "cpu";
  log(`backend ${backendName} on ${device}`);

  const setupStart = performance.now();
  const tied = plan.config.tie_word_embeddings === true;
  const model: Mistral3Model = buildMistral3(config, randomWeights(backend, config, tied, 1, weightKind), tied, matmul);
  const paths = initAdapter(plan.lora, model.linears, backend, new Rng(2));
  const params: Parameter[] = paths.flatMap((path) => {
    const pair = model.linears.get(path)!.lora!;
    return [
      { name: `${path}.lora_A.weight`, value: pair.a },
      { name: `${path}.lora_B.weight`, value: pair.b },
    ];
  });
  const trainable = new Set(params.map((p) => p.value));
  const optimizer = new AdamW(backend, params, plan.optimizer);
  // As the trainer keeps them: A and B in bf16 between steps, refreshed after each update.
  const bf16Copies = LoraBf16Copies.forModel(backend, model.linears.values());
  const inputs = buildInputs(config, plan.workload, 3);
  sync();
  const setupSeconds = (performance.now() - setupStart) / 1000;
  const weightBytes = [...model.weights.values()].reduce((n, t) => n + t.size * (t.dtype === "fp8_e4m3" ? 1 : 2), 0);
  const loraParams = params.reduce((n, p) => n + p.value.size, 0);
  log(`built in ${setupSeconds.toFixed(1)} s: ${(weightBytes / 2 ** 30).toFixed(2)} GiB ${weightKind} weights, ${paths.length} LoRA pairs (${loraParams} params), ${plan.workload.tokensPerStep} tokens/step`);

  const readLoss = (t: Tensor): number => {
    const value = (backend.read(t) as Float32Array)[0]!;
    t.free();
    return value;
  };
  let stepNo = 0;
  /**
   * One micro-batch; `mark` (profile step only) is called at each phase boundary. Returns a device
   * copy of the loss, read after the step as the trainer reads it once per optimizer step, so
   * nothing inside the micro-batch waits for the device.
   */
  const trainStep = (mark?: (phase: keyof PhaseTimes) => void): Tensor => {
    stepNo++;
    const graph = createGraph(backend, { recording: true, evictElementwise: recompute === "selective", loraUpOps });
    const ctx = new ForwardContext(graph, { trainable, dropoutSeed: stepNo, bf16Copies });
    try {
      const capture = mark
        ? (name: string) => {
            if (name === "text.inputs_embeds") mark("visionMs");
            else if (name === "text.norm") mark("decoderMs");
          }
        : undefined;
      const out = forwardMistral3(ctx, model, inputs, { checkpointLayers: recompute === "full", scoredPositionsOnly: true, capture });
      mark?.("headLossMs");
      graph.backward(out.loss!);
      mark?.("backwardMs");
      const grads = params.map((p) => {
        const grad = ctx.varOf(p.value)?.grad;
        if (!grad) throw new Error(`no gradient for ${p.name}`);
        return grad;
      });
      optimizer.step(grads, plan.optimizer.lr);
      bf16Copies?.refresh();
      for (const g of grads) g.free();
      mark?.("optimizerMs");
      return backend.copy(out.loss!.value);
    } finally {
      graph.dispose();
      ctx.release();
    }
  };

  const stepMs: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    sync();
    const t0 = performance.now();
    const lossOnDevice = trainStep();
    sync();
    const ms = performance.now() - t0;
    const loss = readLoss(lossOnDevice);
    losses.push(loss);
    if (!Number.isFinite(loss)) throw new Error(`loss is ${loss} at step ${i + 1}`);
    if (i >= warmup) stepMs.push(ms);
    log(`step ${i + 1}${i < warmup ? " (warm-up)" : ""}: ${ms.toFixed(1)} ms, loss ${loss.toFixed(4)}`);
  }

  const phases: PhaseTimes = { visionMs: 0, decoderMs: 0, headLossMs: 0, backwardMs: 0, optimizerMs: 0, totalMs: 0 };
  sync();
  const p0 = performance.now();
  let last = p0;
  readLoss(
    trainStep((phase) => {
      sync();
      const now = performance.now();
      phases[phase] = now - last;
      last = now;
    }),
  );
  phases.totalMs = last - p0;

  // The op-class profile: one more step, timed by CUDA events without synchronising inside it.
  let profile: StepProfile | null = null;
  if (profiler) {
    sync();
    profiler.start();
    const lossOnDevice = trainStep();
    profile = profiler.finish();
    readLoss(lossOnDevice);
    log(`op-class profile:\n${profileMarkdown(profile)}`);
  }

  // The exact busy and idle time: one more step, recorded by CUPTI instead of events.
  let timeline: StepTimeline | null = null;
  if (cuda) {
    try {
      // The first step of a CUPTI window idles ~3.5 ms before its first kernel (14B at e4f5ca0
      // and, with a discarded window before it, at 65e89f6) and takes ~4.5 ms more than the
      // median: CUPTI's cost at the first launches it records. So the window runs a warm-up step
      // first, and only the records from the measured step's start on are kept.
      cuda.activity.start();
      readLoss(trainStep());
      const hostStart = cuda.activity.timestamp();
      const lossOnDevice = trainStep();
      sync();
      const hostEnd = cuda.activity.timestamp();
      try {
        timeline = stepTimeline(timelineFrom(cuda.activity.stop(0), hostStart, TIMELINE_NAMES), hostStart, hostEnd);
      } finally {
        readLoss(lossOnDevice);
      }
      log(`activity timeline:\n${timelineMarkdown(timeline)}`);
    } catch (err) {
      // CUPTI missing or refusing (another profiler attached) costs the timeline, not the run.
      if (!(err instanceof CudaError && err.op.startsWith("activity"))) throw err;
      log(`no activity timeline: ${err.message}`);
    }
  }

  const medianMs = median(stepMs);
  const memory = cuda ? cuda.allocatorStats() : { ...backend.memory(), reserved: 0, mallocs: 0 };
  const result = {
    tool: "splint",
    size: plan.size,
    device,
    backend: backendName,
    attention: "splint",
    matmul,
    recompute,
    weights: weightKind,
    loraUpOps,
    programmaticLaunch: cuda?.programmaticLaunch ?? false,
    workload: plan.workload,
    warmupSteps: warmup,
    stepMs,
    medianMs,
    tokensPerSecond: plan.workload.tokensPerStep / (medianMs / 1000),
    peakBytes: memory.peak,
    plannedPeakBytes: plannedStepMemory(config, model.weights, plan.lora, plan.workload, plan.workload.seqLen, matmul, recompute === "full" ? true : recompute === "selective" ? "selective" : false).allocatorBytes,
    reservedBytes: memory.reserved,
    weightBytes,
    loraParams,
    loraPairs: paths.length,
    flopsPerStep: plan.flopsPerStep,
    flopsFormula: plan.flopsFormula,
    mfu: plan.flopsPerStep / (medianMs / 1000) / plan.peakFlops,
    peakFlops: plan.peakFlops,
    losses,
    phases,
    profile,
    timeline,
    setupSeconds,
  };
  log(`median ${medianMs.toFixed(1)} ms, ${result.tokensPerSecond.toFixed(1)} tokens/s, peak ${(memory.peak / 2 ** 30).toFixed(2)} GiB, MFU ${(100 * result.mfu).toFixed(2)}%`);
  log(`profile step: ${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ")}`);
  const json = `${JSON.stringify(result)}\n`;
  if (outFile) await writeFile(outFile, json, { flag: "a" });
  process.stdout.write(json);
  optimizer.free();
  bf16Copies?.free();
  cuda?.dispose();
}

await main();
