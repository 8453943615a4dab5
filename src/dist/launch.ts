import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import type { Output } from "../util/output.ts";
import { InputError } from "../util/errors.ts";
import { DistError } from "./store.ts";

/**
 * `splint train --gpus N` on one host: N copies of this command, one per GPU, each told its place
 * by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). When one copy
 * fails the others are stopped (they would otherwise wait on a collective until its deadline), and
 * the error names the rank that failed first.
 */

export interface LaunchOptions {
  /** Processes to start. */
  worldSize: number;
  /** The program and arguments of every rank (e.g. node, its flags, bin/splint.js, train …). */
  command: readonly string[];
  /** CUDA_VISIBLE_DEVICES per rank (one GPU each, seen as device 0); absent: left as it is. */
  devices?: readonly string[];
  output: Output;
  /** Extra environment for every rank. */
  env?: NodeJS.ProcessEnv;
  /** Grace between SIGTERM and SIGKILL when stopping the ranks. */
  killAfterMs?: number;
}

/** The GPUs `--gpus N|all` means: the entries of CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list. */
export function resolveGpus(spec: string, env: NodeJS.ProcessEnv = process.env, listGpus: () => number = countGpusWithNvidiaSmi): string[] {
  const visible = env.CUDA_VISIBLE_DEVICES?.split(",").map((d) => d.trim()).filter((d) => d !== "");
  const available = visible ?? Array.from({ length: listGpus() }, (_, i) => String(i));
  if (spec === "all") {
    if (available.length === 0) throw new InputError("--gpus", "all: no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi)");
    return available;
  }
  const n = Number(spec);
  if (!Number.isInteger(n) || n < 1) throw new InputError("--gpus", `expects a count ≥ 1 or "all", got ${JSON.stringify(spec)}`);
  if (n > available.length) throw new InputError("--gpus", `asks for ${n} GPUs, but ${available.length} are visible (${visible ? "CUDA_VISIBLE_DEVICES" : "nvidia-smi -L"})`);
  return available.slice(0, n);
}

function countGpusWithNvidiaSmi(): number {
  try {
    return execFileSync("nvidia-smi", ["-L"], { encoding: "utf8" }).split("\n").filter((l) => l.startsWith("GPU ")).length;
  } catch {
    return 0;
  }
}

/** A port free on 127.0.0.1 now (rank 0 binds it a moment later; a clash is reported by rank 0). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || !address) throw new DistError("could not pick a free port for the ranks' store");
  return address.port;
}

/** Starts the ranks and resolves when all exit 0; rejects naming the first rank that failed. */
export async function launchLocal(opts: LaunchOptions): Promise<void> {
  const port = await freePort();
  const killAfterMs = opts.killAfterMs ?? 10_000;
  const children: ChildProcess[] = [];
  const exited = new Set<number>();
  let failure: DistError | null = null;
  let stopping = false;

  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true;
    for (const [r, c] of children.entries()) if (!exited.has(r)) c.kill(signal);
    setTimeout(() => {
      for (const [r, c] of children.entries()) if (!exited.has(r)) c.kill("SIGKILL");
    }, killAfterMs).unref();
  };
  const forward = (signal: NodeJS.Signals) => () => {
    failure ??= new DistError(`stopped by ${signal}; the ranks were sent ${signal} too`);
    stopAll(signal);
  };
  // SIGTERM (sent to this process alone) is passed on. A terminal's Ctrl-C already reaches every
  // rank (they share its process group), and a second SIGINT would make each rank stop at once
  // instead of at its safe point; so on SIGINT the launcher only notes it and waits for the ranks.
  const onInt = () => {
    failure ??= new DistError("stopped by SIGINT (Ctrl-C); each rank stopped at its next safe point");
    stopping = true;
  };
  const onTerm = forward("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);

  try {
    const done = Array.from({ length: opts.worldSize }, (_, rank) => {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        ...opts.env,
        RANK: String(rank),
        WORLD_SIZE: String(opts.worldSize),
        LOCAL_RANK: String(rank),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
        ...(opts.devices ? { CUDA_VISIBLE_DEVICES: opts.devices[rank]! } : {}),
      };
      // Rank 0 speaks for the run; the others' stderr is kept, each line marked with its rank.
      const child = spawn(opts.command[0]!, opts.command.slice(1), { env, stdio: ["ignore", rank === 0 ? "inherit" : "ignore", rank === 0 ? "inherit" : "pipe"] });
      children.push(child);
      if (child.stderr) createInterface({ input: child.stderr }).on("line", (line) => opts.output.log(`[rank ${rank}] ${line}`));
      return new Promise<void>((resolve) => {
        child.on("error", (error) => {
          failure ??= new DistError(`rank ${rank} could not start: ${error.message}`);
          exited.add(rank);
          stopAll("SIGTERM");
          resolve();
        });
        child.on("exit", (code, signal) => {
          exited.add(rank);
          if (code !== 0 && !stopping) {
            const device = opts.devices ? ` (GPU ${opts.devices[rank]})` : "";
            failure ??= new DistError(`rank ${rank}${device} of ${opts.worldSize} failed (${signal ? `killed by ${signal}` : `exit code ${code}`}); the other ranks were stopped`, rank === 0 ? "see the error above" : `see the lines marked [rank ${rank}] above`);
            stopAll("SIGTERM");
          }
          resolve();
        });
      });
    });
    await Promise.all(done);
    if (failure) throw failure;
  } finally {
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  }
}
