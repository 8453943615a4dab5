import type { Graph } from "../autograd/graph.ts";
import { imageGrids } from "../models/mistral3/chat-inputs.ts";
import { generateMistral3 } from "../models/mistral3/generate.ts";
import type { ImageBatch, Mistral3Model } from "../models/mistral3/model.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { parseAnswer, type MatchKind } from "./answer.ts";
import { leftPad, type ClassPrompts } from "./class-prompts.ts";
import { PromptCache } from "./prompt-cache.ts";
import { bestChild, buildTokenTrie, type TrieNode } from "./token-trie.ts";
import { SplintError } from "../util/errors.ts";

/**
 * One image → one class, three ways:
 * - generate: greedy free text (as the tutorial), parsed strictly; may be invalid;
 * - constrained: greedy decoding where each step may only continue some class answer (a walk down
 *   the token trie), so the result is always a class;
 * - score: every class answer (EOS included) scored by its log-likelihood after the prompt; the
 *   best wins, and the scores give a probability per class.
 */
export type EvalMode = "generate" | "constrained" | "score";
export const EVAL_MODES: readonly EvalMode[] = ["generate", "constrained", "score"];

export interface Classification {
  /** Class index, or -1 (generate mode only) when the answer named no class. */
  readonly predicted: number;
  readonly answer: string;
  readonly match: MatchKind;
  /** Score mode: log-likelihood of each class answer, in class order. */
  readonly scores?: readonly number[];
}

export interface ClassifierOptions {
  readonly model: Mistral3Model;
  readonly newGraph: () => Graph;
  readonly tokenizer: Tokenizer;
  readonly prompts: ClassPrompts;
  readonly mode: EvalMode;
  /** Generate mode's token budget. */
  readonly maxNewTokens: number;
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number;
}

/**
 * Refuses scores that are NaN or infinite (NaN weights in the model or adapter, or an image that
 * decodes to NaN): a softmax of them prints "NaN%" and an argmax of them picks class 0, both
 * silently wrong. `names` name the batch's images, in order.
 */
export function assertFiniteScores(results: readonly Classification[], names: readonly string[]): void {
  results.forEach((r, i) => {
    const bad = r.scores?.find((v) => !Number.isFinite(v));
    if (bad === undefined) return;
    throw new SplintError(
      `the model's class scores for ${names[i] ?? `image ${i}`} are not finite (${bad}); the model or adapter weights (or the image) hold NaN or Infinity`,
      "check the adapter's training log for a non-finite loss, and train again with --on-nan stop",
    );
  });
}

export function classifyBatch(opts: ClassifierOptions, images: ImageBatch): Classification[] {
  const grids = imageGrids(opts.model.config, images);
  const { ids, mask, length } = leftPad(
    grids.map((g) => opts.prompts.promptIds(g)),
    opts.padTokenId,
  );
  const batch = grids.length;
  if (opts.mode === "generate") return generateAnswers(opts, images, ids, mask, length, batch);
  const cache = new PromptCache(opts.model, opts.newGraph, batch, length, ids, mask, images, Math.max(1, opts.prompts.longestAnswer - 1));
  try {
    return opts.mode === "score" ? scoreAnswers(opts.prompts, cache) : constrainedAnswers(opts.prompts, cache);
  } finally {
    cache.release();
  }
}

function generateAnswers(opts: ClassifierOptions, images: ImageBatch, ids: Int32Array, mask: Int32Array, T: number, B: number): Classification[] {
  const result = generateMistral3(
    opts.model,
    opts.newGraph,
    { batch: B, seqLen: T, inputIds: ids, attentionMask: mask, images },
    { maxNewTokens: opts.maxNewTokens, eosTokenIds: opts.eosTokenIds, padTokenId: opts.padTokenId },
  );
  const width = T + result.newTokens;
  return Array.from({ length: B }, (_, b) => {
    const generated = Array.from(result.sequences.subarray(b * width + T, (b + 1) * width));
    const end = generated.findIndex((t) => opts.eosTokenIds.includes(t));
    const answer = opts.tokenizer.decode(end < 0 ? generated : generated.slice(0, end));
    const parsed = parseAnswer(answer, opts.prompts.classNames);
    return { predicted: parsed.label, answer, match: parsed.match };
  });
}

function scoreAnswers(prompts: ClassPrompts, cache: PromptCache): Classification[] {
  const B = cache.batch;
  const V = cache.vocab;
  const scores = Array.from({ length: B }, () => new Array<number>(prompts.answers.length).fill(0));
  prompts.answers.forEach((answer, c) => {
    for (let b = 0; b < B; b++) scores[b]![c] = tokenLogProb(cache.lastLogits, b * V, V, answer[0]!);
    const rest = answer.length - 1;
    if (rest === 0) return;
    // Feed every token but the last; position j's logits score token j + 1.
    const fed = new Int32Array(B * rest);
    for (let b = 0; b < B; b++) fed.set(answer.slice(0, rest), b * rest);
    const logits = cache.continue(fed, rest, 0);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < rest; j++) scores[b]![c]! += tokenLogProb(logits, (b * rest + j) * V, V, answer[j + 1]!);
    }
  });
  return scores.map((row) => {
    const best = argmaxOf(row);
    return { predicted: best, answer: prompts.classNames[best]!, match: "exact", scores: row };
  });
}

function constrainedAnswers(prompts: ClassPrompts, cache: PromptCache): Classification[] {
  const B = cache.batch;
  const V = cache.vocab;
  const trie = buildTokenTrie(prompts.answers);
  const nodes: TrieNode[] = new Array<TrieNode>(B).fill(trie);
  const tokens = new Int32Array(B);
  const advance = (logits: Float32Array) => {
    for (let b = 0; b < B; b++) {
      if (nodes[b]!.classIndex >= 0) continue;
      const token = bestChild(nodes[b]!, logits, b * V);
      tokens[b] = token;
      nodes[b] = nodes[b]!.children.get(token)!;
    }
  };
  advance(cache.lastLogits);
  // Rows already at a leaf keep feeding their last token; their outputs are ignored.
  for (let step = 0; nodes.some((n) => n.classIndex < 0); step++) advance(cache.continue(tokens, 1, step));
  return nodes.map((n) => ({ predicted: n.classIndex, answer: prompts.classNames[n.classIndex]!, match: "exact" }));
}

/** log softmax(logits[offset .. offset + V))[token], in float64. */
export function tokenLogProb(logits: Float32Array, offset: number, V: number, token: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[offset + i]! - max);
  return logits[offset + token]! - max - Math.log(sum);
}

function argmaxOf(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
