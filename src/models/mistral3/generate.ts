import type { Graph } from "../../autograd/graph.ts";
import { LoraBf16Copies } from "../../lora/bf16-copies.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { Rng } from "../../util/rng.ts";
import { InputError } from "../../util/errors.ts";
import { ForwardContext } from "./context.ts";
import { newLayerKVs, type LayerKV } from "./decoder.ts";
import { forwardMistral3, type ImageBatch, type Mistral3Model } from "./model.ts";

/**
 * Text generation with a preallocated KV cache, as transformers' generate does it: the prompt is one
 * prefill pass (position ids = cumsum(attention_mask) - 1, so left-padded rows start at 0), then one
 * token per step; rows that produced EOS continue with <pad> until all rows are done.
 *
 * Dimension letters: B batch, T prompt length, S = T + max_new_tokens cache slots, V vocabulary.
 */

export interface SamplingOptions {
  /** Same order and semantics as transformers' logits warpers: temperature, top_k, top_p, min_p. */
  temperature: number;
  /** 0 = off. transformers' default is 50. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** 0 = off. */
  minP: number;
  seed: number;
}

export interface GenerateOptions {
  maxNewTokens: number;
  eosTokenIds: readonly number[];
  padTokenId: number;
  /** Absent = greedy (argmax). */
  sampling?: SamplingOptions;
  /** Called after every step with the new token of each row (pad for rows already done). */
  onStep?: (step: number, tokens: Int32Array, done: readonly boolean[]) => void;
}

export interface GenerateInputs {
  batch: number;
  seqLen: number;
  inputIds: Int32Array; // (B·T)
  attentionMask?: Int32Array; // (B·T), left padding
  images?: ImageBatch;
}

export interface GenerateResult {
  /** Prompt then new tokens, (B, T + n), as transformers returns `sequences`. */
  sequences: Int32Array;
  newTokens: number;
  /** Logit gap between the best and second-best token, (n, B): how close greedy was to a tie. */
  top2Margin: Float32Array;
}

/**
 * Prefill position ids as transformers' generate derives them: cumsum(mask) - 1, padding at 0 (as
 * the fixtures record for transformers 5; pads are never attended to, so their value only has to
 * match for parity of the pads' own, discarded, outputs).
 */
export function prefillPositions(mask: Int32Array, batch: number, seqLen: number): Int32Array {
  const out = new Int32Array(batch * seqLen);
  for (let b = 0; b < batch; b++) {
    let seen = 0;
    for (let t = 0; t < seqLen; t++) {
      const i = b * seqLen + t;
      seen += mask[i]!;
      out[i] = mask[i] === 0 ? 0 : seen - 1;
    }
  }
  return out;
}

/**
 * The KV cache of one batched decode and the forward step that runs on it: B left-padded prompts of
 * T tokens (`mask` marks the real ones) with room for S − T new tokens each. The first `next` runs
 * the prompts (and their images), every later one a single new token per row at the next
 * position. generateMistral3 and the server's decoder both decode through it.
 */
export class DecodeSession {
  private readonly layers: LayerKV[];
  private readonly keyValid: Tensor;
  private readonly prompt: Int32Array;
  private readonly nextPosition: Int32Array;
  /** The adapter's bf16 copies for every step (the weights are frozen while a session lives). */
  private readonly bf16Copies: LoraBf16Copies | null;
  private steps = 0;

  constructor(
    private readonly model: Mistral3Model,
    private readonly newGraph: () => Graph,
    mask: Int32Array,
    private readonly batch: number,
    private readonly promptLength: number,
    private readonly slots: number,
  ) {
    const [B, T, S] = [batch, promptLength, slots];
    const backend = model.text.embedTokens.backend;
    this.layers = newLayerKVs(model.config.text_config, model.text, B * S);
    const valid = new Int32Array(B * S).fill(1);
    for (let b = 0; b < B; b++) valid.set(mask.subarray(b * T, b * T + T), b * S);
    this.keyValid = backend.upload(valid, [B, S], "i32");
    this.prompt = prefillPositions(mask, B, T);
    this.nextPosition = Int32Array.from({ length: B }, (_, b) => this.prompt[b * T + T - 1]! + 1);
    this.bf16Copies = LoraBf16Copies.forModel(backend, model.linears.values());
  }

