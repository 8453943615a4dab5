import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Var } from "../../autograd/graph.ts";
import { openCheckpoint } from "../../io/safetensors.ts";
import { LoraLinear } from "../../lora/lora-linear.ts";
import type { AttentionMask, Backend, MatmulPrecision } from "../../tensor/backend.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { InputError } from "../../util/errors.ts";
import { parseMistral3Config, type Mistral3Config } from "./config.ts";
import type { ForwardContext } from "./context.ts";
import { runDecoder, type DecoderLayer, type DecoderPass, type LayerKV, type TextModel } from "./decoder.ts";
import { runProjector, type Projector } from "./projector.ts";
import { decoderRopeTables, textInvFreq, type TextInvFreq } from "./rope.ts";
import { runVisionTower, type VisionImage, type VisionLayer, type VisionTower } from "./vision.ts";
import { ShapeConstants } from "./shape-constants.ts";
import {
  loadPlannedWeights,
  planWeights,
  PROJECTOR_PREFIX,
  TEXT_PREFIX,
  VISION_PREFIX,
  type WeightDtype,
} from "./weights.ts";

/**
 * Mistral3ForConditionalGeneration (transformers' modeling_mistral3.py, ministral3.md §2): the
 * Pixtral tower, the projector, image features scattered into the [IMG] slots, the decoder and the
 * head, with the loss transformers computes (labels shifted left, -100 ignored, mean).
 *
 * Dimension letters: B batch, T tokens per row, N = B·T, D text hidden, V vocabulary,
 * I images, C channels, H×W pixels.
 */

export const IGNORE_INDEX = -100;

export interface Mistral3Model {
  readonly config: Mistral3Config;
  readonly vision: VisionTower;
  readonly projector: Projector;
  readonly text: TextModel;
  /** Every linear layer by its Hugging Face module path (where LoRA pairs attach). */
  readonly linears: ReadonlyMap<string, LoraLinear>;
  /** The head is the embedding matrix (no lm_head in the checkpoint). */
  readonly tiedHead: boolean;
  readonly ropeFreq: TextInvFreq;
  /** All weight tensors by canonical name (each freed once by freeMistral3). */
  readonly weights: ReadonlyMap<string, Tensor>;
  /** Shape-only device tables (RoPE, merger index) reused across passes. */
  readonly constants: ShapeConstants;
}

/**
 * Assembles the modules from canonical-named tensors (as loadPlannedWeights returns them).
 * `precision` is how every linear layer multiplies by its weight (Backend.matmul).
 */
