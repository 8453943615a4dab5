import { copyFile, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { createCpuBackend } from "../backends/cpu/index.ts";
import { openCheckpoint, toFloat32, toFp8Bytes, writeShardedCheckpoint, type StoredTensor, type TensorToWrite } from "../io/safetensors.ts";
import { readMistral3Config } from "../models/mistral3/model.ts";
import type { Mistral3Config } from "../models/mistral3/config.ts";
import { canonicalName, expectedWeights, planWeights, type WeightPlan } from "../models/mistral3/weights.ts";
import type { Backend } from "../tensor/backend.ts";
import { f32ArrayToBf16 } from "../tensor/bf16.ts";
import { fp8E4m3ArrayToF32 } from "../tensor/fp8.ts";
import { Tensor } from "../tensor/tensor.ts";
import { writeDirAtomic, writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { detach, loadAdapter } from "./adapter.ts";
import { LoraLinear } from "./lora-linear.ts";

/**
 * `splint merge`: W' = W + scale·B·A for every adapted linear, written as a plain Hugging Face
 * checkpoint (sharded safetensors + index) that needs no adapter to run. Tensors stream one at a
 * time, so a 14B merge never holds the model in memory. Weights keep their stored dtype, except
 * FP8 ones, which are dequantised (W_fp8 · weight_scale_inv) to BF16 — the merged update is not
 * representable in the base's per-tensor fp8 grid — and config.json loses its quantization_config.
 */

export interface MergeOptions {
  modelDir: string;
  adapterDir: string;
  outDir: string;
  /** Shard size cap (transformers' default max_shard_size is 5 GB). */
  maxShardBytes?: number;
  /** Dtype of the floating-point weights written: as stored (fp8 → bf16), or all f32 / bf16. */
  dtype?: "auto" | "f32" | "bf16";
  backend?: Backend;
  onProgress?: (done: number, total: number) => void;
}

export interface MergeResult {
  outDir: string;
  shards: readonly string[];
  mergedModules: number;
  copiedFiles: string[];
  dequantizedFp8: number;
}

/** Files of a model folder that a merged checkpoint needs besides its weights. */
const SIDE_FILES = /^(tokenizer.*\.json|tokenizer\.model.*|tekken\.json|special_tokens_map\.json|processor_config\.json|preprocessor_config\.json|chat_template\.(jinja|json)|generation_config\.json)$/;

const DEFAULT_SHARD_BYTES = 5_000_000_000;

export async function mergeAdapter(opts: MergeOptions): Promise<MergeResult> {
  const backend = opts.backend ?? createCpuBackend();
  const outInfo = await stat(opts.outDir).catch(() => null);
  if (outInfo && (!outInfo.isDirectory() || (await readdir(opts.outDir)).length > 0)) {
    throw new InputError(opts.outDir, "already exists and is not empty", "pass a new --out folder");
  }
  const configFile = join(opts.modelDir, "config.json");
  const config = await readMistral3Config(opts.modelDir);
  const rawConfig = JSON.parse(await readFile(configFile, "utf8")) as Record<string, unknown>;
  const source = await openCheckpoint(opts.modelDir);
  try {
    const plan = planWeights(config, source.keys(), (key) => source.info(key), opts.modelDir);
    const merger = await prepareMerge(config, plan, opts.adapterDir, backend);
    try {
      const adapted = merger.adapted;
      const scaleKeys = new Map(plan.tensors.filter((t) => t.scaleKey).map((t) => [t.key, t.scaleKey!]));
      const skipped = new Set([...scaleKeys.values(), ...plan.ignored]);
      const keys = source.keys().filter((k) => !skipped.has(k)).sort((a, b) => source.info(a).file.localeCompare(source.info(b).file));
      const dtype = opts.dtype ?? "auto";
      let dequantizedFp8 = 0;
      let done = 0;

      async function* merged(): AsyncGenerator<TensorToWrite> {
        for (const key of keys) {
          const stored = await source.read(key);
          const linear = adapted.get(canonicalName(key));
          const isFp8 = stored.dtype === "F8_E4M3";
          if (isFp8) dequantizedFp8++;
          if (!linear && !isFp8 && (dtype === "auto" || !isFloat(stored))) {
            yield { name: key, dtype: stored.dtype, shape: stored.shape, data: stored.data };
          } else {
            let values = isFp8 ? fp8E4m3ArrayToF32(toFp8Bytes(stored), toFloat32(await source.read(scaleKeys.get(key)!))[0]!) : toFloat32(stored);
            if (linear) values = addLoraDelta(backend, linear, values, stored.shape);
            const bad = values.findIndex((v) => !Number.isFinite(v));
            // Written as is, a NaN here makes the merged model print NaN forever after.
            if (bad >= 0) throw new InputError(opts.modelDir, `weight ${key} is ${values[bad]} at index ${bad}${linear ? " after adding the LoRA update" : ""}; nothing was written`);
            const target = dtype === "f32" ? "F32" : dtype === "bf16" || isFp8 || stored.dtype === "BF16" ? "BF16" : "F32";
            yield { name: key, dtype: target, shape: stored.shape, data: target === "BF16" ? f32ArrayToBf16(values) : values };
          }
          opts.onProgress?.(++done, keys.length);
        }
      }

      let shards: readonly string[] = [];
      const copiedFiles: string[] = [];
      await writeDirAtomic(opts.outDir, async (tmp) => {
        shards = (await writeShardedCheckpoint(tmp, merged(), opts.maxShardBytes ?? DEFAULT_SHARD_BYTES)).shards;
        const plainConfig = { ...rawConfig };
        delete plainConfig.quantization_config;
        if (dequantizedFp8 > 0 || dtype === "bf16") plainConfig.dtype = "bfloat16";
        if (dtype === "f32") plainConfig.dtype = "float32";
        await writeFileAtomic(join(tmp, "config.json"), `${JSON.stringify(plainConfig, null, 2)}\n`);
        for (const name of await readdir(opts.modelDir)) {
          if (!SIDE_FILES.test(name)) continue;
          await copyFile(join(opts.modelDir, name), join(tmp, name));
          copiedFiles.push(name);
        }
      });
      return { outDir: opts.outDir, shards, mergedModules: adapted.size, copiedFiles, dequantizedFp8 };
    } finally {
      merger.release();
    }
  } finally {
    await source.close();
  }
}

/** An adapter loaded against a model's linears, ready to be added to weights one at a time. */
export interface PreparedMerge {
  /** Canonical weight name (`…q_proj.weight`) → its adapted linear. */
  readonly adapted: ReadonlyMap<string, LoraLinear>;
  /** W + scale·B·A for `name`'s weight, or the weight unchanged when it is not adapted. */
  apply(name: string, weight: Float32Array, shape: readonly number[]): Float32Array;
  release(): void;
}

/**
 * Loads `adapterDir` against the linears `config` implies, checking it the way `splint merge`
 * does (shapes; no adapted lm_head on a tied model). Only the LoRA pairs are held; base weights are
 * streamed by the caller, which is what lets merge and export run in bounded memory.
 */
export async function prepareMerge(config: Mistral3Config, plan: WeightPlan, adapterDir: string, backend: Backend): Promise<PreparedMerge> {
  // The adapter is checked against the linears' shapes only; these stand-ins carry no storage
  // because the base weights are streamed later, one at a time.
  const linears = new Map<string, LoraLinear>();
  for (const spec of expectedWeights(config)) {
    if (!spec.linear && spec.name !== "lm_head.weight") continue;
    const path = spec.name.slice(0, -".weight".length);
    linears.set(path, new LoraLinear(path, new Tensor(backend, null, spec.shape, "f32")));
  }
  await loadAdapter(adapterDir, linears, backend);
  const adapted = new Map([...linears].filter(([, l]) => l.lora).map(([path, l]) => [`${path}.weight`, l]));
  if (plan.tiedHead && adapted.has("lm_head.weight")) {
    detach(linears.values());
    throw new InputError(adapterDir, "adapts lm_head, which this model ties to embed_tokens; merging it is not supported");
  }
  return {
    adapted,
    apply(name, weight, shape) {
      const linear = adapted.get(name);
      return linear ? addLoraDelta(backend, linear, weight, shape) : weight;
    },
    release() {
      detach(linears.values());
    },
  };
}

function isFloat(t: StoredTensor): boolean {
  return ["F32", "F64", "BF16", "F16", "F8_E4M3"].includes(t.dtype);
}

/** W + scale·B·A in f32 (the LoRA pair is already on the backend). */
function addLoraDelta(backend: Backend, linear: LoraLinear, weight: Float32Array, shape: readonly number[]): Float32Array {
  const pair = linear.lora!;
  const w = backend.upload(weight, shape, "f32");
  const out = backend.matmul(pair.b, pair.a, { alpha: pair.scale, accumulate: w });
  const result = Float32Array.from(backend.read(out) as Float32Array);
  if (out !== w) out.free();
  w.free();
  return result;
}