  /** Logits [B·V] of each row's last position: ids are the prompts [B·T] first, then one token per row [B]. */
  next(ids: Int32Array, images?: ImageBatch): Float32Array {
    const [B, T] = [this.batch, this.promptLength];
    const first = this.steps === 0;
    const positions = first ? this.prompt : Int32Array.from(this.nextPosition);
    if (!first) for (let b = 0; b < B; b++) this.nextPosition[b]!++;
    const graph = this.newGraph();
    const ctx = new ForwardContext(graph, { bf16Copies: this.bf16Copies });
    try {
      const out = forwardMistral3(
        ctx,
        this.model,
        { batch: B, seqLen: first ? T : 1, inputIds: ids, positionIds: positions, images: first ? images : undefined },
        { lastPositionOnly: true, cache: { layers: this.layers, slots: this.slots, offset: first ? 0 : T + this.steps - 1, keyValid: this.keyValid } },
      );
      this.steps++;
      return graph.backend.read(out.logits.value) as Float32Array;
    } finally {
      graph.dispose();
      ctx.release();
    }
  }

  free(): void {
    for (const l of this.layers) {
      l.k.free();
      l.v.free();
    }
    this.keyValid.free();
    this.bf16Copies?.free();
  }
}

export function generateMistral3(
  model: Mistral3Model,
  newGraph: () => Graph,
  inputs: GenerateInputs,
  opts: GenerateOptions,
): GenerateResult {
  const { batch: B, seqLen: T } = inputs;
  const n = opts.maxNewTokens;
  if (!Number.isInteger(n) || n < 1) throw new InputError("--max-new-tokens", `must be a positive integer, got ${n}`);
  const mask = inputs.attentionMask ?? new Int32Array(B * T).fill(1);
  for (let b = 0; b < B; b++) {
    if (mask[b * T + T - 1] !== 1) {
      throw new InputError("attention_mask", `row ${b} does not end with a real token: generation needs left padding`);
    }
  }
  const S = T + n;
  const sequences = new Int32Array(B * (T + n)).fill(opts.padTokenId);
  for (let b = 0; b < B; b++) sequences.set(inputs.inputIds.subarray(b * T, b * T + T), b * (T + n));
  const margins = new Float32Array(n * B);
  const done = new Array<boolean>(B).fill(false);
  const rng = opts.sampling ? new Rng(opts.sampling.seed) : null;
  const session = new DecodeSession(model, newGraph, mask, B, T, S);

  let produced = 0;
  try {
    let step = 0;
    let stepIds = inputs.inputIds;
    while (step < n) {
      const logits = session.next(stepIds, inputs.images);
      const V = logits.length / B;
      const tokens = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        const row = logits.subarray(b * V, (b + 1) * V);
        margins[step * B + b] = top2Margin(row);
        tokens[b] = done[b] ? opts.padTokenId : rng && opts.sampling ? sampleToken(row, opts.sampling, rng) : argmax(row);
        sequences[b * (T + n) + T + step] = tokens[b]!;
      }
      const wasDone = [...done];
      for (let b = 0; b < B; b++) if (!done[b] && opts.eosTokenIds.includes(tokens[b]!)) done[b] = true;
      step++;
      produced = step;
      opts.onStep?.(step, tokens, wasDone);
      if (done.every(Boolean)) break;
      stepIds = tokens;
    }
  } finally {
    session.free();
  }
  const width2 = T + produced;
  const trimmed = new Int32Array(B * width2);
  for (let b = 0; b < B; b++) trimmed.set(sequences.subarray(b * (T + n), b * (T + n) + width2), b * width2);
  return { sequences: trimmed, newTokens: produced, top2Margin: margins.slice(0, produced * B) };
}

/** Index of the largest logit (the first one on ties, as torch.argmax). */
export function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

function top2Margin(row: Float32Array): number {
  let first = -Infinity;
  let second = -Infinity;
  for (const x of row) {
    if (x > first) {
      second = first;
      first = x;
    } else if (x > second) second = x;
  }
  return first - second;
}