export function buildMistral3(
  config: Mistral3Config,
  weights: ReadonlyMap<string, Tensor>,
  tiedHead: boolean,
  precision: MatmulPrecision = "f32",
): Mistral3Model {
  const get = (name: string): Tensor => {
    const t = weights.get(name);
    if (!t) throw new Error(`buildMistral3: weight ${name} was not loaded`);
    return t;
  };
  const linears = new Map<string, LoraLinear>();
  const linear = (path: string, weight = get(`${path}.weight`)): LoraLinear => {
    const l = new LoraLinear(path, weight, precision);
    linears.set(path, l);
    return l;
  };

  const v = config.vision_config;
  const patchConv = get(`${VISION_PREFIX}.patch_conv.weight`);
  const visionLayers: VisionLayer[] = [];
  for (let i = 0; i < v.num_hidden_layers; i++) {
    const p = `${VISION_PREFIX}.transformer.layers.${i}`;
    visionLayers.push({
      attentionNorm: get(`${p}.attention_norm.weight`),
      q: linear(`${p}.attention.q_proj`),
      k: linear(`${p}.attention.k_proj`),
      v: linear(`${p}.attention.v_proj`),
      o: linear(`${p}.attention.o_proj`),
      ffnNorm: get(`${p}.ffn_norm.weight`),
      gate: linear(`${p}.feed_forward.gate_proj`),
      up: linear(`${p}.feed_forward.up_proj`),
      down: linear(`${p}.feed_forward.down_proj`),
    });
  }
  const vision: VisionTower = {
    patchConv: patchConv.reshape([v.hidden_size, v.num_channels * v.patch_size * v.patch_size]),
    patchConvPrecision: precision,
    lnPre: get(`${VISION_PREFIX}.ln_pre.weight`),
    layers: visionLayers,
  };

  const projector: Projector = {
    norm: get(`${PROJECTOR_PREFIX}.norm.weight`),
    mergingLayer: linear(`${PROJECTOR_PREFIX}.patch_merger.merging_layer`),
    linear1: linear(`${PROJECTOR_PREFIX}.linear_1`),
    linear2: linear(`${PROJECTOR_PREFIX}.linear_2`),
  };

  const t = config.text_config;
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < t.num_hidden_layers; i++) {
    const p = `${TEXT_PREFIX}.layers.${i}`;
    layers.push({
      inputNorm: get(`${p}.input_layernorm.weight`),
      q: linear(`${p}.self_attn.q_proj`),
      k: linear(`${p}.self_attn.k_proj`),
      v: linear(`${p}.self_attn.v_proj`),
      o: linear(`${p}.self_attn.o_proj`),
      postNorm: get(`${p}.post_attention_layernorm.weight`),
      gate: linear(`${p}.mlp.gate_proj`),
      up: linear(`${p}.mlp.up_proj`),
      down: linear(`${p}.mlp.down_proj`),
    });
  }
  const embedTokens = get(`${TEXT_PREFIX}.embed_tokens.weight`);
  const text: TextModel = {
    embedTokens,
    layers,
    norm: get(`${TEXT_PREFIX}.norm.weight`),
    lmHead: linear("lm_head", tiedHead ? embedTokens : get("lm_head.weight")),
  };
  return { config, vision, projector, text, linears, tiedHead, ropeFreq: textInvFreq(t.rope, t.head_dim), weights, constants: new ShapeConstants() };
}

export interface LoadModelOptions {
  dtype?: WeightDtype;
  /**
   * "bf16": the linear layers multiply bf16 (or fp8) weights by activations rounded to bf16, on
   * tensor cores where the backend has them (PyTorch's numerics for a bf16 model). Default "f32".
   */
  matmulPrecision?: MatmulPrecision;
  onProgress?: (done: number, total: number) => void;
}

/** Reads config.json and the weights of a local checkpoint folder onto the backend. */
export async function loadMistral3(dir: string, backend: Backend, opts: LoadModelOptions = {}): Promise<Mistral3Model> {
  const config = await readMistral3Config(dir);
  const source = await openCheckpoint(dir);
  try {
    const plan = planWeights(config, source.keys(), (key) => source.info(key), dir);
    const weights = await loadPlannedWeights(source, plan, backend, opts.dtype ?? "auto", opts.onProgress);
    return buildMistral3(config, weights, plan.tiedHead, opts.matmulPrecision);
  } finally {
    await source.close();
  }
}

export async function readMistral3Config(dir: string): Promise<Mistral3Config> {
  const file = join(dir, "config.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new InputError(file, `cannot read the model config (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InputError(file, `not valid JSON (${(error as Error).message})`);
  }
  return parseMistral3Config(json, file);
}

export function freeMistral3(model: Mistral3Model): void {
  for (const t of model.weights.values()) t.free();
  model.constants.free();
  for (const l of model.linears.values()) {
    l.lora?.a.free();
    l.lora?.b.free();
    l.lora = null;
  }
}

// ---- forward ---------------------------------------------------------------------------------

/** Images as the HF processor batches them: zero-padded bottom/right, with their real sizes. */
export interface ImageBatch {
  pixelValues: Float32Array; // (I, C, Hmax, Wmax)
  shape: readonly [number, number, number, number];
  imageSizes: Int32Array; // (I, 2): height, width after resizing
}

