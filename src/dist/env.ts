import { InputError } from "../util/errors.ts";

/** Where this process sits in a multi-process run, from torchrun's / Slurm's variable names. */
export interface DistEnv {
  rank: number;
  worldSize: number;
  /** The GPU index on this host (LOCAL_RANK). */
  localRank: number;
  masterAddr: string;
  masterPort: number;
}

function integer(env: NodeJS.ProcessEnv, name: string, min: number, fallback?: number): number {
  const text = env[name];
  if (text === undefined || text.trim() === "") {
    if (fallback !== undefined) return fallback;
    throw new InputError(name, "not set, but WORLD_SIZE is", "set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT together (as torchrun does), or use splint train --gpus N");
  }
  const v = Number(text);
  if (!Number.isInteger(v) || v < min) throw new InputError(name, `must be an integer ≥ ${min}, got ${JSON.stringify(text)}`);
  return v;
}

/**
 * The run's place from the environment, or null when WORLD_SIZE is unset (a single-process run).
 * Slurm's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID stand in for RANK / WORLD_SIZE / LOCAL_RANK.
 */
export function distEnvFrom(env: NodeJS.ProcessEnv = process.env): DistEnv | null {
  const e: NodeJS.ProcessEnv = {
    ...env,
    RANK: env.RANK ?? env.SLURM_PROCID,
    WORLD_SIZE: env.WORLD_SIZE ?? env.SLURM_NTASKS,
    LOCAL_RANK: env.LOCAL_RANK ?? env.SLURM_LOCALID,
  };
  if (e.WORLD_SIZE === undefined) return null;
  const worldSize = integer(e, "WORLD_SIZE", 1);
  const rank = integer(e, "RANK", 0, worldSize === 1 ? 0 : undefined);
  if (rank >= worldSize) throw new InputError("RANK", `is ${rank}, but WORLD_SIZE is ${worldSize} (ranks are 0…${worldSize - 1})`);
  const localRank = integer(e, "LOCAL_RANK", 0, rank);
  const masterAddr = e.MASTER_ADDR?.trim() || (worldSize === 1 ? "127.0.0.1" : "");
  if (masterAddr === "") throw new InputError("MASTER_ADDR", "not set, but WORLD_SIZE is above 1", "set it to the host name or address of rank 0");
  // A run of one rank needs no agreed port: its store takes any free one.
  const masterPort = integer(e, "MASTER_PORT", 1, worldSize === 1 ? 0 : undefined);
  if (masterPort > 65535) throw new InputError("MASTER_PORT", `must be a port (1…65535), got ${masterPort}`);
  return { rank, worldSize, localRank, masterAddr, masterPort };
}

/**
 * One GPU per rank: narrows CUDA_VISIBLE_DEVICES to this rank's GPU (the LOCAL_RANK-th visible one,
 * or GPU LOCAL_RANK when unset), so the backend's device 0 is it. A single visible GPU (what
 * `splint train --gpus` gives each rank) is kept. Must run before the CUDA library loads.
 */
export function pinDevice(dist: DistEnv, env: NodeJS.ProcessEnv = process.env): string {
  const visible = env.CUDA_VISIBLE_DEVICES?.split(",").map((d) => d.trim()).filter((d) => d !== "");
  if (visible && visible.length === 1) return visible[0]!;
  if (visible && dist.localRank >= visible.length) {
    throw new InputError("LOCAL_RANK", `is ${dist.localRank}, but CUDA_VISIBLE_DEVICES lists ${visible.length} GPUs (${visible.join(",")})`);
  }
  const chosen = visible ? visible[dist.localRank]! : String(dist.localRank);
  env.CUDA_VISIBLE_DEVICES = chosen;
  return chosen;
}
