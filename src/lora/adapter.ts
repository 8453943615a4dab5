import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { openSafetensors, toFloat32, writeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { canonicalName } from "../models/mistral3/weights.ts";
import type { Backend } from "../tensor/backend.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { Rng } from "../util/rng.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { loraScale, type LoraLinear } from "./lora-linear.ts";
import { matchesModules, modulePattern } from "./module-pattern.ts";

/**
 * LoRA adapters in PEFT's format, so Python peft and splint read each other's files:
 * `adapter_config.json` (LoraConfig fields) and `adapter_model.safetensors` with keys
 * `base_model.model.<module path>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r], module paths
 * as in the transformers model (`model.language_model.layers.0.self_attn.q_proj`, …).
 */

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";
const KEY_PREFIX = "base_model.model.";

export interface LoraSettings {
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  /** A list matched by name suffix (PEFT), a single regex (fullmatch), or "all-linear". */
  target_modules: string[] | string;
  exclude_modules: string[] | string | null;
  use_rslora: boolean;
  /** Per-module overrides, keys are regexes matched against the module path's end. */
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  base_model_name_or_path: string | null;
  task_type: string | null;
}

/**
 * Which modules `settings` targets among `paths` (PEFT's check_target_module_exists). `where`
 * names the file the patterns came from, for the message when one does not compile.
 */
export function targetedModules(settings: Pick<LoraSettings, "target_modules" | "exclude_modules">, paths: Iterable<string>, where = "target_modules"): string[] {
  const out: string[] = [];
  for (const path of paths) {
    const targeted = settings.target_modules === "all-linear" ? path !== "lm_head" : matchesModules(settings.target_modules, path, `${where} (target_modules)`);
    if (!targeted) continue;
    if (settings.exclude_modules !== null && matchesModules(settings.exclude_modules, path, `${where} (exclude_modules)`)) continue;
    out.push(path);
  }
  return out;
}

export type LoraScope = "language" | "vision" | "all";

/**
 * `--lora-scope` as a PEFT `exclude_modules` regex (full match), so the restriction is written into
 * adapter_config.json and Python peft applies the adapter to the same modules.
 */
export function loraScopeExclude(scope: LoraScope): string | null {
  if (scope === "language") return String.raw`.*\.vision_tower\..*`;
  if (scope === "vision") return String.raw`.*\.language_model\..*`;
  return null;
}

/** r and alpha of one module, after rank_pattern / alpha_pattern (PEFT's get_pattern_key). */
export function moduleRankAlpha(settings: LoraSettings, path: string): { r: number; alpha: number } {
  const find = (patterns: Record<string, number>): number | undefined => {
    for (const [pattern, value] of Object.entries(patterns)) if (modulePattern(pattern, "rank_pattern / alpha_pattern", { suffix: true }).test(path)) return value;
    return undefined;
  };
  return { r: find(settings.rank_pattern) ?? settings.r, alpha: find(settings.alpha_pattern) ?? settings.lora_alpha };
}

export function adapterKey(modulePath: string, which: "A" | "B"): string {
  return `${KEY_PREFIX}${modulePath}.lora_${which}.weight`;
}

/** Parses an adapter_config.json; refuses what splint does not implement rather than ignoring it. */
export function parseAdapterConfig(raw: unknown, file: string): LoraSettings {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new InputError(file, "is not a JSON object");
  const c = raw as Record<string, unknown>;
  const peftType = c.peft_type ?? "LORA";
  if (peftType !== "LORA") throw new InputError(file, `peft_type ${JSON.stringify(peftType)} is not supported (only LORA)`);
  if (c.use_dora === true) throw new InputError(file, "use_dora true is not supported");
  if ((c.bias ?? "none") !== "none") throw new InputError(file, `bias ${JSON.stringify(c.bias)} is not supported (only "none")`);
  if (c.modules_to_save !== undefined && c.modules_to_save !== null && !(Array.isArray(c.modules_to_save) && c.modules_to_save.length === 0)) {
    throw new InputError(file, `modules_to_save ${JSON.stringify(c.modules_to_save)} is not supported (splint trains LoRA pairs only)`);
  }
  if (c.layers_to_transform !== undefined && c.layers_to_transform !== null) {
    throw new InputError(file, "layers_to_transform is not supported");
  }
  // Newer PEFT variants that change the forward pass: refused rather than silently run as plain LoRA.
  for (const flag of ["lora_bias", "use_qalora", "use_bdlora"]) {
    if (c[flag] !== undefined && c[flag] !== null && c[flag] !== false) throw new InputError(file, `${flag} ${JSON.stringify(c[flag])} is not supported`);
  }
  if (c.target_parameters !== undefined && c.target_parameters !== null) throw new InputError(file, "target_parameters is not supported");
  const num = (key: string, fallback: number, check: (v: number) => boolean): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !check(v)) throw new InputError(file, `${key} ${JSON.stringify(c[key])} is not valid`);
    return v;
  };
  const modules = (key: string, fallback: string[] | string | null): string[] | string | null => {
    const v = c[key] ?? fallback;
    if (v === null || typeof v === "string") return v;
    if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
    throw new InputError(file, `${key} ${JSON.stringify(v)} is not a list of module names or a regex`);
  };
  const patterns = (key: string): Record<string, number> => {
    const v = c[key] ?? {};
    if (typeof v !== "object" || v === null || Array.isArray(v) || !Object.values(v).every((x) => typeof x === "number")) {
      throw new InputError(file, `${key} is not an object of numbers`);
    }
    return v as Record<string, number>;
  };
  const target = modules("target_modules", null);
  if (target === null) throw new InputError(file, "target_modules is missing");
  // Compiled now, so a bad pattern is reported against this file before any model is loaded.
  if (typeof target === "string" && target !== "all-linear") modulePattern(target, `${file} (target_modules)`);
  const exclude = modules("exclude_modules", null);
  if (typeof exclude === "string") modulePattern(exclude, `${file} (exclude_modules)`);
  for (const key of ["rank_pattern", "alpha_pattern"]) for (const pattern of Object.keys(patterns(key))) modulePattern(pattern, `${file} (${key})`, { suffix: true });
  const str = (key: string): string | null => (typeof c[key] === "string" ? (c[key] as string) : null);
  return {
    r: num("r", 8, (v) => Number.isInteger(v) && v > 0),
    lora_alpha: num("lora_alpha", 8, (v) => v > 0),
    lora_dropout: num("lora_dropout", 0, (v) => v >= 0 && v < 1),
    target_modules: target,
    exclude_modules: exclude,
    use_rslora: c.use_rslora === true,
    rank_pattern: patterns("rank_pattern"),
    alpha_pattern: patterns("alpha_pattern"),
    base_model_name_or_path: str("base_model_name_or_path"),
    task_type: str("task_type"),
  };
}

