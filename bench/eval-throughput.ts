/**
 * splint's evaluation throughput (issue 6, bench/README.md): greedy generation over the tutorial's
 * test set shape — N images (140 in the tutorial's test split), two prompts a batch (its
 * per_device_eval_batch_size), each one 644×644 image (552 image tokens) + 160 prompt tokens, and
 * exactly --max-new-tokens new tokens per row (no EOS stop, so both sides do the same work with
 * random weights) — with the tutorial's LoRA adapter attached, unmerged, as the fine-tuned model runs.
 *
 *   node --import tsx bench/eval-throughput.ts --size 3b [--images 140] [--max-new-tokens 8] [--out FILE.json]
 *   --backend cpu --size tiny --image-size 56 --prompt-tokens 24 --images 4   a local smoke run
 *
 * Each batch is timed between device synchronisations (generation reads every new token back, so it
 * synchronises per step anyway); one warm-up batch first. Prints one JSON line (appended to --out).
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { createGraph } from "../src/autograd/tape.ts";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { type CudaBackend, createCudaBackend } from "../src/backends/cuda/index.ts";
import { parseMatmulPrecision } from "../src/cli/matmul-flag.ts";
import { initAdapter } from "../src/lora/adapter.ts";
import { parseMistral3Config } from "../src/models/mistral3/config.ts";
import { generateMistral3 } from "../src/models/mistral3/generate.ts";
import { buildMistral3 } from "../src/models/mistral3/model.ts";
import type { Backend } from "../src/tensor/backend.ts";
import { Rng } from "../src/util/rng.ts";
import { buildInputs, hfConfig, LORA, median, randomWeights, SIZES, type Size, TUTORIAL_WORKLOAD, type Workload } from "./workload.ts";

/** Distinct input sets cycled through the batches (the values do not change the work). */
const INPUT_SETS = 4;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: "string", default: "3b" },
      images: { type: "string", default: "140" },
      "max-new-tokens": { type: "string", default: String(TUTORIAL_WORKLOAD.answerTokens) },
      backend: { type: "string", default: "cuda" },
      matmul: { type: "string", default: "bf16" },
      out: { type: "string" },
      "image-size": { type: "string", default: String(TUTORIAL_WORKLOAD.imageSize) },
      "prompt-tokens": { type: "string", default: String(TUTORIAL_WORKLOAD.promptTokens) },
      batch: { type: "string", default: String(TUTORIAL_WORKLOAD.batch) },
    },
  });
  const size = values.size as Size;
  if (!SIZES.includes(size)) throw new Error(`--size must be one of ${SIZES.join(", ")}`);
  const maxNewTokens = Number(values["max-new-tokens"]);
  const workload: Workload = {
    batch: Number(values.batch),
    imageSize: Number(values["image-size"]),
    promptTokens: Number(values["prompt-tokens"]),
    answerTokens: maxNewTokens,
  };
  const matmul = parseMatmulPrecision(values.matmul);
  const images = Number(values.images);
  if (!Number.isInteger(images) || images < workload.batch || images % workload.batch !== 0) {
    throw new Error(`--images must be a positive multiple of --batch (${workload.batch})`);
  }
  const log = (msg: string) => process.stderr.write(`[eval-throughput ${size}] ${msg}\n`);
  const backend: Backend = values.backend === "cpu" ? createCpuBackend() : createCudaBackend();
  const cuda = backend.name === "cuda" ? (backend as CudaBackend) : null;
  const sync = (): void => cuda?.synchronize();

  const raw = hfConfig(size);
  const config = parseMistral3Config(raw, `${size} config`);
  const tied = raw.tie_word_embeddings === true;
  const setupStart = performance.now();
  const model = buildMistral3(config, randomWeights(backend, config, tied, 1), tied, matmul);
  const pairs = initAdapter({ ...LORA, lora_dropout: 0 }, model.linears, backend, new Rng(2)).length;
  const inputSets = Array.from({ length: INPUT_SETS }, (_, i) => buildInputs(config, workload, 10 + i, true));
  sync();
  const setupSeconds = (performance.now() - setupStart) / 1000;
  const promptLen = inputSets[0]!.seqLen;
  log(`${cuda ? cuda.device : "cpu"}: built in ${setupSeconds.toFixed(1)} s, ${pairs} LoRA pairs, prompt ${promptLen} tokens × ${workload.batch} rows`);

  const newGraph = () => createGraph(backend, { recording: false });
  const generateBatch = (i: number): number => {
    const inputs = inputSets[i % INPUT_SETS]!;
    sync();
    const t0 = performance.now();
    const result = generateMistral3(model, newGraph, { batch: inputs.batch, seqLen: inputs.seqLen, inputIds: inputs.inputIds, images: inputs.images }, {
      maxNewTokens,
      eosTokenIds: [],
      padTokenId: config.text_config.pad_token_id ?? 11,
    });
    sync();
    if (result.newTokens !== maxNewTokens) throw new Error(`generated ${result.newTokens} tokens, expected ${maxNewTokens}`);
    return performance.now() - t0;
  };

  const warmupMs = generateBatch(0);
  log(`warm-up batch: ${warmupMs.toFixed(0)} ms`);
  const batchMs: number[] = [];
  for (let i = 0; i < images / workload.batch; i++) batchMs.push(generateBatch(i));
  const totalSeconds = batchMs.reduce((a, b) => a + b, 0) / 1000;
  const memory = cuda ? cuda.allocatorStats() : { ...backend.memory(), reserved: 0, mallocs: 0 };
  const result = {
    bench: "eval",
    tool: "splint",
    size,
    device: cuda ? cuda.device : "cpu",
    attention: "splint",
    matmul,
    images,
    batch: workload.batch,
    promptTokens: promptLen,
    maxNewTokens,
    loraPairs: pairs,
    totalSeconds,
    imagesPerSecond: images / totalSeconds,
    newTokensPerSecond: (images * maxNewTokens) / totalSeconds,
    medianBatchMs: median(batchMs),
    batchMs,
    peakBytes: memory.peak,
    setupSeconds,
  };
  log(`${images} images in ${totalSeconds.toFixed(1)} s: ${result.imagesPerSecond.toFixed(2)} images/s, median ${result.medianBatchMs.toFixed(0)} ms per batch`);
  const json = `${JSON.stringify(result)}\n`;
  if (values.out) await writeFile(values.out, json, { flag: "a" });
  process.stdout.write(json);
  cuda?.dispose();
}

await main();
