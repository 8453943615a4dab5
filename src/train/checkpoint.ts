import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { openSafetensors, toFloat32, writeSafetensors } from "../io/safetensors.ts";
import { saveAdapter, type LoraSettings } from "../lora/adapter.ts";
import type { LoraLinear } from "../lora/lora-linear.ts";
import type { Backend } from "../tensor/backend.ts";
import { writeDirAtomic, writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import type { Optimizer } from "./optimizer.ts";

/**
 * Training checkpoints: one folder per saved optimizer step, `checkpoints/checkpoint-<step>/`, written
 * atomically (built under a temporary name, renamed into place), holding everything a resumed run
 * needs to continue bit for bit: the adapter (PEFT format, f32 masters), the optimizer's moments, and the
 * trainer state (step, data position, RNG).
 */

export const CHECKPOINTS_DIR = "checkpoints";
const OPTIMIZER_FILE = "optimizer.safetensors";
const STATE_FILE = "trainer_state.json";

export interface TrainerState {
  /** Optimizer steps done. */
  step: number;
  /** Where the next micro-batch comes from: epoch (0-based) and micro-batch index in it. */
  epoch: number;
  microBatch: number;
  /** State of the dropout-seed RNG after `step`. */
  rng: number;
  totalSteps: number;
}

export function checkpointDir(runDir: string, step: number): string {
  return join(runDir, CHECKPOINTS_DIR, `checkpoint-${step}`);
}

export async function saveCheckpoint(
  dir: string,
  state: TrainerState,
  adapter: { settings: LoraSettings; linears: ReadonlyMap<string, LoraLinear> },
  optimizer: Optimizer,
  backend: Backend,
): Promise<void> {
  await writeDirAtomic(dir, async (tmp) => {
    await saveAdapter(tmp, adapter.settings, adapter.linears, backend);
    await saveOptimizerState(tmp, optimizer);
    await writeFileAtomic(join(tmp, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  });
}

/** Writes the optimizer's state (moments, or 8-bit codes and absmaxes, and the step) into dir. */
export async function saveOptimizerState(dir: string, optimizer: Optimizer): Promise<void> {
  const state = optimizer.exportState();
  await writeSafetensors(join(dir, OPTIMIZER_FILE), state.tensors, { format: "pt", step: String(state.step) });
}

/** Checkpoint folders of a run, oldest first (by step). */
export async function listCheckpoints(runDir: string): Promise<{ step: number; dir: string }[]> {
  let names: string[];
  try {
    names = await readdir(join(runDir, CHECKPOINTS_DIR));
  } catch {
    return [];
  }
  return names
    .map((name) => ({ name, m: /^checkpoint-(\d+)$/.exec(name) }))
    .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null)
    .map((e) => ({ step: Number(e.m[1]), dir: join(runDir, CHECKPOINTS_DIR, e.name) }))
    .sort((a, b) => a.step - b.step);
}

export async function readTrainerState(dir: string): Promise<TrainerState> {
  const file = join(dir, STATE_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    throw new InputError(file, `cannot read the trainer state (${(error as Error).message})`);
  }
  const s = raw as Record<string, unknown>;
  for (const key of ["step", "epoch", "microBatch", "rng", "totalSteps"]) {
    if (!Number.isInteger(s[key])) throw new InputError(file, `"${key}" is missing or not an integer`);
  }
  return s as unknown as TrainerState;
}

/** Loads the optimizer's moments saved next to the adapter. */
export async function loadOptimizerState(dir: string, optimizer: Optimizer): Promise<void> {
  const file = join(dir, OPTIMIZER_FILE);
  const source = await openSafetensors(file);
  try {
    const step = Number(source.metadata.step);
    if (!Number.isInteger(step)) throw new InputError(file, "has no optimizer step in its metadata");
    const values = new Map<string, Float32Array | Uint8Array>();
    for (const key of source.keys()) {
      const stored = await source.read(key);
      values.set(key, stored.dtype === "U8" ? Uint8Array.from(stored.data) : toFloat32(stored));
    }
    optimizer.importState(step, (name) => {
      const v = values.get(name);
      if (!v) throw new InputError(file, `has no tensor "${name}" (the checkpoint does not match this run's adapter)`);
      return v;
    });
  } finally {
    await source.close();
  }
}