export interface Mistral3Inputs {
  batch: number;
  seqLen: number;
  inputIds: Int32Array; // (B·T)
  /** 1 = token, 0 = padding; absent = all tokens. */
  attentionMask?: Int32Array; // (B·T)
  /** Absent = 0..T-1 in every row, as transformers' forward without position_ids. */
  positionIds?: Int32Array; // (B·T)
  images?: ImageBatch;
  labels?: Int32Array; // (B·T), IGNORE_INDEX ignored
  /** Where the inputs came from (a file), for error messages. */
  source?: string;
}

/** Names an input tensor in errors: `in.safetensors: tensor "input_ids"`, or just the tensor name. */
function tensorName(inputs: Mistral3Inputs, name: string): string {
  return inputs.source ? `${inputs.source}: tensor "${name}"` : name;
}

export interface ForwardOptions {
  checkpointLayers?: boolean;
  /** Logits only for the last position of each row → (B, V) (generation). */
  lastPositionOnly?: boolean;
  /** With labels: logits only at the positions the loss counts → (M, V) in row order (training). */
  scoredPositionsOnly?: boolean;
  /** Per-stage activations (names as in test/fixtures/README.md). */
  capture?: (name: string, v: Var) => void;
  /** KV cache: write this chunk's keys/values at slots [offset, offset + T) and attend over all slots. */
  cache?: { layers: readonly LayerKV[]; slots: number; offset: number; keyValid: Tensor /* i32 (B, S) */ };
}

export interface ForwardResult {
  logits: Var; // (B·T, V), (B, V) with lastPositionOnly, (M, V) with scoredPositionsOnly
  loss?: Var; // (1)
}

