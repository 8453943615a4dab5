import type { Command } from "commander";
import { detectBackend, type BackendPreference } from "../../backends/cuda/detect.ts";
import { readConfigFile, resolveConfig, SETTING_KINDS, TUTORIAL_DEFAULTS, type SettingKind, type TrainConfig } from "../../train/config.ts";
import { normalizeKeys } from "../../train/trl-keys.ts";
import { runTraining } from "../../train/run.ts";
import { InputError } from "../../util/errors.ts";
import { distEnvFrom, pinDevice } from "../../dist/env.ts";
import { launchLocal, resolveGpus } from "../../dist/launch.ts";
import { communicatorFor } from "../../dist/setup.ts";
import type { Communicator } from "../../dist/communicator.ts";
import { stopSignal } from "../../util/interrupt.ts";
import { createOutput, type Output } from "../output.ts";
import { MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

const TRAIN_HELP = `
Every setting of the tutorial's LoraConfig and SFTConfig has a flag (--lora-alpha for lora_alpha, …)
and can also come from --config FILE (YAML or JSON with the snake_case names, TRL/PEFT key names
accepted; \`splint init --config\` writes a commented one); flags win over the file, the file over
the tutorial's defaults. The run folder gets:
  config.resolved.json   every setting of the run (pass it to --config to repeat the run)
  train_log.jsonl        loss, lr, grad_norm, tokens/s, images/s, memory every logging_steps
  metrics.jsonl          the same under Trainer names (learning_rate, …) + eval_* with eval_strategy
  tensorboard/           event files: tensorboard --logdir RUN
  checkpoints/checkpoint-<step>/   adapter + optimizer state + RNG + data position
  adapter/               the final PEFT adapter (adapter_config.json, adapter_model.safetensors)

--resume continues the run in --out from its newest checkpoint, exactly as if never stopped.
Ctrl-C (or SIGTERM) stops at the next safe point and saves a checkpoint first (exit 130 / 143);
a second Ctrl-C stops at once. --on-nan stop|skip-step: what a NaN/Inf loss or gradient does.
--push-to-hub REPO uploads the final adapter (needs HF_TOKEN with write access).
--gpus N|all starts one process per GPU of this host (data parallel; rank 0 writes the run folder).
  With --device cpu, N CPU processes. Multi-node: start one splint train per process yourself with
  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set (as torchrun or Slurm do).

Before loading the weights, a CUDA run estimates its GPU memory (weights at their stored dtype,
fp8 included; LoRA, optimizer states, activations) and prints it with the setting it chose: with
gradient_checkpointing auto (the default) it keeps every layer's activations when they fit (the
fastest setting), else keeps the products' outputs and remakes the norms' and SwiGLU's in the
backward (selective), else recomputes every layer (true); then it halves the micro-batch (doubling
gradient_accumulation_steps) until the run fits the card, and refuses when nothing fits. --gpu-memory GiB overrides the card's
size (and checks a CPU run as if on such a card).

Examples:
  splint train --model ./ministral --dataset ./bones --out runs/bones
  splint train --model ./ministral --dataset ./bones --out runs/bones --loss-on all --max-image-edge 448
  splint train --model ./ministral --dataset ./bones --out runs/bones --resume`;

const flagOf = (key: string) => key.replace(/_/g, "-");

/** Turns a flag's text into the setting's type; errors name the flag. */
function parseFlag(key: keyof TrainConfig, kind: SettingKind, text: string): unknown {
  const flag = `--${flagOf(key)}`;
  const number = () => {
    const v = Number(text);
    if (text.trim() === "" || !Number.isFinite(v)) throw new InputError(flag, `expects a number, got ${JSON.stringify(text)}`);
    return v;
  };
  if (Array.isArray(kind)) return text;
  switch (kind) {
    case "number":
    case "integer":
      return number();
    case "number|null":
      return text === "none" ? null : number();
    case "string|null":
    case "string[]|null":
      return text === "none" ? null : text;
    case "boolean":
      if (text !== "true" && text !== "false") throw new InputError(flag, `expects true or false, got ${JSON.stringify(text)}`);
      return text === "true";
    case "boolean|auto|selective":
      if (text !== "true" && text !== "false" && text !== "auto" && text !== "selective") {
        throw new InputError(flag, `expects true, false, selective or auto, got ${JSON.stringify(text)}`);
      }
      return text === "auto" || text === "selective" ? text : text === "true";
    case "string":
      return text;
    case "modules":
      // Module names never hold regex syntax, so a value that does is a regex (PEFT's string form).
      return /[*+?()[\]{}|^$\\]/.test(text) || text === "all-linear" ? text : text.split(",").map((s) => s.trim()).filter(Boolean);
  }
  return text;
}

export function registerTrain(program: Command): void {
  const command = program
    .command("train")
    .description("Fine-tune a LoRA adapter on an image-classification dataset (the tutorial's SFT recipe)")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .requiredOption("--dataset <dir|id>", "dataset folder (splint data import / synth, or Python datasets) or Hub dataset id owner/name[@revision]")
    .requiredOption("--out <dir>", "run folder")
    .option("--split <name>", "split to train on", "train")
    .option("--config <file>", "settings file (YAML or JSON)")
    .option("--resume", "continue the run in --out from its newest checkpoint")
    .option("--push-to-hub <repo>", "upload the final adapter to this Hub repo (HF_TOKEN)")
    .option("--device <device>", "auto, cpu or cuda (default: SPLINT_BACKEND, else auto)")
    .option("--gpus <n|all>", "data-parallel over N GPUs of this host (N processes with --device cpu)")
    .option("--gpu-memory <GiB>", "the card's memory for the memory check (default: what the CUDA device reports; on CPU, no check)")
    .option("--json", "print the result as JSON");
  for (const [key, kind] of Object.entries(SETTING_KINDS) as [keyof TrainConfig, SettingKind][]) {
    const values = Array.isArray(kind) ? kind.join("|") : kind === "boolean" ? "true|false" : kind === "boolean|auto|selective" ? "true|false|selective|auto" : kind === "number|null" ? "n|none" : kind === "modules" ? "a,b,…|regex" : kind === "string[]" ? "a,b,…" : kind === "string[]|null" ? "a,b,…|none" : kind === "string|null" ? "text|none" : kind === "string" ? "text" : "n";
    command.option(`--${flagOf(key)} <${values}>`, `${key} (default ${JSON.stringify(TUTORIAL_DEFAULTS[key])})`);
  }
  command.addHelpText("after", TRAIN_HELP).action(async (flags: Record<string, unknown>) => {
    const dist = distEnvFrom(process.env);
    if (typeof flags.gpus === "string" && dist === null) {
      const device = flags.device === undefined ? undefined : String(flags.device);
      const devices = device === "cpu" ? undefined : resolveGpus(flags.gpus);
      const worldSize = devices?.length ?? resolveCpuRanks(flags.gpus);
      await launchLocal({ worldSize, devices, command: [process.execPath, ...process.execArgv, ...withoutGpusFlag(process.argv.slice(1))], output: createOutput(false) });
      return;
    }
    // Only rank 0 speaks; the others' errors still reach stderr (the launcher marks them).
    const output: Output = dist && dist.rank !== 0 ? silentOutput : createOutput(Boolean(flags.json));
    const device = flags.device === undefined ? undefined : String(flags.device);
    if (device !== undefined && !["auto", "cpu", "cuda"].includes(device)) throw new InputError("--device", `must be auto, cpu or cuda, got ${JSON.stringify(device)}`);
    const fileSource = typeof flags.config === "string" ? flags.config : "defaults";
    // TRL/PEFT names in the file become splint's now, so a flag for the same setting overrides it.
    const fromFile = typeof flags.config === "string" ? normalizeKeys(await readConfigFile(flags.config), fileSource, Object.keys(SETTING_KINDS)) : {};
    const base = resolveConfig(TUTORIAL_DEFAULTS, fromFile, fileSource);
    const fromFlags: Record<string, unknown> = {};
    for (const [key, kind] of Object.entries(SETTING_KINDS) as [keyof TrainConfig, SettingKind][]) {
      const camel = key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
      const text = flags[camel];
      if (typeof text === "string") fromFlags[key] = parseFlag(key, kind, text);
    }
    resolveConfig(base, fromFlags, "command-line flags");
    let gpuMemoryBytes: number | undefined;
    if (flags.gpuMemory !== undefined) {
      const gib = Number(flags.gpuMemory);
      if (String(flags.gpuMemory).trim() === "" || !(gib > 0) || !Number.isFinite(gib)) throw new InputError("--gpu-memory", `expects a positive number of GiB, got ${JSON.stringify(flags.gpuMemory)}`);
      gpuMemoryBytes = gib * 2 ** 30;
    }
    if (dist && dist.worldSize > 1 && device !== "cpu") pinDevice(dist);
    const choice = detectBackend({ prefer: device as BackendPreference | undefined });
    output.log(choice.reason);
    let communicator: Communicator | undefined;
    // WORLD_SIZE=1 still goes through the communicator: the one-GPU check of the NCCL path.
    if (dist) {
      communicator = await communicatorFor(dist, choice.backend);
      output.log(`data parallel: rank ${dist.rank} of ${dist.worldSize} (store ${dist.masterAddr}:${dist.masterPort})`);
    }
    // Ctrl-C / SIGTERM stop at the next micro-batch boundary, after saving a checkpoint.
    const stop = stopSignal();
    const result = await runTraining({
      modelDir: String(flags.model),
      ...revisionOption(typeof flags.revision === "string" ? flags.revision : undefined),
      dataset: String(flags.dataset),
      split: String(flags.split),
      outDir: String(flags.out),
      config: { ...fromFile, ...fromFlags } as Partial<TrainConfig>,
      configSource: typeof flags.config === "string" ? `${flags.config} (with command-line flags)` : "command-line flags",
      resume: Boolean(flags.resume),
      pushToHub: typeof flags.pushToHub === "string" ? flags.pushToHub : undefined,
      backend: choice.backend,
      gpuMemoryBytes,
      output,
      communicator,
      signal: stop.signal,
    })
      .then(
        async (r) => {
          await communicator?.destroy();
          return r;
        },
        (error: unknown) => {
          // Leave at once: the other ranks then fail their waits instead of waiting on this one.
          communicator?.abort();
          throw error;
        },
      )
      .finally(stop.release);
    const { history, ...summary } = result;
    output.result({ ...summary, firstLoss: history[0]?.loss ?? null }, () =>
      [
        `trained ${result.steps} steps in ${result.seconds.toFixed(1)} s${result.resumedFrom ? ` (resumed from ${result.resumedFrom})` : ""}`,
        `final loss ${result.finalLoss?.toFixed(4) ?? "n/a"}`,
        `adapter: ${result.adapterDir}`,
        `log: ${result.logFile}`,
        ...(result.pushed ? [`pushed: ${result.pushed.url}`] : []),
      ].join("\n"),
    );
  });
}

const silentOutput: Output = { json: false, log() {}, result() {}, progress: () => ({ update() {}, increment() {}, stop() {} }) };

/** `--gpus N` with --device cpu: N CPU processes ("all" has no meaning there). */
function resolveCpuRanks(spec: string): number {
  const n = Number(spec);
  if (!Number.isInteger(n) || n < 1) throw new InputError("--gpus", `with --device cpu expects a process count ≥ 1, got ${JSON.stringify(spec)}`);
  return n;
}

/** The command line again, without --gpus (the ranks must not launch ranks of their own). */
export function withoutGpusFlag(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--gpus") i++;
    else if (!args[i]!.startsWith("--gpus=")) out.push(args[i]!);
  }
  return out;
}