/** adapter_config.json as PEFT writes it (only fields every PEFT version since 0.7 reads). */
export function adapterConfigJson(settings: LoraSettings): Record<string, unknown> {
  return {
    alpha_pattern: settings.alpha_pattern,
    auto_mapping: null,
    base_model_name_or_path: settings.base_model_name_or_path,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: settings.lora_alpha,
    lora_dropout: settings.lora_dropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: settings.r,
    rank_pattern: settings.rank_pattern,
    revision: null,
    target_modules: settings.target_modules,
    task_type: settings.task_type ?? "CAUSAL_LM",
    use_dora: false,
    use_rslora: settings.use_rslora,
    ...(settings.exclude_modules === null ? {} : { exclude_modules: settings.exclude_modules }),
  };
}

export async function readAdapterConfig(dir: string): Promise<LoraSettings> {
  const file = join(dir, ADAPTER_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new InputError(file, `cannot read the adapter config (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, "an adapter folder holds adapter_config.json and adapter_model.safetensors");
  }
  try {
    return parseAdapterConfig(JSON.parse(text), file);
  } catch (error) {
    if (error instanceof SyntaxError) throw new InputError(file, `not valid JSON (${error.message})`);
    throw error;
  }
}

/** The module path and matrix of a PEFT key, legacy transformers prefixes made canonical. */
export function parseAdapterKey(key: string): { path: string; which: "A" | "B" } | null {
  const m = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.[^.]+)?\.weight$/.exec(key);
  if (!m) return null;
  return { path: canonicalName(`${m[1]!}.weight`).slice(0, -".weight".length), which: m[2] as "A" | "B" };
}

/**
 * Reads an adapter folder and attaches its LoRA pairs (f32) to the model's linears. Every problem is
 * reported at once: keys that name no linear of this model (an adapter of another architecture),
 * modules the config targets but the file lacks, and shape mismatches.
 */
export async function loadAdapter(dir: string, linears: ReadonlyMap<string, LoraLinear>, backend: Backend): Promise<LoraSettings> {
  const settings = await readAdapterConfig(dir);
  const file = join(dir, ADAPTER_WEIGHTS_FILE);
  const source = await openSafetensors(file);
  const pairs = new Map<string, { A?: string; B?: string }>();
  const foreign: string[] = [];
  try {
    for (const key of source.keys()) {
      const parsed = parseAdapterKey(key);
      if (!parsed || !linears.has(parsed.path)) {
        foreign.push(key);
        continue;
      }
      const entry = pairs.get(parsed.path) ?? {};
      entry[parsed.which] = key;
      pairs.set(parsed.path, entry);
    }
    const problems: string[] = [];
    if (foreign.length > 0) {
      problems.push(`${foreign.length} tensor(s) match no linear layer of this model (an adapter for another architecture?): ${foreign.slice(0, 6).join(", ")}${foreign.length > 6 ? ", …" : ""}`);
    }
    for (const path of targetedModules(settings, linears.keys(), join(dir, ADAPTER_CONFIG_FILE))) {
      if (!pairs.has(path)) problems.push(`no LoRA weights for ${path}, which target_modules selects`);
    }
    for (const [path, { A, B }] of pairs) {
      if (!A || !B) {
        problems.push(`${path} has lora_${A ? "A" : "B"} but no lora_${A ? "B" : "A"}`);
        continue;
      }
      const linear = linears.get(path)!;
      const { r } = moduleRankAlpha(settings, path);
      const a = source.info(A).shape;
      const b = source.info(B).shape;
      if (a.length !== 2 || a[0] !== r || a[1] !== linear.inFeatures) {
        problems.push(`${A} is [${a.join(",")}], expected [${r},${linear.inFeatures}] (r × in_features of ${path})`);
      }
      if (b.length !== 2 || b[0] !== linear.outFeatures || b[1] !== r) {
        problems.push(`${B} is [${b.join(",")}], expected [${linear.outFeatures},${r}] (out_features × r of ${path})`);
      }
    }
    if (problems.length > 0) {
      throw new InputError(file, `the adapter does not fit this model:\n  ${problems.join("\n  ")}`, "use an adapter trained on this base model (same architecture and sizes)");
    }
    const attached: LoraLinear[] = [];
    try {
      for (const [path, { A, B }] of pairs) {
        const linear = linears.get(path)!;
        const { r, alpha } = moduleRankAlpha(settings, path);
        const a = await source.read(A!);
        const b = await source.read(B!);
        const aValues = finiteOrThrow(file, A!, toFloat32(a));
        const bValues = finiteOrThrow(file, B!, toFloat32(b));
        linear.lora = {
          a: backend.upload(aValues, a.shape, "f32"),
          b: backend.upload(bValues, b.shape, "f32"),
          scale: loraScale(alpha, r, settings.use_rslora),
          dropout: settings.lora_dropout,
        };
        attached.push(linear);
      }
    } catch (error) {
      detach(attached);
      throw error;
    }
  } finally {
    await source.close();
  }
  return settings;
}

/**
 * An adapter holding NaN or Infinity (saved from a diverged run) would turn every output into NaN;
 * refused when loaded, naming the tensor, rather than surfacing as "NaN%" or NaN merged weights.
 */
function finiteOrThrow(file: string, key: string, values: Float32Array): Float32Array {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) {
      throw new InputError(file, `tensor ${key} holds ${values[i]} at index ${i}; the adapter is unusable`, "it comes from a run whose loss diverged: retrain (the default --on-nan stop keeps the last good checkpoint)");
    }
  }
  return values;
}

/**
 * Fresh LoRA pairs with PEFT's default init on every targeted linear: A Kaiming-uniform
 * (a = √5, so U(-1/√in, 1/√in)), B zero. Returns the targeted paths.
 */
export function initAdapter(settings: LoraSettings, linears: ReadonlyMap<string, LoraLinear>, backend: Backend, rng: Rng): string[] {
  const paths = targetedModules(settings, linears.keys());
  if (paths.length === 0) {
    throw new InputError("target_modules", `${JSON.stringify(settings.target_modules)} selects no linear layer of this model`);
  }
  for (const path of paths) {
    const linear = linears.get(path)!;
    const { r, alpha } = moduleRankAlpha(settings, path);
    const bound = 1 / Math.sqrt(linear.inFeatures);
    const a = Float32Array.from({ length: r * linear.inFeatures }, () => (2 * rng.next() - 1) * bound);
    linear.lora = {
      a: backend.upload(a, [r, linear.inFeatures], "f32"),
      b: backend.zeros([linear.outFeatures, r], "f32"),
      scale: loraScale(alpha, r, settings.use_rslora),
      dropout: settings.lora_dropout,
    };
  }
  return paths;
}

/** Writes adapter_config.json and adapter_model.safetensors (f32) for every linear that has a pair. */
export async function saveAdapter(dir: string, settings: LoraSettings, linears: ReadonlyMap<string, LoraLinear>, backend: Backend): Promise<void> {
  const tensors: TensorToWrite[] = [];
  for (const [path, linear] of linears) {
    if (!linear.lora) continue;
    const add = (which: "A" | "B", t: Tensor) => tensors.push({ name: adapterKey(path, which), dtype: "F32", shape: t.shape, data: backend.read(t) as Float32Array });
    add("A", linear.lora.a);
    add("B", linear.lora.b);
  }
  if (tensors.length === 0) throw new InputError(dir, "no LoRA weights to save");
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: "pt" });
  await writeFileAtomic(join(dir, ADAPTER_CONFIG_FILE), `${JSON.stringify(adapterConfigJson(settings), null, 2)}\n`);
}

/** Removes (and frees) the LoRA pairs of the given linears. */
export function detach(linears: Iterable<LoraLinear>): void {
  for (const l of linears) {
    l.lora?.a.free();
    l.lora?.b.free();
    l.lora = null;
  }
}