export function forwardMistral3(ctx: ForwardContext, model: Mistral3Model, inputs: Mistral3Inputs, opts: ForwardOptions = {}): ForwardResult {
  const g = ctx.graph;
  const cfg = model.config;
  const t = cfg.text_config;
  const { batch: B, seqLen: T } = inputs;
  const N = B * T;
  checkLength(tensorName(inputs, "input_ids"), inputs.inputIds, N);
  for (const [i, id] of inputs.inputIds.entries()) {
    if (id < 0 || id >= t.vocab_size) throw new InputError(tensorName(inputs, "input_ids"), `token id ${id} at position ${i} is outside the vocabulary (0..${t.vocab_size - 1})`);
  }
  if (t.sliding_window !== null && (opts.cache ? opts.cache.slots : T) > t.sliding_window) {
    throw new InputError(tensorName(inputs, "input_ids"), `${opts.cache ? opts.cache.slots : T} tokens exceed the model's sliding_window ${t.sliding_window}, which splint does not implement`);
  }

  const ids = ctx.upload(inputs.inputIds, [N], "i32");
  let x = g.gatherRows(ctx.bind(model.text.embedTokens), ids);
  const imageSlots = positionsOf(inputs.inputIds, cfg.image_token_index);
  if (inputs.images) {
    const features = imageFeatures(ctx, model, inputs, inputs.images, opts);
    const count = features.value.shape[0]!;
    if (count !== imageSlots.length) {
      throw new InputError(
        tensorName(inputs, "input_ids"),
        `${imageSlots.length} [IMG] tokens (id ${cfg.image_token_index}) but the ${inputs.images.shape[0]} image(s) give ${count} features`,
        "each image needs (H/28)·(W/28) [IMG] tokens; render the prompt with splint's processor so the counts agree",
      );
    }
    x = g.scatterRows(x, ctx.upload(imageSlots, [imageSlots.length], "i32"), features);
  } else if (imageSlots.length > 0) {
    throw new InputError(tensorName(inputs, "input_ids"), `${imageSlots.length} [IMG] tokens (id ${cfg.image_token_index}) but no pixel_values were given`);
  }
  opts.capture?.("text.inputs_embeds", x);

  const half = t.head_dim / 2;
  let keyCos: Tensor, keySin: Tensor, queryCos: Tensor, querySin: Tensor;
  if (inputs.positionIds) {
    checkLength(tensorName(inputs, "position_ids"), inputs.positionIds, N);
    const tables = decoderRopeTables(t.rope, model.ropeFreq, inputs.positionIds);
    keyCos = ctx.upload(tables.key.cos, [N, half], "f32");
    keySin = ctx.upload(tables.key.sin, [N, half], "f32");
    const sameTables = tables.query === tables.key;
    queryCos = sameTables ? keyCos : ctx.upload(tables.query.cos, [N, half], "f32");
    querySin = sameTables ? keySin : ctx.upload(tables.query.sin, [N, half], "f32");
  } else {
    // Default positions depend only on (B, T, offset): the tables are shape constants.
    const offset = opts.cache?.offset ?? 0;
    let tables: ReturnType<typeof decoderRopeTables> | null = null;
    const build = () => (tables ??= decoderRopeTables(t.rope, model.ropeFreq, defaultPositions(B, T, offset)));
    const key = `text-rope:${B}x${T}@${offset}`;
    // The query tables (llama-4 scaled, or the key tables again) are kept under their own key, so
    // nothing is rebuilt when both pairs are cached.
    [keyCos, keySin] = model.constants.pair(g.backend, `${key}/key`, () => ({ first: build().key.cos, second: build().key.sin, shape: [N, half] }));
    [queryCos, querySin] = model.constants.pair(g.backend, `${key}/query`, () => ({ first: build().query.cos, second: build().query.sin, shape: [N, half] }));
  }

  let mask: AttentionMask;
  let cache: DecoderPass["cache"];
  if (opts.cache) {
    const { slots, offset } = opts.cache;
    const rows = new Int32Array(N);
    for (let b = 0; b < B; b++) for (let s = 0; s < T; s++) rows[b * T + s] = b * slots + offset + s;
    cache = { layers: opts.cache.layers, slots, rowOfToken: ctx.upload(rows, [N], "i32") };
    mask = { kind: "causal", queryOffset: offset, keyValid: opts.cache.keyValid };
  } else {
    const mask01 = inputs.attentionMask;
    if (mask01) checkLength(tensorName(inputs, "attention_mask"), mask01, N);
    const padded = mask01 !== undefined && mask01.some((m) => m === 0);
    mask = padded ? { kind: "causal", queryOffset: 0, keyValid: ctx.upload(mask01, [B, T], "i32") } : { kind: "causal", queryOffset: 0 };
  }

  let hidden = runDecoder(ctx, t, model.text, x, {
    batch: B,
    seqLen: T,
    queryCos,
    querySin,
    keyCos,
    keySin,
    mask,
    cache,
    checkpointLayers: opts.checkpointLayers,
    capture: opts.capture,
  });
  if (opts.lastPositionOnly && T > 1) {
    const last = Int32Array.from({ length: B }, (_, b) => b * T + T - 1);
    hidden = g.gatherRows(hidden, ctx.upload(last, [B], "i32"));
  }
  if (!inputs.labels) return { logits: model.text.lmHead.forward(ctx, hidden) };
  if (opts.lastPositionOnly) throw new Error("forwardMistral3: labels need logits at every position");
  checkLength(tensorName(inputs, "labels"), inputs.labels, N);
  const shifted = shiftLabels(inputs.labels, B, T);
  if (opts.scoredPositionsOnly) {
    // The head is [V, hidden]: for a short answer after a long prompt it costs more than the rest of
    // the step, and the loss needs it only where a label is counted.
    const scored = Int32Array.from(shifted.keys()).filter((i) => shifted[i] !== IGNORE_INDEX);
    if (scored.length > 0) {
      const logits = model.text.lmHead.forward(ctx, g.gatherRows(hidden, ctx.upload(scored, [scored.length], "i32")));
      const labels = Int32Array.from(scored, (i) => shifted[i]!);
      return { logits, loss: g.crossEntropy(logits, ctx.upload(labels, [labels.length], "i32"), IGNORE_INDEX, countCounted(labels)) };
    }
  }
  const logits = model.text.lmHead.forward(ctx, hidden);
  return { logits, loss: g.crossEntropy(logits, ctx.upload(shifted, [N], "i32"), IGNORE_INDEX, countCounted(shifted)) };
}

