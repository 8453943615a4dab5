import type { Graph } from "../autograd/graph.ts";
import { LoraBf16Copies } from "../lora/bf16-copies.ts";
import { ForwardContext } from "../models/mistral3/context.ts";
import { newLayerKVs, type LayerKV } from "../models/mistral3/decoder.ts";
import { prefillPositions } from "../models/mistral3/generate.ts";
import { forwardMistral3, type ImageBatch, type Mistral3Model } from "../models/mistral3/model.ts";
import type { Tensor } from "../tensor/tensor.ts";

/**
 * A batch of left-padded prompts run once into a KV cache, then continued by short token chunks
 * that all start right after the prompt. Scoring ten class answers, or walking a trie of them,
 * then costs one prompt pass (vision tower included) plus a few tokens per answer, instead of a
 * full pass per class.
 *
 * Dimension letters: B batch, T prompt length, S = T + extra cache slots, L chunk length, V vocabulary.
 */
export class PromptCache {
  private readonly layers: LayerKV[];
  private readonly keyValid: Tensor; // i32 (B, S)
  /** Position id of the first token after each row's prompt. */
  private readonly nextPosition: Int32Array; // (B)
  private released = false;
  /** The adapter's bf16 copies for this cache's passes (the weights are frozen while it lives). */
  private readonly bf16Copies: LoraBf16Copies | null;

  /** Logits of each row's last prompt token: what the first answer token is scored against. */
  readonly lastLogits: Float32Array; // (B·V)
  readonly vocab: number;

  constructor(
    private readonly model: Mistral3Model,
    private readonly newGraph: () => Graph,
    readonly batch: number,
    readonly promptLength: number,
    inputIds: Int32Array, // (B·T), left-padded
    attentionMask: Int32Array, // (B·T)
    images: ImageBatch | undefined,
    /** Most tokens any continuation will hold. */
    extraSlots: number,
  ) {
    const B = batch;
    const T = promptLength;
    const S = T + extraSlots;
    const backend = model.text.embedTokens.backend;
    this.layers = newLayerKVs(model.config.text_config, model.text, B * S);
    const valid = new Int32Array(B * S).fill(1);
    for (let b = 0; b < B; b++) valid.set(attentionMask.subarray(b * T, b * T + T), b * S);
    this.keyValid = backend.upload(valid, [B, S], "i32");
    const positions = prefillPositions(attentionMask, B, T);
    this.nextPosition = Int32Array.from({ length: B }, (_, b) => positions[b * T + T - 1]! + 1);
    this.bf16Copies = LoraBf16Copies.forModel(backend, model.linears.values());
    try {
      this.lastLogits = this.run(inputIds, T, positions, 0, images, true);
    } catch (error) {
      this.release();
      throw error;
    }
    this.vocab = this.lastLogits.length / B;
  }

  private get slots(): number {
    return this.keyValid.shape[1]!;
  }

  /**
   * Feeds `tokens` (B·L) at cache slots [T + start, T + start + L) and returns the logits of all
   * L positions (B·L·V). Slots after the chunk may hold an earlier continuation: causal masking
   * never lets a query see them, so continuations can reuse the same slots one after another.
   */
  continue(tokens: Int32Array, length: number, start: number): Float32Array {
    if (start + length > this.slots - this.promptLength) throw new Error(`PromptCache: ${start + length} continuation tokens exceed the ${this.slots - this.promptLength} reserved slots`);
    const positions = new Int32Array(this.batch * length);
    for (let b = 0; b < this.batch; b++) for (let s = 0; s < length; s++) positions[b * length + s] = this.nextPosition[b]! + start + s;
    return this.run(tokens, length, positions, this.promptLength + start, undefined, false);
  }

  private run(ids: Int32Array, length: number, positions: Int32Array, offset: number, images: ImageBatch | undefined, lastOnly: boolean): Float32Array {
    if (this.released) throw new Error("PromptCache: used after release()");
    const graph = this.newGraph();
    const ctx = new ForwardContext(graph, { bf16Copies: this.bf16Copies });
    try {
      const out = forwardMistral3(
        ctx,
        this.model,
        { batch: this.batch, seqLen: length, inputIds: ids, positionIds: positions, images },
        { lastPositionOnly: lastOnly, cache: { layers: this.layers, slots: this.slots, offset, keyValid: this.keyValid } },
      );
      return graph.backend.read(out.logits.value) as Float32Array;
    } finally {
      graph.dispose();
      ctx.release();
    }
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.bf16Copies?.free();
    for (const l of this.layers) {
      l.k.free();
      l.v.free();
    }
    this.keyValid.free();
  }
}
