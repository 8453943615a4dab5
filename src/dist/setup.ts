import type { Backend } from "../tensor/backend.ts";
import type { Communicator } from "./communicator.ts";
import type { DistEnv } from "./env.ts";
import { cpuCommunicator, DEFAULT_DIST_TIMEOUT_MS, joinGroup } from "./group.ts";
import { DistError } from "./store.ts";
import type { CudaBackend } from "../backends/cuda/index.ts";
import { NcclCommunicator } from "../backends/cuda/nccl.ts";

/**
 * This rank's communicator for a backend: NCCL on CUDA (rank 0 shares the unique id through the
 * store), the store-based CPU communicator on CPU. SPLINT_DIST_TIMEOUT_S bounds every wait.
 */
export async function communicatorFor(env: DistEnv, backend: Backend, processEnv: NodeJS.ProcessEnv = process.env): Promise<Communicator> {
  const text = processEnv.SPLINT_DIST_TIMEOUT_S;
  const seconds = text === undefined ? DEFAULT_DIST_TIMEOUT_MS / 1000 : Number(text);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new DistError(`SPLINT_DIST_TIMEOUT_S must be a number of seconds above 0, got ${JSON.stringify(text)}`);
  const group = await joinGroup(env, { timeoutMs: seconds * 1000 });
  if (backend.name === "cpu") return cpuCommunicator(group, backend);
  if (!isCudaBackend(backend)) {
    group.abort();
    throw new DistError(`rank ${env.rank}: the ${backend.name} backend has no communicator`);
  }
  let nccl: NcclCommunicator;
  try {
    nccl = await NcclCommunicator.create(backend, group.store, env.rank, env.worldSize);
  } catch (error) {
    group.abort();
    throw error;
  }
  return {
    rank: nccl.rank,
    worldSize: nccl.worldSize,
    allReduce: (t, op) => nccl.allReduce(t, op),
    broadcast: (t, root) => nccl.broadcast(t, root),
    barrier: () => nccl.barrier(),
    async destroy() {
      await nccl.destroy();
      await group.close();
    },
    abort() {
      nccl.abort();
      group.abort();
    },
  };
}

function isCudaBackend(backend: Backend): backend is CudaBackend {
  return backend.name === "cuda" && "native" in backend;
}
