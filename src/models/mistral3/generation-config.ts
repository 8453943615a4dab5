import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { InputError } from "../../util/errors.ts";

/**
 * The fields of `generation_config.json` that change what generate does, with transformers'
 * GenerationConfig defaults for the ones absent (do_sample false, temperature 1, top_k 50, top_p 1).
 */
export interface GenerationDefaults {
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  maxNewTokens: number | null;
  eosTokenIds: number[] | null;
  padTokenId: number | null;
}

export function readGenerationConfig(modelDir: string): GenerationDefaults {
  const file = join(modelDir, "generation_config.json");
  const defaults: GenerationDefaults = { doSample: false, temperature: 1, topK: 50, topP: 1, minP: 0, maxNewTokens: null, eosTokenIds: null, padTokenId: null };
  if (!existsSync(file)) return defaults;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new InputError(file, `not valid JSON (${(error as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new InputError(file, "is not a JSON object");
  const c = raw as Record<string, unknown>;
  const num = (key: string, fallback: number): number => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number") throw new InputError(file, `${key} ${JSON.stringify(v)} is not a number`);
    return v;
  };
  const eos = c.eos_token_id;
  let eosTokenIds: number[] | null = null;
  if (typeof eos === "number") eosTokenIds = [eos];
  else if (Array.isArray(eos) && eos.every((x) => typeof x === "number")) eosTokenIds = eos as number[];
  else if (eos !== undefined && eos !== null) throw new InputError(file, `eos_token_id ${JSON.stringify(eos)} is not an id or a list of ids`);
  return {
    doSample: c.do_sample === true,
    temperature: num("temperature", 1),
    topK: num("top_k", 50),
    topP: num("top_p", 1),
    minP: num("min_p", 0),
    maxNewTokens: c.max_new_tokens === undefined || c.max_new_tokens === null ? null : num("max_new_tokens", 0),
    eosTokenIds,
    padTokenId: c.pad_token_id === undefined || c.pad_token_id === null ? null : num("pad_token_id", 0),
  };
}
