import type { Backend } from "../tensor/backend.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { Communicator, ReduceOp } from "./communicator.ts";
import { DistError, type StoreClient } from "./store.ts";

/**
 * Collectives through the TCP store: each rank puts its tensor under a key of the call, reads
 * every rank's, and sums them in rank order. So every rank computes the very same bits (the
 * optimizer then steps identically everywhere without a broadcast), at the cost of moving N
 * copies through rank 0: fine for tests and small CPU runs, not a GPU path (that is NCCL).
 *
 * Works on any backend's f32 tensors (read back, reduced on the host, written in place).
 */
export class CpuCommunicator implements Communicator {
  private seq = 0;

  constructor(
    private readonly store: StoreClient,
    readonly rank: number,
    readonly worldSize: number,
    private readonly backend: Backend,
  ) {}

  private check(t: Tensor, what: string): void {
    if (t.dtype !== "f32") throw new DistError(`${what} on the CPU communicator takes f32 tensors, got ${t.dtype}`);
  }

  async allReduce(t: Tensor, op: ReduceOp): Promise<void> {
    this.check(t, "allReduce");
    const call = `ar/${this.seq++}`;
    const mine = Float32Array.from(this.backend.read(t) as Float32Array);
    await this.store.set(`${call}/${this.rank}`, new Uint8Array(mine.buffer));
    const sum = new Float32Array(mine.length);
    for (let r = 0; r < this.worldSize; r++) {
      const bytes = r === this.rank ? new Uint8Array(mine.buffer) : await this.store.get(`${call}/${r}`);
      if (bytes.byteLength !== mine.byteLength) {
        throw new DistError(`allReduce #${call}: rank ${r} sent ${bytes.byteLength / 4} elements, rank ${this.rank} has ${mine.length}`, "every rank must reduce tensors of the same shape in the same order");
      }
      const other = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      for (let i = 0; i < sum.length; i++) sum[i]! += other[i]!;
    }
    if (op === "avg") for (let i = 0; i < sum.length; i++) sum[i]! /= this.worldSize;
    this.write(t, sum);
    await this.finish(call);
  }

  async broadcast(t: Tensor, root: number): Promise<void> {
    this.check(t, "broadcast");
    const call = `bc/${this.seq++}`;
    if (this.rank === root) {
      await this.store.set(`${call}/${root}`, new Uint8Array(Float32Array.from(this.backend.read(t) as Float32Array).buffer));
    } else {
      const bytes = await this.store.get(`${call}/${root}`);
      if (bytes.byteLength !== t.byteLength) throw new DistError(`broadcast: rank ${root} sent ${bytes.byteLength / 4} elements, rank ${this.rank} expects ${t.size}`);
      this.write(t, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
    }
    await this.finish(call);
  }

  async barrier(): Promise<void> {
    const key = `barrier/${this.seq++}`;
    const previous = this.lastBarrier;
    this.lastBarrier = key;
    const arrived = await this.store.add(key, 1);
    if (arrived === this.worldSize) {
      await this.store.set(`${key}/done`, new Uint8Array(0));
      // Every rank has arrived here, so every rank is past the previous barrier: its keys can go
      // (a long run would otherwise leave two keys per collective in rank 0's memory).
      if (previous) await Promise.all([this.store.delete(previous), this.store.delete(`${previous}/done`)]);
    }
    await this.store.get(`${key}/done`);
  }

  private lastBarrier: string | null = null;

  /** Waits until every rank has read the call's keys, then drops this rank's key. */
  private async finish(call: string): Promise<void> {
    await this.barrier();
    await this.store.delete(`${call}/${this.rank}`);
  }

  private write(t: Tensor, values: Float32Array): void {
    const fresh = this.backend.upload(values, t.shape, "f32");
    try {
      // The Backend has no "copy into"; zero then add is exact for f32 (a NaN stays NaN, as the sum
      // including it would be anyway).
      this.backend.scaleInPlace(t, 0);
      this.backend.addInPlace(t, fresh);
    } finally {
      fresh.free();
    }
  }

  async destroy(): Promise<void> {
    await this.store.close();
  }

  abort(): void {
    this.store.abort();
  }
}