/**
 * The probability of each token after transformers' warpers, in its order: temperature, top-k,
 * top-p (keep the smallest top set with mass ≥ p), min-p (drop tokens below min_p × the top
 * probability); each keeps at least one token.
 */
export function samplingDistribution(row: Float32Array, s: SamplingOptions): Float64Array {
  const { ids, probs } = samplingCandidates(row, s);
  const dense = new Float64Array(row.length);
  ids.forEach((id, j) => (dense[id] = probs[j]!));
  return dense;
}

/**
 * The tokens that survive the warpers and their probabilities. After top-k (transformers' default
 * 50) only k candidates remain, so top-p and min-p never sort the whole vocabulary.
 */
export function samplingCandidates(row: Float32Array, s: SamplingOptions): { ids: Int32Array; probs: Float64Array } {
  const V = row.length;
  let ids: Int32Array;
  if (s.topK > 0 && s.topK < V) {
    // Dividing by a positive temperature keeps the order, so the k-th largest raw logit is the cut.
    const kth = kthLargest(row, s.topK);
    const kept: number[] = [];
    for (let i = 0; i < V; i++) if (row[i]! >= kth) kept.push(i);
    ids = Int32Array.from(kept);
  } else {
    ids = Int32Array.from({ length: V }, (_, i) => i);
  }
  const scores = Float64Array.from(ids, (i) => row[i]! / s.temperature);
  if (s.topP < 1) {
    const order = Array.from({ length: ids.length }, (_, j) => j).sort((a, b) => scores[a]! - scores[b]!);
    const probs = softmax(scores);
    let cumulative = 0;
    for (let j = 0; j < order.length - 1; j++) {
      cumulative += probs[order[j]!]!;
      if (cumulative <= 1 - s.topP) scores[order[j]!] = -Infinity;
    }
  }
  if (s.minP > 0) {
    const probs = softmax(scores);
    const keep = argmaxF64(probs);
    const cut = s.minP * probs[keep]!;
    for (let j = 0; j < probs.length; j++) if (probs[j]! < cut && j !== keep) scores[j] = -Infinity;
  }
  const probs = softmax(scores);
  const alive: number[] = [];
  probs.forEach((p, j) => {
    if (p > 0) alive.push(j);
  });
  return { ids: Int32Array.from(alive, (j) => ids[j]!), probs: Float64Array.from(alive, (j) => probs[j]!) };
}

/** The k-th largest value, with a size-k min-heap (O(V log k); k is small, V is the vocabulary). */
function kthLargest(values: Float32Array, k: number): number {
  const heap = new Float64Array(k);
  let size = 0;
  const siftDown = (at: number) => {
    for (;;) {
      const l = 2 * at + 1;
      const r = l + 1;
      let smallest = at;
      if (l < size && heap[l]! < heap[smallest]!) smallest = l;
      if (r < size && heap[r]! < heap[smallest]!) smallest = r;
      if (smallest === at) return;
      [heap[at], heap[smallest]] = [heap[smallest]!, heap[at]!];
      at = smallest;
    }
  };
  for (const x of values) {
    if (size < k) {
      let at = size++;
      heap[at] = x;
      while (at > 0 && heap[(at - 1) >> 1]! > heap[at]!) {
        const parent = (at - 1) >> 1;
        [heap[at], heap[parent]] = [heap[parent]!, heap[at]!];
        at = parent;
      }
    } else if (x > heap[0]!) {
      heap[0] = x;
      siftDown(0);
    }
  }
  return heap[0]!;
}

/** One token drawn from the candidates SamplingOptions keep (temperature, top-k, top-p). */
export function sampleToken(row: Float32Array, s: SamplingOptions, rng: Rng): number {
  const { ids, probs } = samplingCandidates(row, s);
  const u = rng.next();
  let cumulative = 0;
  for (let j = 0; j < ids.length; j++) {
    cumulative += probs[j]!;
    if (u < cumulative) return ids[j]!;
  }
  return ids[ids.length - 1]!;
}

function softmax(scores: Float64Array): Float64Array {
  let max = -Infinity;
  for (const x of scores) max = Math.max(max, x);
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    const e = scores[i] === -Infinity ? 0 : Math.exp(scores[i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

function argmaxF64(v: Float64Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}
