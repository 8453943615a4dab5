import { ClassPrompts } from "../eval/class-prompts.ts";
import { classifyBatch } from "../eval/classify.ts";
import { probabilities } from "../eval/calibration.ts";
import { imageGrids, renderChat } from "../models/mistral3/chat-inputs.ts";
import type { SamplingOptions } from "../models/mistral3/generate.ts";
import type { ImageBatch } from "../models/mistral3/model.ts";
import { SYNTH_CLASS_NAMES } from "../data/synth.ts";
import { resolvePromptSettings } from "../lora/training-prompt.ts";
import { resolveChatTemplate, type ChatTemplate } from "../text/chat-template.ts";
import type { ChatMessage, ContentBlock } from "../text/prompt.ts";
import { createStreamDecoder } from "../text/tokenizer.ts";
import { boundImageEdge } from "../train/collator.ts";
import { SplintError } from "../util/errors.ts";
import { loadImageProcessorConfig, preprocess, type ImageProcessorConfig } from "../vision/image-processor.ts";
import { decodeBatch, type DecodeRow } from "./decode.ts";
import { concatImageBatches } from "./image-batch.ts";
import type { ModelPool, ServedModel } from "./models.ts";
import { ApiError, type ChatRequestMessage, type FinishReason } from "./openai-schema.ts";
import { StopFilter } from "./stop.ts";

/**
 * The serving engine: requests wait in one bounded queue and run in batches on the model.
 * - A batch takes the oldest request and up to maxBatch − 1 more of the same kind (chat or
 *   classify) for the same model (base or adapter; classify also the same class list), so an
 *   adapter swap happens between batches, never inside one.
 * - The queue holds at most maxQueue requests; one more is refused at once (429) rather than left
 *   to wait past any useful deadline.
 * - Each request carries an AbortSignal (client gone, or its timeout): a queued request is dropped,
 *   a decoding row stops at the next step. A classify batch is one short forward pass and runs to
 *   its end; an aborted request's result is discarded.
 * - Work is prepared (images decoded and resized, the prompt rendered) before queueing, so bad
 *   input fails fast with a 400 and the model thread only runs forward passes.
 */
export interface EngineOptions {
  readonly maxBatch: number;
  readonly maxQueue: number;
  /** How long an idle engine waits for more requests to fill a batch (ms). */
  readonly batchWaitMs: number;
  /** Upper bound (and the default) for max_tokens. */
  readonly maxTokensLimit: number;
  /** The longest prompt accepted, in tokens (images included). */
  readonly maxPromptTokens: number;
  /** Chat template spec for chat: model, short or a file. */
  readonly chatTemplate: string;
  /**
   * Classification asks each model the way `splint predict` does (src/lora/training-prompt.ts):
   * these when given (the CLI's --template, --classes, --dataset's label names, --max-image-edge),
   * else what the adapter's training_prompt.json records, else the tutorial's defaults.
   */
  readonly classifyTemplate?: string;
  readonly classNames?: readonly string[];
  readonly labelNames?: readonly string[];
  /** undefined: the adapter's (for classification; chat images are not bounded). */
  readonly maxImageEdge?: number | null;
}

export interface ChatWork {
  readonly model: ServedModel;
  readonly messages: readonly ChatRequestMessage[];
  /** The encoded images, in the order their parts appear. */
  readonly images: readonly Uint8Array[];
  readonly maxTokens: number | undefined;
  readonly temperature: number | undefined;
  readonly topP: number | undefined;
  readonly topK: number | undefined;
  readonly seed: number | undefined;
  readonly stop: readonly string[];
  readonly ignoreEos?: boolean;
  readonly signal: AbortSignal;
  /** Streamed text as it becomes final (stop strings already cut). */
  readonly onText?: (delta: string) => void;
  /** Called when the first token is generated (special tokens count: they may show no text). */
  readonly onFirstToken?: () => void;
  /** Called once the request passed validation and waits in the queue (a stream may start then). */
  readonly onQueued?: () => void;
}

export interface ChatOutcome {
  readonly text: string;
  readonly finishReason: FinishReason;
  readonly promptTokens: number;
  readonly completionTokens: number;
}

export interface ClassifyWork {
  readonly model: ServedModel;
  readonly image: Uint8Array;
  readonly classes: readonly string[] | undefined;
  readonly signal: AbortSignal;
}

export interface ClassifyOutcome {
  readonly className: string;
  readonly probabilities: Record<string, number>;
  readonly temperature: number;
}

export interface EngineStats {
  readonly queued: number;
  readonly running: number;
  readonly completed: number;
  readonly failed: number;
  readonly batches: number;
  readonly largestBatch: number;
}

