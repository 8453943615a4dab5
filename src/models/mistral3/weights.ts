import type { SafetensorsDType, TensorInfo, TensorSource } from "../../io/safetensors.ts";
import { toBf16Bits, toFloat32, toFp8Bytes } from "../../io/safetensors.ts";
import type { Backend } from "../../tensor/backend.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { InputError } from "../../util/errors.ts";
import type { Mistral3Config } from "./config.ts";

/**
 * Checkpoint tensor names → the model's own names, and the strict loader.
 *
 * Canonical names are those of transformers v5's in-memory Mistral3ForConditionalGeneration
 * (`model.language_model.*`, `model.vision_tower.*`, `model.multi_modal_projector.*`, `lm_head.*`),
 * which are also the module paths PEFT adapters are keyed by. Files written by transformers use the
 * legacy prefixes (`language_model.model.*`, `language_model.lm_head.*`, `vision_tower.*`,
 * `multi_modal_projector.*`, ministral3.md §5.1); both are accepted.
 */

/** How weights are kept in memory: as stored ("auto"), or floats widened/narrowed. fp8 always stays fp8. */
export type WeightDtype = "auto" | "f32" | "bf16";

export interface WeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** A linear weight (the only kind that may be stored in fp8). */
  readonly linear: boolean;
}

const LEGACY_PREFIXES: readonly [string, string][] = [
  ["language_model.lm_head.", "lm_head."],
  ["language_model.model.", "model.language_model."],
  ["vision_tower.", "model.vision_tower."],
  ["multi_modal_projector.", "model.multi_modal_projector."],
];

/** The canonical name of a checkpoint key (new-prefix keys are already canonical). */
export function canonicalName(key: string): string {
  for (const [legacy, current] of LEGACY_PREFIXES) if (key.startsWith(legacy)) return current + key.slice(legacy.length);
  return key;
}

export const TEXT_PREFIX = "model.language_model";
export const VISION_PREFIX = "model.vision_tower";
export const PROJECTOR_PREFIX = "model.multi_modal_projector";

/** Every tensor the config implies, with its shape (lm_head included; see planWeights for tying). */
export function expectedWeights(config: Mistral3Config): WeightSpec[] {
  const specs: WeightSpec[] = [];
  const add = (name: string, shape: number[], linear = false) => specs.push({ name, shape, linear });
  const v = config.vision_config;
  const t = config.text_config;
  const m = config.spatial_merge_size;

  add(`${VISION_PREFIX}.patch_conv.weight`, [v.hidden_size, v.num_channels, v.patch_size, v.patch_size]);
  add(`${VISION_PREFIX}.ln_pre.weight`, [v.hidden_size]);
  for (let i = 0; i < v.num_hidden_layers; i++) {
    const p = `${VISION_PREFIX}.transformer.layers.${i}`;
    add(`${p}.attention_norm.weight`, [v.hidden_size]);
    for (const proj of ["q", "k", "v", "o"]) add(`${p}.attention.${proj}_proj.weight`, [v.hidden_size, v.hidden_size], true);
    add(`${p}.ffn_norm.weight`, [v.hidden_size]);
    add(`${p}.feed_forward.gate_proj.weight`, [v.intermediate_size, v.hidden_size], true);
    add(`${p}.feed_forward.up_proj.weight`, [v.intermediate_size, v.hidden_size], true);
    add(`${p}.feed_forward.down_proj.weight`, [v.hidden_size, v.intermediate_size], true);
  }

  add(`${PROJECTOR_PREFIX}.norm.weight`, [v.hidden_size]);
  add(`${PROJECTOR_PREFIX}.patch_merger.merging_layer.weight`, [v.hidden_size, v.hidden_size * m * m], true);
  add(`${PROJECTOR_PREFIX}.linear_1.weight`, [t.hidden_size, v.hidden_size], true);
  add(`${PROJECTOR_PREFIX}.linear_2.weight`, [t.hidden_size, t.hidden_size], true);

  const qOut = t.num_attention_heads * t.head_dim;
  const kvOut = t.num_key_value_heads * t.head_dim;
  add(`${TEXT_PREFIX}.embed_tokens.weight`, [t.vocab_size, t.hidden_size]);
  for (let i = 0; i < t.num_hidden_layers; i++) {
    const p = `${TEXT_PREFIX}.layers.${i}`;
    add(`${p}.input_layernorm.weight`, [t.hidden_size]);
    add(`${p}.self_attn.q_proj.weight`, [qOut, t.hidden_size], true);
    add(`${p}.self_attn.k_proj.weight`, [kvOut, t.hidden_size], true);
    add(`${p}.self_attn.v_proj.weight`, [kvOut, t.hidden_size], true);
    add(`${p}.self_attn.o_proj.weight`, [t.hidden_size, qOut], true);
    add(`${p}.post_attention_layernorm.weight`, [t.hidden_size]);
    add(`${p}.mlp.gate_proj.weight`, [t.intermediate_size, t.hidden_size], true);
    add(`${p}.mlp.up_proj.weight`, [t.intermediate_size, t.hidden_size], true);
    add(`${p}.mlp.down_proj.weight`, [t.hidden_size, t.intermediate_size], true);
  }
  add(`${TEXT_PREFIX}.norm.weight`, [t.hidden_size]);
  add("lm_head.weight", [t.vocab_size, t.hidden_size], true);
  return specs;
}

