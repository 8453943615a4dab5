import type { Communicator, ReduceOp } from "../../dist/communicator.ts";
import type { StoreClient } from "../../dist/store.ts";
import { DistError } from "../../dist/store.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { check, DTYPE_CODE, NCCL_UNIQUE_ID_BYTES, type NcclCommHandle, REDUCE_CODE } from "./ffi.ts";
import type { CudaBackend } from "./index.ts";

/**
 * The communicator of CUDA ranks: NCCL (native/cuda/src/nccl.cu), one communicator per process on
 * the backend's device, collectives enqueued on the backend's stream (no host wait, so a reduction
 * follows the backward that made its gradients and precedes the optimizer that reads them).
 *
 * Rank 0 makes the NCCL unique id and puts it in the TCP store; the others read it from there
 * (with the store's deadline, so a missing rank 0 is an error, not a hang). barrier() goes
 * through the store too. Not yet run on a multi-GPU machine.
 */
export class NcclCommunicator implements Communicator {
  private handle: NcclCommHandle | null;

  private constructor(
    private readonly backend: CudaBackend,
    private readonly store: StoreClient,
    readonly rank: number,
    readonly worldSize: number,
    handle: NcclCommHandle,
  ) {
    this.handle = handle;
  }

  /**
   * Loads NCCL (ncclLibrary: a libnccl.so.2 path, e.g. the nvidia-nccl wheel's
   * nvidia/nccl/lib/libnccl.so.2; default: SPLINT_NCCL_LIB, else the loader path) and joins.
   */
  static async create(backend: CudaBackend, store: StoreClient, rank: number, worldSize: number, ncclLibrary = process.env.SPLINT_NCCL_LIB ?? ""): Promise<NcclCommunicator> {
    const { lib, ctx } = backend.native();
    check(lib, lib.nccl_load(ncclLibrary), "nccl_load");
    const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
    if (rank === 0) {
      check(lib, lib.nccl_get_unique_id(id), "nccl_get_unique_id");
      await store.set("nccl/unique-id", id);
    } else {
      const got = await store.get("nccl/unique-id");
      if (got.byteLength !== NCCL_UNIQUE_ID_BYTES) throw new DistError(`rank ${rank}: the NCCL id in the store has ${got.byteLength} bytes, not ${NCCL_UNIQUE_ID_BYTES}`);
      id.set(got);
    }
    const out: [NcclCommHandle | null] = [null];
    // Blocks this thread until every rank has joined (NCCL has no deadline here).
    check(lib, lib.nccl_comm_init_rank(ctx, id, worldSize, rank, out), "nccl_comm_init_rank");
    return new NcclCommunicator(backend, store, rank, worldSize, out[0]!);
  }

  private live(op: string): NcclCommHandle {
    if (!this.handle) throw new DistError(`${op} on a destroyed NCCL communicator (rank ${this.rank})`);
    return this.handle;
  }

  private dtypeOf(t: Tensor, op: string): number {
    if (t.dtype === "f32") return DTYPE_CODE.f32;
    if (t.dtype === "bf16") return DTYPE_CODE.bf16;
    throw new DistError(`${op} on NCCL takes f32 or bf16 tensors, got ${t.dtype}`);
  }

  async allReduce(t: Tensor, op: ReduceOp): Promise<void> {
    const { lib, ptr } = this.backend.native();
    const address = ptr(t, "all_reduce");
    check(lib, lib.nccl_all_reduce(this.live("allReduce"), address, address, t.size, this.dtypeOf(t, "allReduce"), REDUCE_CODE[op]), "nccl_all_reduce");
  }

  async broadcast(t: Tensor, root: number): Promise<void> {
    const { lib, ptr } = this.backend.native();
    const address = ptr(t, "broadcast");
    check(lib, lib.nccl_broadcast(this.live("broadcast"), address, address, t.size, this.dtypeOf(t, "broadcast"), root), "nccl_broadcast");
  }

  async barrier(): Promise<void> {
    // Queued collectives first, so "every rank got here" also means "its NCCL work is done".
    this.backend.synchronize();
    const key = `nccl/barrier/${this.barriers++}`;
    const arrived = await this.store.add(key, 1);
    if (arrived === this.worldSize) await this.store.set(`${key}/done`, new Uint8Array(0));
    await this.store.get(`${key}/done`);
  }

  private barriers = 0;

  async destroy(): Promise<void> {
    await this.barrier();
    const handle = this.live("destroy");
    this.handle = null;
    const { lib } = this.backend.native();
    check(lib, lib.nccl_comm_destroy(handle, 0), "nccl_comm_destroy");
  }

  abort(): void {
    if (!this.handle) return;
    const { lib } = this.backend.native();
    const handle = this.handle;
    this.handle = null;
    lib.nccl_comm_destroy(handle, 1);
  }
}