interface ChatJob {
  readonly kind: "chat";
  readonly key: string;
  readonly work: ChatWork;
  readonly promptIds: readonly number[];
  readonly images: ImageBatch | undefined;
  readonly maxTokens: number;
  readonly sampling: SamplingOptions | undefined;
  resolve(outcome: ChatOutcome): void;
  reject(error: unknown): void;
}

interface ClassifyJob {
  readonly kind: "classify";
  readonly key: string;
  readonly work: ClassifyWork;
  readonly prompts: ClassPrompts;
  readonly names: readonly string[];
  readonly images: ImageBatch;
  resolve(outcome: ClassifyOutcome): void;
  reject(error: unknown): void;
}

type Job = ChatJob | ClassifyJob;

interface Classifier {
  readonly key: string;
  readonly prompts: ClassPrompts;
  readonly names: readonly string[];
  readonly processor: ImageProcessorConfig;
}

/** Why a request stopped waiting: the signal's reason when it is an Error, else a generic one. */
function abortReason(signal: AbortSignal): unknown {
  return signal.reason instanceof Error ? signal.reason : new Error("aborted");
}

export class Engine {
  private readonly queue: Job[] = [];
  /** Requests being prepared: they count towards the queue bound, so a burst cannot overshoot it. */
  private preparing = 0;
  private running = 0;
  private pumping = false;
  private closed = false;
  private readonly chatTemplate: ChatTemplate;
  private readonly chatProcessor: ImageProcessorConfig;
  private readonly classifiers = new Map<string, Promise<Classifier>>();
  private counts = { completed: 0, failed: 0, batches: 0, largestBatch: 0 };

  constructor(
    readonly pool: ModelPool,
    readonly options: EngineOptions,
  ) {
    this.chatTemplate = resolveChatTemplate(options.chatTemplate, pool.modelDir);
    this.chatProcessor = boundImageEdge(loadImageProcessorConfig(pool.modelDir), options.maxImageEdge ?? null);
  }

  /** Builds every model's classification prompt now, so one the template cannot score fails at start-up. */
  async warm(): Promise<void> {
    for (const model of this.pool.served) await this.classifier(model, undefined);
  }

  /** The classes a model answers with by default (its adapter's, or the server's). */
  async classNames(model: ServedModel): Promise<readonly string[]> {
    return (await this.classifier(model, undefined)).names;
  }

  get stats(): EngineStats {
    return { queued: this.queue.length + this.preparing, running: this.running, ...this.counts };
  }