export interface PlannedTensor {
  readonly spec: WeightSpec;
  /** The key in the checkpoint. */
  readonly key: string;
  /** fp8 only: the key of its `weight_scale_inv`. */
  readonly scaleKey?: string;
}

export interface WeightPlan {
  readonly tensors: readonly PlannedTensor[];
  /** No lm_head in the checkpoint: the head is the embedding matrix (ministral3.md §5.4). */
  readonly tiedHead: boolean;
  /** fp8 `activation_scale` tensors: only static-fp8 inference uses them; splint dequantises weights. */
  readonly ignored: readonly string[];
}

const SUPPORTED_DTYPES: ReadonlySet<SafetensorsDType> = new Set(["F32", "F64", "BF16", "F16", "F8_E4M3"]);

/**
 * Matches the checkpoint's keys against the config and reports every problem at once: missing,
 * unexpected, mis-shaped and unsupported tensors (an error names the checkpoint `where`).
 */
export function planWeights(
  config: Mistral3Config,
  keys: readonly string[],
  info: (key: string) => Pick<TensorInfo, "dtype" | "shape">,
  where: string,
): WeightPlan {
  const specs = new Map(expectedWeights(config).map((s) => [s.name, s]));
  const byName = new Map<string, string>();
  const problems = { missing: [] as string[], unexpected: [] as string[], shape: [] as string[], dtype: [] as string[], duplicate: [] as string[] };
  const scales = new Map<string, string>(); // canonical weight name → scale key
  const ignored: string[] = [];

  for (const key of keys) {
    const name = canonicalName(key);
    if (name.endsWith(".weight_scale_inv")) {
      scales.set(`${name.slice(0, -".weight_scale_inv".length)}.weight`, key);
      continue;
    }
    if (name.endsWith(".activation_scale")) {
      ignored.push(key);
      continue;
    }
    const previous = byName.get(name);
    if (previous !== undefined) {
      problems.duplicate.push(`${previous} and ${key}`);
      continue;
    }
    byName.set(name, key);
  }

  const tensors: PlannedTensor[] = [];
  const tiedHead = !byName.has("lm_head.weight");
  for (const spec of specs.values()) {
    if (spec.name === "lm_head.weight" && tiedHead) continue;
    const key = byName.get(spec.name);
    if (key === undefined) {
      problems.missing.push(spec.name);
      continue;
    }
    const { dtype, shape } = info(key);
    if (!sameShape(shape, spec.shape)) problems.shape.push(`${key} is [${shape.join(",")}], the config implies [${spec.shape.join(",")}]`);
    if (!SUPPORTED_DTYPES.has(dtype) || (dtype === "F8_E4M3" && !spec.linear)) {
      problems.dtype.push(`${key} is ${dtype}`);
      continue;
    }
    if (dtype === "F8_E4M3") {
      const scaleKey = scales.get(spec.name);
      if (scaleKey === undefined) {
        problems.missing.push(`${key.slice(0, -".weight".length)}.weight_scale_inv (scale of an F8_E4M3 weight)`);
        continue;
      }
      const scaleInfo = info(scaleKey);
      if (scaleInfo.shape.reduce((a, b) => a * b, 1) !== 1 || !["F32", "BF16", "F16"].includes(scaleInfo.dtype)) {
        problems.dtype.push(`${scaleKey} is ${scaleInfo.dtype} [${scaleInfo.shape.join(",")}]; only per-tensor scales (one float) are supported`);
      }
      scales.delete(spec.name);
      tensors.push({ spec, key, scaleKey });
    } else {
      tensors.push({ spec, key });
    }
  }
  for (const [name, key] of byName) if (!specs.has(name)) problems.unexpected.push(key);
  for (const key of scales.values()) problems.unexpected.push(`${key} (a scale without an F8_E4M3 weight)`);

  const lines: string[] = [];
  const list = (label: string, items: string[]) => {
    if (items.length === 0) return;
    const shown = items.slice(0, 12).map((s) => `  ${s}`);
    if (items.length > 12) shown.push(`  … and ${items.length - 12} more`);
    lines.push(`${items.length} ${label}:`, ...shown);
  };
  list("missing", problems.missing);
  list("unexpected", problems.unexpected);
  list("mis-shaped", problems.shape);
  list("of an unsupported dtype", problems.dtype);
  list("given under both the legacy and the new name", problems.duplicate);
  if (lines.length > 0) {
    throw new InputError(
      where,
      `the checkpoint does not match its config.json:\n${lines.join("\n")}`,
      "the config and the weights must come from the same model (splint reads Mistral3ForConditionalGeneration checkpoints in the Hugging Face layout)",
    );
  }
  return { tensors, tiedHead, ignored };
}

