import { existsSync, readFileSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { createCpuBackend } from "../../backends/cpu/index.ts";
import { openCheckpoint, toFloat32, toFp8Bytes, type TensorSource } from "../../io/safetensors.ts";
import { prepareMerge, type PreparedMerge } from "../../lora/merge.ts";
import { readMistral3Config } from "../../models/mistral3/model.ts";
import { planWeights } from "../../models/mistral3/weights.ts";
import type { Backend } from "../../tensor/backend.ts";
import { fp8E4m3ArrayToF32 } from "../../tensor/fp8.ts";
import { writeDirAtomic, writeFileAtomic } from "../../util/atomic.ts";
import { InputError } from "../../util/errors.ts";
import { LlamaFileType, str, u32, type GgmlTypeName, type GgufMetadata } from "./format.ts";
import { clipHparams, imageNormalization, textHparams } from "./hparams.ts";
import { ollamaModelfile } from "./modelfile.ts";
import { encodeAs, type EncodableType } from "./quant.ts";
import { createQuantPool, type QuantPool } from "./quant-pool.ts";
import { permuteRotaryRows, textTensors, visionTensors, type ExportQuant, type MappedTensor } from "./tensor-map.ts";
import { tokenizerMetadata } from "./tokenizer-meta.ts";
import { writeGguf, type GgufWriteResult } from "./writer.ts";

/**
 * `splint export --format gguf`: a Mistral3ForConditionalGeneration checkpoint (plus, optionally,
 * a LoRA adapter merged on the way) as the two files llama.cpp runs it from: the text model
 * (`general.architecture` mistral3) and the vision tower with its projector as an `mmproj` file
 * (clip, projector type pixtral), with an Ollama Modelfile beside them.
 *
 * Memory stays bounded: the checkpoint is read lazily, plain tensors pass through in row slices
 * of about CHUNK_ELEMENTS values, and only a tensor that must be whole (an adapted linear, whose
 * LoRA delta is a matrix product; a q/k projection, whose rows are permuted; an fp8 weight) is
 * held at once, in f32. The output folder is built under a temporary name and renamed into place.
 */

const CHUNK_ELEMENTS = 1 << 24;

export interface GgufExportOptions {
  modelDir: string;
  adapterDir?: string;
  outDir: string;
  quant: ExportQuant;
  /** `general.name` and the file names' stem; the model folder's name by default. */
  name?: string;
  backend?: Backend;
  /** Quantisation threads (default SPLINT_CPU_THREADS, else the available cores). */
  threads?: number;
  onProgress?: (done: number, total: number, tensor: string) => void;
}

export interface GgufFileSummary {
  readonly file: string;
  readonly bytes: number;
  readonly tensors: number;
  /** How many tensors of each ggml type. */
  readonly types: Readonly<Partial<Record<GgmlTypeName, number>>>;
}

export interface GgufExportResult {
  readonly outDir: string;
  readonly quant: ExportQuant;
  readonly text: GgufFileSummary;
  readonly mmproj: GgufFileSummary;
  readonly modelfile: string;
  readonly mergedModules: number;
  readonly seconds: number;
}

const FILE_TYPE: Readonly<Record<ExportQuant, number>> = {
  bf16: LlamaFileType.MOSTLY_BF16,
  f16: LlamaFileType.MOSTLY_F16,
  q8_0: LlamaFileType.MOSTLY_Q8_0,
  q4_k_m: LlamaFileType.MOSTLY_Q4_K_M,
};

/** What the mmproj's weights mostly are for each export (tensor-map.ts visionTensorType). */
const MMPROJ_TYPE: Readonly<Record<ExportQuant, { label: string; fileType: number }>> = {
  bf16: { label: "bf16", fileType: LlamaFileType.MOSTLY_BF16 },
  f16: { label: "f16", fileType: LlamaFileType.MOSTLY_F16 },
  q8_0: { label: "q8_0", fileType: LlamaFileType.MOSTLY_Q8_0 },
  q4_k_m: { label: "f16", fileType: LlamaFileType.MOSTLY_F16 },
};

function fileStem(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "model";
}

function readOptionalJson(file: string): Record<string, unknown> | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const v: unknown = JSON.parse(readFileSync(file, "utf8"));
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new InputError(file, `cannot read JSON: ${(e as Error).message}`);
  }
}

function countTypes(tensors: readonly MappedTensor[]): Partial<Record<GgmlTypeName, number>> {
  const out: Partial<Record<GgmlTypeName, number>> = {};
  for (const t of tensors) out[t.type] = (out[t.type] ?? 0) + 1;
  return out;
}

/** One tensor's values as f32, whole: dequantised if fp8, with the LoRA delta, q/k rows permuted. */
async function wholeTensor(source: TensorSource, m: MappedTensor, merger: PreparedMerge | undefined): Promise<Float32Array> {
  const stored = await source.read(m.key);
  let values: Float32Array;
  if (stored.dtype === "F8_E4M3") {
    const scale = toFloat32(await source.read(m.scaleKey!))[0]!;
    if (!Number.isFinite(scale)) throw new InputError(stored.file, `tensor "${m.scaleKey}": scale ${scale} is not finite`);
    values = fp8E4m3ArrayToF32(toFp8Bytes(stored), scale);
  } else {
    values = toFloat32(stored);
  }
  if (merger) values = merger.apply(m.canonical, values, m.shape);
  if (m.permuteHeads !== undefined) values = permuteRotaryRows(values, m.shape[0]!, m.shape[1]!, m.permuteHeads);
  return values;
}