/** transformers' ForCausalLMLoss shift: position t is scored against label t+1; the last gets -100. */
/** Labels the loss counts (not IGNORE_INDEX). */
function countCounted(labels: Int32Array): number {
  let n = 0;
  for (const label of labels) if (label !== IGNORE_INDEX) n++;
  return n;
}

export function shiftLabels(labels: Int32Array, batch: number, seqLen: number): Int32Array {
  const out = new Int32Array(batch * seqLen).fill(IGNORE_INDEX);
  for (let b = 0; b < batch; b++) for (let t = 0; t + 1 < seqLen; t++) out[b * seqLen + t] = labels[b * seqLen + t + 1]!;
  return out;
}

function imageFeatures(ctx: ForwardContext, model: Mistral3Model, inputs: Mistral3Inputs, images: ImageBatch, opts: ForwardOptions): Var {
  const v = model.config.vision_config;
  const [count, channels, maxH, maxW] = images.shape;
  const p = v.patch_size;
  checkLength(tensorName(inputs, "pixel_values"), images.pixelValues, count * channels * maxH * maxW);
  checkLength(tensorName(inputs, "image_sizes"), images.imageSizes, count * 2);
  if (channels !== v.num_channels) throw new InputError(tensorName(inputs, "pixel_values"), `has ${channels} channels, the vision tower expects ${v.num_channels}`);
  const visionImages: VisionImage[] = [];
  for (let i = 0; i < count; i++) {
    const h = images.imageSizes[2 * i]!;
    const w = images.imageSizes[2 * i + 1]!;
    if (h <= 0 || w <= 0 || h > maxH || w > maxW || h % p !== 0 || w % p !== 0) {
      throw new InputError(tensorName(inputs, "image_sizes"), `image ${i} is ${h}×${w}: sizes must be positive multiples of patch_size ${p} within pixel_values' ${maxH}×${maxW}`);
    }
    visionImages.push({ pixels: ctx.upload(cropImage(images.pixelValues, i, channels, maxH, maxW, h, w), [channels, h, w], "f32"), rows: h / p, cols: w / p });
  }
  const layers = v.num_hidden_layers;
  const featureLayer = model.config.vision_feature_layer;
  const layersToRun = featureLayer >= 0 ? featureLayer : layers + 1 + featureLayer;
  const features = runVisionTower(ctx, v, model.vision, visionImages, layersToRun, model.constants, opts);
  const grids = visionImages.map(({ rows, cols }) => ({ rows, cols }));
  return runProjector(ctx, model.projector, features, grids, model.config.spatial_merge_size, model.config.text_config.rms_norm_eps, model.constants, opts.capture);
}

/**
 * Image i's (channels, h, w) top-left crop of the batch's (count, channels, maxH, maxW) pixel box.
 * An image that fills the box (every image of a one-size batch) is a view, not a copy: training
 * uploads two 5 MB images a step.
 */
export function cropImage(pixels: Float32Array, i: number, channels: number, maxH: number, maxW: number, h: number, w: number): Float32Array {
  const box = channels * maxH * maxW;
  if (h === maxH && w === maxW) return pixels.subarray(i * box, (i + 1) * box);
  const crop = new Float32Array(channels * h * w);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < h; y++) {
      const from = ((i * channels + c) * maxH + y) * maxW;
      crop.set(pixels.subarray(from, from + w), (c * h + y) * w);
    }
  }
  return crop;
}

function positionsOf(ids: Int32Array, token: number): Int32Array {
  const out: number[] = [];
  ids.forEach((id, i) => {
    if (id === token) out.push(i);
  });
  return Int32Array.from(out);
}

function defaultPositions(batch: number, seqLen: number, offset: number): Int32Array {
  const out = new Int32Array(batch * seqLen);
  for (let b = 0; b < batch; b++) for (let t = 0; t < seqLen; t++) out[b * seqLen + t] = offset + t;
  return out;
}

function checkLength(name: string, values: ArrayLike<number>, expected: number): void {
  if (values.length !== expected) throw new InputError(name, `has ${values.length} elements, expected ${expected}`);
}
