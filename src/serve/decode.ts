import type { Graph } from "../autograd/graph.ts";
import { argmax, DecodeSession, sampleToken, type SamplingOptions } from "../models/mistral3/generate.ts";
import type { ImageBatch, Mistral3Model } from "../models/mistral3/model.ts";
import { Rng } from "../util/rng.ts";

/**
 * Batched decoding for the server. The same KV-cache scheme as generateMistral3 (one prefill of the
 * left-padded prompts, then one token per step), with what a server needs and the CLI does not:
 * - each row has its own token budget, sampling settings and seed, so requests with different
 *   settings share a batch and a seeded request gives the same tokens whatever it is batched with;
 * - a row can stop at any step (a stop string, a client that went away) and then only feeds pad;
 * - between steps it yields to the event loop, so streamed tokens are flushed, disconnects and new
 *   requests are seen, and timeouts fire while a batch decodes.
 *
 * Dimension letters: B rows, T prompt length, S = T + the largest budget, V vocabulary.
 */
export interface DecodeRow {
  readonly promptIds: readonly number[];
  readonly maxNewTokens: number;
  /** Absent: greedy. */
  readonly sampling?: SamplingOptions;
  /** Generate past end-of-sequence (benchmarks that need exactly maxNewTokens). */
  readonly ignoreEos?: boolean;
  /** Receives each new token; returns false when the row is finished (stop string, cancelled). */
  onToken(token: number): boolean;
  /** Checked before each step; true drops the row without another token. */
  cancelled(): boolean;
}

export interface DecodeSettings {
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number;
  /**
   * Ids never generated: the image placeholders. A generated [IMG] would be fed back as a slot
   * waiting for pixels that do not exist (and a random or barely trained model does pick them).
   */
  readonly bannedTokenIds: readonly number[];
  /**
   * Ids from this one up are never generated: the tokenizer has no text for them (a model's
   * embedding matrix is often padded past its vocabulary).
   */
  readonly vocabLimit: number;
}

export type RowEnd = "eos" | "length" | "stopped" | "cancelled";

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function decodeBatch(
  model: Mistral3Model,
  newGraph: () => Graph,
  rows: readonly DecodeRow[],
  images: ImageBatch | undefined,
  settings: DecodeSettings,
): Promise<RowEnd[]> {
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.promptIds.length));
  const budget = Math.max(...rows.map((r) => r.maxNewTokens));
  const S = T + budget;
  const ids = new Int32Array(B * T).fill(settings.padTokenId);
  const mask = new Int32Array(B * T);
  rows.forEach((r, b) => {
    const start = b * T + T - r.promptIds.length;
    ids.set(r.promptIds, start);
    mask.fill(1, start, b * T + T);
  });
  const session = new DecodeSession(model, newGraph, mask, B, T, S);
  const rngs = rows.map((r) => (r.sampling ? new Rng(r.sampling.seed) : null));
  const ends: (RowEnd | null)[] = rows.map(() => null);
  const produced = new Array<number>(B).fill(0);

  try {
    let stepIds = ids;
    for (let step = 0; step < budget; step++) {
      rows.forEach((r, b) => {
        if (ends[b] === null && r.cancelled()) ends[b] = "cancelled";
      });
      if (ends.every((e) => e !== null)) break;
      const logits = session.next(stepIds, images);
      const V = logits.length / B;
      const tokens = new Int32Array(B).fill(settings.padTokenId);
      for (let b = 0; b < B; b++) {
        if (ends[b] !== null) continue;
        const row = logits.subarray(b * V, (b + 1) * V);
        for (const id of settings.bannedTokenIds) if (id >= 0 && id < V) row[id] = -Infinity;
        if (settings.vocabLimit < V) row.fill(-Infinity, settings.vocabLimit);
        const rng = rngs[b];
        const sampling = rows[b]!.sampling;
        const token = rng && sampling ? sampleToken(row, sampling, rng) : argmax(row);
        tokens[b] = token;
        produced[b]!++;
        if (!rows[b]!.ignoreEos && settings.eosTokenIds.includes(token)) ends[b] = "eos";
        else if (!rows[b]!.onToken(token)) ends[b] = "stopped";
        else if (produced[b]! >= rows[b]!.maxNewTokens) ends[b] = "length";
      }
      if (ends.every((e) => e !== null)) break;
      stepIds = tokens;
      await nextTick();
    }
  } finally {
    session.free();
  }
  return ends.map((e) => e ?? "length");
}