  /** Stops taking requests and rejects those still queued (server shutdown). */
  close(): void {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new ApiError(503, "the server is shutting down", "server_error"));
  }

  async chat(work: ChatWork): Promise<ChatOutcome> {
    this.admit();
    this.preparing++;
    let job: Omit<ChatJob, "resolve" | "reject">;
    try {
      job = await this.prepareChat(work);
    } finally {
      this.preparing--;
    }
    return this.enqueue<ChatOutcome>(job, work.signal);
  }

  async classify(work: ClassifyWork): Promise<ClassifyOutcome> {
    this.admit();
    this.preparing++;
    let job: Omit<ClassifyJob, "resolve" | "reject">;
    try {
      const classifier = await this.classifier(work.model, work.classes);
      const images = await this.decodeImages([work.image], "image", classifier.processor);
      job = { kind: "classify", key: `classify\u0000${classifier.key}`, work, prompts: classifier.prompts, names: classifier.names, images: images! };
    } finally {
      this.preparing--;
    }
    return this.enqueue<ClassifyOutcome>(job, work.signal);
  }

  private admit(): void {
    if (this.closed) throw new ApiError(503, "the server is shutting down", "server_error");
    if (this.queue.length + this.preparing >= this.options.maxQueue) {
      throw new ApiError(429, `the server is busy: ${this.options.maxQueue} requests are already waiting; retry later`, "rate_limit_error", null, "queue_full");
    }
  }

  private enqueue<T>(prepared: Omit<Job, "resolve" | "reject">, signal: AbortSignal): Promise<T> {
    signal.throwIfAborted();
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        const i = this.queue.indexOf(job);
        if (i < 0) return; // running: the batch notices the signal itself
        this.queue.splice(i, 1);
        reject(abortReason(signal));
      };
      const job = {
        ...prepared,
        resolve(outcome: T) {
          signal.removeEventListener("abort", onAbort);
          resolve(outcome);
        },
        reject(error: unknown) {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      } as Job;
      signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push(job);
      if (job.kind === "chat") job.work.onQueued?.();
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      let idle = true;
      while (this.queue.length > 0) {
        // Woken from idle, a short wait lets requests that arrive together share the first batch;
        // later batches take whatever queued up while the previous one ran.
        if (idle && this.options.batchWaitMs > 0 && this.queue.length < this.options.maxBatch) await new Promise((r) => setTimeout(r, this.options.batchWaitMs));
        idle = false;
        const batch = this.takeBatch();
        if (batch.length === 0) continue;
        this.running = batch.length;
        this.counts.batches++;
        this.counts.largestBatch = Math.max(this.counts.largestBatch, batch.length);
        try {
          this.pool.activate(batch[0]!.work.model.id);
          if (batch[0]!.kind === "chat") await this.runChat(batch as ChatJob[]);
          else this.runClassify(batch as ClassifyJob[]);
        } catch (error) {
          // A failed batch fails its requests, not the server.
          const failure = error instanceof ApiError ? error : new ApiError(500, `the model failed on this batch: ${(error as Error).message}`, "server_error");
          for (const job of batch) job.reject(failure);
          this.counts.failed += batch.length;
        } finally {
          this.running = 0;
        }
        // Lets responses flush and new requests arrive between batches.
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.pumping = false;
    }
  }

  private takeBatch(): Job[] {
    const batch: Job[] = [];
    const key = this.queue[0]?.key;
    for (let i = 0; i < this.queue.length && batch.length < this.options.maxBatch; ) {
      const job = this.queue[i]!;
      if (job.key === key) {
        this.queue.splice(i, 1);
        if (job.work.signal.aborted) job.reject(abortReason(job.work.signal));
        else batch.push(job);
      } else i++;
    }
    return batch;
  }

  private async prepareChat(work: ChatWork): Promise<Omit<ChatJob, "resolve" | "reject">> {
    const limit = this.options.maxTokensLimit;
    if (work.maxTokens !== undefined && work.maxTokens > limit) {
      throw new ApiError(400, `'max_tokens' is ${work.maxTokens}, this server allows at most ${limit}`, "invalid_request_error", "max_tokens");
    }
    const images = await this.decodeImages(work.images, "messages", this.chatProcessor);
    const messages: ChatMessage[] = work.messages.map((m) => {
      const onlyText = m.parts.every((p) => p.type === "text");
      if (onlyText) return { role: m.role, content: m.parts.map((p) => (p.type === "text" ? p.text : "")).join("") };
      return { role: m.role, content: m.parts.map((p): ContentBlock => (p.type === "text" ? { type: "text", text: p.text } : { type: "image" })) };
    });
    let promptIds: number[];
    try {
      promptIds = renderChat(this.pool.tokenizer, this.chatTemplate, messages, imageGrids(this.pool.model.config, images), true).tokens.ids;
    } catch (error) {
      if (error instanceof SplintError) throw new ApiError(400, `the chat template cannot render these messages: ${error.message}`, "invalid_request_error", "messages");
      throw error;
    }
    if (promptIds.length > this.options.maxPromptTokens) {
      throw new ApiError(400, `the prompt is ${promptIds.length} tokens (images included), this server allows at most ${this.options.maxPromptTokens}`, "invalid_request_error", "messages", "context_length_exceeded");
    }
    const gen = this.pool.generation;
    // OpenAI's temperature 0 means greedy; left out, the model's generation_config.json decides.
    const doSample = work.temperature === undefined ? gen.doSample : work.temperature > 0;
    const sampling: SamplingOptions | undefined = doSample
      ? {
          temperature: work.temperature ?? gen.temperature,
          topK: work.topK ?? (work.temperature === undefined ? gen.topK : 0),
          topP: work.topP ?? (work.temperature === undefined ? gen.topP : 1),
          minP: work.temperature === undefined ? gen.minP : 0,
          seed: work.seed ?? Math.floor(Math.random() * 0x100000000),
        }
      : undefined;
    const maxTokens = work.maxTokens ?? Math.min(limit, gen.maxNewTokens ?? limit);
    return { kind: "chat", key: `chat\u0000${work.model.id}`, work, promptIds, images, maxTokens, sampling };
  }

  private async decodeImages(bytes: readonly Uint8Array[], param: string, processor: ImageProcessorConfig): Promise<ImageBatch | undefined> {
    if (bytes.length === 0) return undefined;
    try {
      const batch = await preprocess(bytes, processor, bytes.map((_, i) => `image ${i + 1}`));
      return { pixelValues: batch.pixelValues, shape: batch.shape, imageSizes: Int32Array.from(batch.imageSizes.flat()) };
    } catch (error) {
      if (error instanceof SplintError) throw new ApiError(400, `cannot read the image: ${error.message}`, "invalid_request_error", param, "invalid_image");
      throw error;
    }
  }

  /** A model's classification prompt for a class list (undefined: its default), built once. */
  private classifier(model: ServedModel, classes: readonly string[] | undefined): Promise<Classifier> {
    const key = `${model.id}\u0000${classes?.join("\u0000") ?? ""}`;
    let found = this.classifiers.get(key);
    if (!found) {
      found = this.buildClassifier(model, classes, key);
      // A failed build is not kept: the error is the request's, the next one tries again.
      found.catch(() => this.classifiers.delete(key));
      // A handful of class lists at most in practice; the bound keeps a client from filling memory.
      if (this.classifiers.size >= 64) this.classifiers.delete(this.classifiers.keys().next().value!);
      this.classifiers.set(key, found);
    }
    return found;
  }

  private async buildClassifier(model: ServedModel, classes: readonly string[] | undefined, key: string): Promise<Classifier> {
    try {
      const settings = await resolvePromptSettings({
        modelDir: this.pool.modelDir,
        adapterDir: model.promptFrom,
        template: this.options.classifyTemplate,
        classes: classes ?? this.options.classNames,
        labelNames: this.options.labelNames,
        fallbackClasses: SYNTH_CLASS_NAMES,
        maxImageEdge: this.options.maxImageEdge,
      });
      const prompts = new ClassPrompts(this.pool.tokenizer, settings.template, settings.classNames, settings.prompt);
      return { key, prompts, names: settings.classNames, processor: boundImageEdge(loadImageProcessorConfig(this.pool.modelDir), settings.maxImageEdge) };
    } catch (error) {
      if (error instanceof SplintError && classes !== undefined) throw new ApiError(400, error.message, "invalid_request_error", "classes");
      throw error;
    }
  }

  private async runChat(jobs: ChatJob[]): Promise<void> {
    const tokenizer = this.pool.tokenizer;
    const state = jobs.map((job) => ({ decoder: createStreamDecoder(tokenizer, { skipSpecialTokens: true }), stop: new StopFilter(job.work.stop), text: "", tokens: 0 }));
    const emit = (b: number, piece: string) => {
      if (piece === "") return;
      state[b]!.text += piece;
      jobs[b]!.work.onText?.(piece);
    };
    const rows: DecodeRow[] = jobs.map((job, b) => ({
      promptIds: job.promptIds,
      maxNewTokens: job.maxTokens,
      sampling: job.sampling,
      ignoreEos: job.work.ignoreEos,
      cancelled: () => job.work.signal.aborted,
      onToken(token) {
        const s = state[b]!;
        if (s.tokens++ === 0) job.work.onFirstToken?.();
        emit(b, s.stop.push(s.decoder.push(token)));
        return !s.stop.stopped;
      },
    }));
    const ends = await decodeBatch(this.pool.model, () => this.pool.newGraph(), rows, concatImageBatches(jobs.flatMap((j) => (j.images ? [j.images] : []))), {
      eosTokenIds: this.pool.generation.eosTokenIds ?? [tokenizer.eosId],
      padTokenId: this.pool.generation.padTokenId ?? this.pool.model.config.text_config.pad_token_id ?? tokenizer.padId,
      bannedTokenIds: [tokenizer.imgId, tokenizer.imgBreakId, tokenizer.imgEndId, this.pool.model.config.image_token_index],
      vocabLimit: tokenizer.vocabSize,
    });
    jobs.forEach((job, b) => {
      const s = state[b]!;
      if (ends[b] === "cancelled" || job.work.signal.aborted) {
        job.reject(abortReason(job.work.signal));
        this.counts.failed++;
        return;
      }
      if (!s.stop.stopped) emit(b, s.stop.push(s.decoder.flush()) + s.stop.flush());
      job.resolve({ text: s.text, finishReason: ends[b] === "length" ? "length" : "stop", promptTokens: job.promptIds.length, completionTokens: s.tokens + (ends[b] === "eos" ? 1 : 0) });
      this.counts.completed++;
    });
  }

  private runClassify(jobs: ClassifyJob[]): void {
    const tokenizer = this.pool.tokenizer;
    const { prompts, names } = jobs[0]!;
    const results = classifyBatch(
      {
        model: this.pool.model,
        newGraph: () => this.pool.newGraph(),
        tokenizer,
        prompts,
        mode: "score",
        maxNewTokens: 1,
        eosTokenIds: this.pool.generation.eosTokenIds ?? [tokenizer.eosId],
        padTokenId: this.pool.generation.padTokenId ?? this.pool.model.config.text_config.pad_token_id ?? tokenizer.padId,
      },
      concatImageBatches(jobs.map((j) => j.images))!,
    );
    jobs.forEach((job, i) => {
      if (job.work.signal.aborted) {
        job.reject(abortReason(job.work.signal));
        this.counts.failed++;
        return;
      }
      const temperature = job.work.model.temperature;
      const p = probabilities(results[i]!.scores!, temperature);
      job.resolve({ className: names[results[i]!.predicted]!, probabilities: Object.fromEntries(p.map((q, c) => [names[c]!, q])), temperature });
      this.counts.completed++;
    });
  }
}
