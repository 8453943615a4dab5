import { basename, resolve } from "node:path";
import type { Graph } from "../autograd/graph.ts";
import type { BackendPreference } from "../backends/cuda/detect.ts";
import { resolveCalibration } from "../eval/calibration-file.ts";
import { loadAdapter } from "../lora/adapter.ts";
import type { LoraPair } from "../lora/lora-linear.ts";
import { readGenerationConfig, type GenerationDefaults } from "../models/mistral3/generation-config.ts";
import type { Mistral3Model } from "../models/mistral3/model.ts";
import { openModelSession } from "../models/mistral3/runtime.ts";
import type { MatmulPrecision } from "../tensor/backend.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { InputError } from "../util/errors.ts";
import type { Output } from "../util/output.ts";

/**
 * The models a server answers for: one base model in memory and any number of LoRA adapters on it.
 * Each adapter's pairs are loaded once and kept off the model; before a batch runs, `activate`
 * puts the chosen adapter's pairs on the linears (or none, for the base). Swapping is a pointer
 * change per linear, so serving "before" and "after" costs one base model, not two.
 */
export interface ServedModel {
  readonly id: string;
  readonly kind: "base" | "adapter";
  readonly path: string;
  /** Softmax temperature for class probabilities: the adapter's calibration.json, else 1. */
  readonly temperature: number;
  /**
   * The adapter folder whose training_prompt.json says how to ask for a class: the adapter's own;
   * for the base, the last adapter's, so "before" and "after" answer the same question.
   */
  readonly promptFrom: string | undefined;
}

export interface AdapterSpec {
  /** The id clients name in `model`; default: the folder as given. */
  readonly id?: string;
  readonly dir: string;
}

export interface ModelPoolOptions {
  readonly modelDir: string;
  /** The base model's id; default: the model folder's name. */
  readonly baseId?: string;
  readonly adapters: readonly AdapterSpec[];
  readonly matmulPrecision?: MatmulPrecision;
  readonly backend?: BackendPreference;
  readonly output: Output;
}

export class ModelPool {
  private readonly pairs = new Map<string, ReadonlyMap<string, LoraPair>>();
  private active: string;

  private constructor(
    readonly modelDir: string,
    readonly model: Mistral3Model,
    readonly tokenizer: Tokenizer,
    readonly generation: GenerationDefaults,
    readonly backendName: string,
    private readonly graph: () => Graph,
    readonly served: readonly ServedModel[],
  ) {
    this.active = served[0]!.id;
  }

  static async open(opts: ModelPoolOptions): Promise<ModelPool> {
    const baseId = opts.baseId ?? basename(resolve(opts.modelDir));
    const session = await openModelSession(opts.modelDir, { matmulPrecision: opts.matmulPrecision, output: opts.output, backend: opts.backend });
    const tokenizer = await loadTokenizer(opts.modelDir);
    const last = opts.adapters[opts.adapters.length - 1]?.dir;
    const served: ServedModel[] = [{ id: baseId, kind: "base", path: opts.modelDir, temperature: 1, promptFrom: last }];
    const captured: [string, Map<string, LoraPair>][] = [];
    for (const spec of opts.adapters) {
      const id = spec.id ?? spec.dir;
      if (served.some((s) => s.id === id)) throw new InputError(`--adapter ${spec.dir}`, `the model id "${id}" is taken twice`, "name adapters with --adapter NAME=DIR");
      await loadAdapter(spec.dir, session.model.linears, session.backend);
      const pairs = new Map<string, LoraPair>();
      for (const [path, linear] of session.model.linears) {
        if (linear.lora) pairs.set(path, linear.lora);
        // Off the model again (not freed): the next adapter loads onto bare linears.
        linear.lora = null;
      }
      captured.push([id, pairs]);
      const calibration = await resolveCalibration(spec.dir, undefined);
      served.push({ id, kind: "adapter", path: spec.dir, temperature: calibration?.calibration.temperature ?? 1, promptFrom: spec.dir });
    }
    const pool = new ModelPool(opts.modelDir, session.model, tokenizer, readGenerationConfig(opts.modelDir), session.backend.name, () => session.inferenceGraph(), served);
    for (const [id, pairs] of captured) pool.pairs.set(id, pairs);
    return pool;
  }

  /**
   * A pool over a model already in memory (benchmarks build one with random weights of a real
   * size); the tokenizer, processor and generation settings still come from modelDir.
   */
  static async fromModel(opts: { modelDir: string; baseId: string; model: Mistral3Model; backendName: string; newGraph: () => Graph }): Promise<ModelPool> {
    const tokenizer = await loadTokenizer(opts.modelDir);
    const served: ServedModel[] = [{ id: opts.baseId, kind: "base", path: opts.modelDir, temperature: 1, promptFrom: undefined }];
    return new ModelPool(opts.modelDir, opts.model, tokenizer, readGenerationConfig(opts.modelDir), opts.backendName, opts.newGraph, served);
  }

  /** The model a request names; undefined: the last adapter given (the fine-tuned one), else the base. */
  find(id: string | undefined): ServedModel | undefined {
    if (id === undefined) return this.served[this.served.length - 1];
    return this.served.find((s) => s.id === id);
  }

  /** Puts the model's adapter (or none) on the linears; call right before its batch runs. */
  activate(id: string): void {
    if (this.active === id) return;
    const pairs = this.pairs.get(id);
    for (const [path, linear] of this.model.linears) linear.lora = pairs?.get(path) ?? null;
    this.active = id;
  }

  newGraph(): Graph {
    return this.graph();
  }
}
