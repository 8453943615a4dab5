import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { distEnvFrom, pinDevice } from "../../src/dist/env.ts";
import { cpuCommunicator, joinGroup } from "../../src/dist/group.ts";
import { StoreClient, StoreServer } from "../../src/dist/store.ts";

const backend = createCpuBackend();

/** worldSize ranks in this process, talking over TCP on 127.0.0.1 as separate processes would. */
async function ranks(worldSize: number, timeoutMs = 10_000) {
  const first = await joinGroup({ rank: 0, worldSize, localRank: 0, masterAddr: "127.0.0.1", masterPort: 0 }, { timeoutMs });
  const port = first.server!.port;
  const rest = await Promise.all(Array.from({ length: worldSize - 1 }, (_, i) => joinGroup({ rank: i + 1, worldSize, localRank: i + 1, masterAddr: "127.0.0.1", masterPort: port }, { timeoutMs })));
  return [first, ...rest];
}

test("all-reduce sums (and averages) every rank's tensor, bit-identically on every rank", async () => {
  const groups = await ranks(3);
  const comms = groups.map((g) => cpuCommunicator(g, backend));
  const tensors = comms.map((c) => backend.upload(Float32Array.from([1, 2, 3, 0.1].map((v) => v * (c.rank + 1))), [2, 2], "f32"));
  await Promise.all(comms.map((c, i) => c.allReduce(tensors[i]!, "sum")));
  const results = tensors.map((t) => Array.from(backend.read(t)));
  for (const r of results) assert.deepEqual(r, results[0]);
  assert.deepEqual(results[0], Array.from(Float32Array.from([6, 12, 18, Math.fround(Math.fround(Math.fround(0.1) + Math.fround(0.2)) + Math.fround(0.3))])));
  await Promise.all(comms.map((c, i) => c.allReduce(tensors[i]!, "avg")));
  assert.deepEqual(Array.from(backend.read(tensors[2]!)).slice(0, 3), [6, 12, 18]);

  const b = comms.map((c) => backend.upload(Float32Array.from([c.rank, c.rank]), [2], "f32"));
  await Promise.all(comms.map((c, i) => c.broadcast(b[i]!, 1)));
  for (const t of b) assert.deepEqual(Array.from(backend.read(t)), [1, 1]);
  for (let i = 0; i < 20; i++) await Promise.all(comms.map((c, r) => c.allReduce(tensors[r]!, "avg")));
  assert.ok(groups[0]!.server!.size <= 2, `${groups[0]!.server!.size} keys left after 23 collectives`);
  await Promise.all(comms.map((c) => c.destroy()));
});

test("a rank that disconnects mid-run fails the others' waits with its rank, instead of a hang", async () => {
  const groups = await ranks(3);
  const comms = groups.map((g) => cpuCommunicator(g, backend));
  const t0 = backend.upload(new Float32Array(4), [4], "f32");
  const t1 = backend.upload(new Float32Array(4), [4], "f32");
  const waiting = [comms[0]!.allReduce(t0, "sum"), comms[1]!.allReduce(t1, "sum")];
  // Rank 2 dies without a goodbye: its socket just closes.
  (groups[2]!.store as unknown as { socket: { destroy(): void } }).socket.destroy();
  for (const w of waiting) await assert.rejects(w, /rank 2 of 3 disconnected from the store/);
  await groups[0]!.server!.close();
});

test("a wait for a key nobody sets ends at its deadline, naming the key", async () => {
  const server = await StoreServer.listen("127.0.0.1", 0, 1);
  const client = await StoreClient.connect("127.0.0.1", server.port, 0, { timeoutMs: 200 });
  await client.set("a", new Uint8Array([7]));
  assert.deepEqual([...(await client.get("a"))], [7]);
  assert.equal(await client.add("n", 2), 2);
  assert.equal(await client.add("n", 3), 5);
  await assert.rejects(client.get("nccl-id"), /timed out after 0\.2 s waiting for "nccl-id"/);
  await client.close();
  await server.close();
});

test("a lost store (rank 0 gone) and an unreachable one are errors that name the address", async () => {
  const server = await StoreServer.listen("127.0.0.1", 0, 2);
  const client = await StoreClient.connect("127.0.0.1", server.port, 1, { timeoutMs: 5000 });
  const pending = client.get("never");
  await server.close();
  await assert.rejects(pending, new RegExp(`lost the connection to the store at 127\\.0\\.0\\.1:${server.port} \\(rank 0\\)`));
  await assert.rejects(StoreClient.connect("127.0.0.1", server.port, 1, { timeoutMs: 300 }), new RegExp(`rank 1 cannot reach the store of rank 0 at 127\\.0\\.0\\.1:${server.port}`));
});

test("the environment: torchrun and Slurm names, and errors that name the variable", () => {
  assert.equal(distEnvFrom({}), null);
  assert.deepEqual(distEnvFrom({ WORLD_SIZE: "1" }), { rank: 0, worldSize: 1, localRank: 0, masterAddr: "127.0.0.1", masterPort: 0 });
  assert.deepEqual(distEnvFrom({ RANK: "1", WORLD_SIZE: "2", LOCAL_RANK: "1", MASTER_ADDR: "node0", MASTER_PORT: "29501" }), { rank: 1, worldSize: 2, localRank: 1, masterAddr: "node0", masterPort: 29501 });
  assert.deepEqual(distEnvFrom({ SLURM_PROCID: "3", SLURM_NTASKS: "4", SLURM_LOCALID: "1", MASTER_ADDR: "n", MASTER_PORT: "1" }), { rank: 3, worldSize: 4, localRank: 1, masterAddr: "n", masterPort: 1 });
  assert.throws(() => distEnvFrom({ WORLD_SIZE: "2", MASTER_ADDR: "n", MASTER_PORT: "1" }), /RANK: not set, but WORLD_SIZE is/);
  assert.throws(() => distEnvFrom({ WORLD_SIZE: "2", RANK: "2", MASTER_ADDR: "n", MASTER_PORT: "1" }), /RANK: is 2, but WORLD_SIZE is 2/);
  assert.throws(() => distEnvFrom({ WORLD_SIZE: "2", RANK: "0", MASTER_PORT: "1" }), /MASTER_ADDR: not set/);
  assert.throws(() => distEnvFrom({ WORLD_SIZE: "2", RANK: "0", MASTER_ADDR: "n", MASTER_PORT: "99999" }), /MASTER_PORT: must be a port/);
  assert.throws(() => distEnvFrom({ WORLD_SIZE: "two" }), /WORLD_SIZE: must be an integer/);
});

test("each rank is pinned to its GPU through CUDA_VISIBLE_DEVICES", () => {
  const at = (localRank: number) => ({ rank: localRank, worldSize: 4, localRank, masterAddr: "n", masterPort: 1 });
  const unset: NodeJS.ProcessEnv = {};
  assert.equal(pinDevice(at(2), unset), "2");
  assert.equal(unset.CUDA_VISIBLE_DEVICES, "2");
  const slurm: NodeJS.ProcessEnv = { CUDA_VISIBLE_DEVICES: "4,5,6,7" };
  assert.equal(pinDevice(at(1), slurm), "5");
  assert.equal(slurm.CUDA_VISIBLE_DEVICES, "5");
  assert.equal(pinDevice(at(3), { CUDA_VISIBLE_DEVICES: "6" }), "6", "the launcher's one GPU is kept");
  assert.throws(() => pinDevice(at(3), { CUDA_VISIBLE_DEVICES: "0,1" }), /LOCAL_RANK: is 3, but CUDA_VISIBLE_DEVICES lists 2 GPUs/);
});