type Encode = (type: EncodableType, values: Float32Array) => Promise<Uint8Array>;

async function* tensorPieces(source: TensorSource, m: MappedTensor, merger: PreparedMerge | undefined, encode: Encode): AsyncGenerator<Uint8Array> {
  const info = source.info(m.key);
  if (m.row !== undefined) {
    yield await encode(m.type, Float32Array.from(toFloat32(await source.readRows(m.key, m.row, 1))));
    return;
  }
  const needsWhole = m.permuteHeads !== undefined || info.dtype === "F8_E4M3" || (merger?.adapted.has(m.canonical) ?? false);
  if (needsWhole) {
    yield await encode(m.type, await wholeTensor(source, m, merger));
    return;
  }
  const rows = m.shape[0]!;
  const perRow = m.shape.slice(1).reduce((a, b) => a * b, 1);
  const step = Math.max(1, Math.floor(CHUNK_ELEMENTS / perRow));
  for (let r = 0; r < rows; r += step) {
    const slice = await source.readRows(m.key, r, Math.min(step, rows - r));
    yield await encode(m.type, toFloat32(slice));
  }
}

export async function exportGguf(opts: GgufExportOptions): Promise<GgufExportResult> {
  const started = performance.now();
  const outInfo = await stat(opts.outDir).catch(() => null);
  if (outInfo && (!outInfo.isDirectory() || (await readdir(opts.outDir)).length > 0)) {
    throw new InputError(opts.outDir, "already exists and is not empty", "pass a new --out folder");
  }
  const configFile = join(opts.modelDir, "config.json");
  const config = await readMistral3Config(opts.modelDir);
  const name = opts.name ?? basename(resolve(opts.modelDir));
  const stem = fileStem(name);
  const textHp = textHparams(config, configFile);
  const processorFile = [join(opts.modelDir, "processor_config.json"), join(opts.modelDir, "preprocessor_config.json")].find((f) => existsSync(f));
  const clipHp = clipHparams(config, configFile, imageNormalization(processorFile ? readOptionalJson(processorFile) : undefined, processorFile ?? configFile));
  const tok = await tokenizerMetadata(opts.modelDir, config.text_config.vocab_size);

  const source = await openCheckpoint(opts.modelDir);
  try {
    const plan = planWeights(config, source.keys(), (key) => source.info(key), opts.modelDir);
    const text = textTensors(config, plan, opts.quant);
    const vision = visionTensors(config, plan, opts.quant, tok.tokenizer.imgBreakId);
    const merger = opts.adapterDir === undefined ? undefined : await prepareMerge(config, plan, opts.adapterDir, opts.backend ?? createCpuBackend());
    // Block quantisation runs on every core; float conversions are memory-bound and stay inline.
    const pool: QuantPool | undefined = opts.quant === "q8_0" || opts.quant === "q4_k_m" ? createQuantPool(opts.threads) : undefined;
    const encode: Encode = pool ? (type, values) => pool.encode(type, values) : async (type, values) => encodeAs(type, values);
    try {
      const total = text.length + vision.length;
      let done = 0;
      const produce = (list: readonly MappedTensor[]) =>
        async function* (_t: unknown, i: number): AsyncGenerator<Uint8Array> {
          yield* tensorPieces(source, list[i]!, merger, encode);
          opts.onProgress?.(++done, total, list[i]!.name);
        };
      const quantVersion: GgufMetadata = opts.quant === "q8_0" || opts.quant === "q4_k_m" ? [["general.quantization_version", u32(2)]] : [];
      const textMeta: GgufMetadata = [
        ["general.architecture", str("mistral3")],
        ["general.type", str("model")],
        ["general.name", str(name)],
        ["general.file_type", u32(FILE_TYPE[opts.quant])],
        ...quantVersion,
        ...textHp,
        ...tok.metadata,
      ];
      const mm = MMPROJ_TYPE[opts.quant];
      const visionMeta: GgufMetadata = [
        ["general.architecture", str("clip")],
        ["general.type", str("mmproj")],
        ["general.name", str(name)],
        ["general.file_type", u32(mm.fileType)],
        ...(opts.quant === "q8_0" ? quantVersion : []),
        ...clipHp,
      ];
      const textFile = `${stem}-${opts.quant}.gguf`;
      const mmprojFile = `mmproj-${stem}-${mm.label}.gguf`;
      let textResult: GgufWriteResult | undefined;
      let visionResult: GgufWriteResult | undefined;
      await writeDirAtomic(opts.outDir, async (tmp) => {
        textResult = await writeGguf(join(tmp, textFile), textMeta, text, produce(text));
        visionResult = await writeGguf(join(tmp, mmprojFile), visionMeta, vision, produce(vision));
        await writeFileAtomic(
          join(tmp, "Modelfile"),
          ollamaModelfile({ textFile, mmprojFile, eosToken: tok.tokenizer.eosToken, contextLength: config.text_config.max_position_embeddings }),
        );
      });
      const summary = (file: string, r: GgufWriteResult | undefined, list: readonly MappedTensor[]): GgufFileSummary => ({
        file,
        bytes: r!.bytes,
        tensors: r!.tensors,
        types: countTypes(list),
      });
      return {
        outDir: opts.outDir,
        quant: opts.quant,
        text: summary(textFile, textResult, text),
        mmproj: summary(mmprojFile, visionResult, vision),
        modelfile: "Modelfile",
        mergedModules: merger?.adapted.size ?? 0,
        seconds: (performance.now() - started) / 1000,
      };
    } finally {
      merger?.release();
      await pool?.close();
    }
  } finally {
    await source.close();
  }
}
