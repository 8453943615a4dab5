import type { Tensor } from "../tensor/tensor.ts";

export type ReduceOp = "sum" | "avg";

/**
 * The collectives data-parallel training needs, over one group of `worldSize` ranks. Every rank
 * calls each collective in the same order with tensors of the same shape; calls are matched by
 * order. Implementations: CpuCommunicator (TCP store, for tests and CPU runs) and
 * NcclCommunicator (CUDA). Every failure, a dead peer included, is an exception, never a hang.
 */
export interface Communicator {
  readonly rank: number;
  readonly worldSize: number;
  /** Replaces t on every rank by the sum (or mean) of t over the ranks. */
  allReduce(t: Tensor, op: ReduceOp): Promise<void>;
  /** Replaces t on every rank by root's t. */
  broadcast(t: Tensor, root: number): Promise<void>;
  barrier(): Promise<void>;
  /** Leaves after success: waits for every rank, then closes. */
  destroy(): Promise<void>;
  /** Leaves at once after a failure, so the other ranks see this one gone instead of waiting. */
  abort(): void;
}
