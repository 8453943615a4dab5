import type { Backend } from "../tensor/backend.ts";
import type { Communicator } from "./communicator.ts";
import { CpuCommunicator } from "./cpu-communicator.ts";
import type { DistEnv } from "./env.ts";
import { StoreClient, StoreServer } from "./store.ts";

/** Default deadline of a store wait (and so of a CPU collective): long enough for a slow step. */
export const DEFAULT_DIST_TIMEOUT_MS = 600_000;

/** A rank's membership of the run: the store (served by rank 0) and a client of it. */
export interface Group {
  env: DistEnv;
  store: StoreClient;
  /** Rank 0 only. */
  server: StoreServer | null;
  close(): Promise<void>;
  /** After a failure: drops the connection (and rank 0's store) at once. */
  abort(): void;
}

export async function joinGroup(env: DistEnv, opts: { timeoutMs?: number } = {}): Promise<Group> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_DIST_TIMEOUT_MS;
  const server = env.rank === 0 ? await StoreServer.listen(env.masterAddr, env.masterPort, env.worldSize) : null;
  const store = await StoreClient.connect(env.masterAddr, server?.port ?? env.masterPort, env.rank, { timeoutMs, connectTimeoutMs: Math.min(timeoutMs, 120_000) });
  return {
    env,
    store,
    server,
    async close() {
      await store.close();
      if (server) {
        await server.drain(30_000);
        await server.close();
      }
    },
    abort() {
      store.abort();
      void server?.close();
    },
  };
}

/**
 * The CPU communicator of a group. Its destroy() leaves the group: rank 0 first waits for every
 * rank to arrive, so its store is not closed under a rank still reading from it.
 */
export function cpuCommunicator(group: Group, backend: Backend): Communicator {
  const inner = new CpuCommunicator(group.store, group.env.rank, group.env.worldSize, backend);
  return {
    rank: inner.rank,
    worldSize: inner.worldSize,
    allReduce: (t, op) => inner.allReduce(t, op),
    broadcast: (t, root) => inner.broadcast(t, root),
    barrier: () => inner.barrier(),
    async destroy() {
      await inner.barrier();
      await group.close();
    },
    abort: () => group.abort(),
  };
}