/**
 * Reads and uploads the planned tensors one at a time (grouped by shard, so a sharded checkpoint is
 * read file by file), so at most one tensor's bytes are on the host at once.
 */
export async function loadPlannedWeights(
  source: TensorSource,
  plan: WeightPlan,
  backend: Backend,
  dtype: WeightDtype,
  onProgress?: (done: number, total: number) => void,
): Promise<Map<string, Tensor>> {
  const order = [...plan.tensors].sort((a, b) => source.info(a.key).file.localeCompare(source.info(b.key).file));
  const out = new Map<string, Tensor>();
  try {
    for (const [i, planned] of order.entries()) {
      out.set(planned.spec.name, await uploadOne(source, planned, backend, dtype));
      onProgress?.(i + 1, order.length);
    }
  } catch (error) {
    for (const t of out.values()) t.free();
    throw error;
  }
  return out;
}

async function uploadOne(source: TensorSource, planned: PlannedTensor, backend: Backend, dtype: WeightDtype): Promise<Tensor> {
  const stored = await source.read(planned.key);
  const shape = stored.shape;
  if (stored.dtype === "F8_E4M3") {
    const scaleStored = await source.read(planned.scaleKey!);
    const scale = toFloat32(scaleStored)[0]!;
    if (!Number.isFinite(scale)) throw new InputError(scaleStored.file, `tensor "${scaleStored.name}": scale ${scale} is not finite`);
    return backend.upload(toFp8Bytes(stored), shape, "fp8_e4m3", scale);
  }
  if (stored.dtype === "BF16" && dtype !== "f32") return backend.upload(toBf16Bits(stored), shape, "bf16");
  const values = toFloat32(stored);
  const wantBf16 = dtype === "bf16" || (dtype === "auto" && stored.dtype === "BF16");
  return backend.upload(values, shape, wantBf16 ? "bf16" : "f32");
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
