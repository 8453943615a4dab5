/**
 * The one-GPU check of the NCCL path (scripts/gpu-check): with WORLD_SIZE 1 it
 *   1. loads NCCL at run time (SPLINT_NCCL_LIB, else the nvidia-nccl wheel under a Python
 *      site-packages, else libnccl.so.2 on the loader path), and shows that a wrong path is an
 *      exception naming it,
 *   2. runs all-reduce (f32 and bf16, sum and avg) and broadcast on the backend's stream: with one
 *      rank each must leave its tensor as it was,
 *   3. trains the tiny fixture model through the communicator and without it: the adapters must
 *      match (max |Δ| ≤ 1e-6),
 * and writes nccl-check.md into the output folder. Several ranks need a multi-GPU machine; this
 * checks the binding, the stream ordering and the trainer's path on one.
 *
 *   node --import tsx scripts/cuda-nccl-check.ts [--out DIR] [--backend cuda|cpu]
 *
 * `--backend cpu` runs steps 2–3 with the CPU communicator (a check of this script without a GPU).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { createCudaBackend } from "../src/backends/cuda/index.ts";
import { NcclCommunicator } from "../src/backends/cuda/nccl.ts";
import type { DatasetDict } from "../src/data/types.ts";
import type { Communicator } from "../src/dist/communicator.ts";
import { joinGroup } from "../src/dist/group.ts";
import { communicatorFor } from "../src/dist/setup.ts";
import { openSafetensors, toFloat32 } from "../src/io/safetensors.ts";
import type { Backend } from "../src/tensor/backend.ts";
import { runTraining } from "../src/train/run.ts";

const silent = { json: false, log() {}, result() {}, progress: () => ({ update() {}, increment() {}, stop() {} }) };
const WORLD_OF_ONE = { rank: 0, worldSize: 1, localRank: 0, masterAddr: "127.0.0.1", masterPort: 0 };

/** The nvidia-nccl wheel's library, where pip puts it. */
function findNccl(): string | undefined {
  if (process.env.SPLINT_NCCL_LIB) return process.env.SPLINT_NCCL_LIB;
  for (const base of ["/usr/local/lib", "/usr/lib", join(process.env.HOME ?? "/root", ".local/lib")]) {
    if (!existsSync(base)) continue;
    for (const py of readdirSync(base).filter((d) => d.startsWith("python3"))) {
      for (const kind of ["dist-packages", "site-packages"]) {
        const lib = join(base, py, kind, "nvidia", "nccl", "lib", "libnccl.so.2");
        if (existsSync(lib)) return lib;
      }
    }
  }
  return undefined;
}

function tinyDataset(): DatasetDict {
  const dir = join("test", "fixtures", "images");
  const names = ["upscale_rgb_30x20", "gray_70x50", "rgba_40x90", "upscale_rgb_30x20"];
  const rows = names.map((name, i) => ({ image: { bytes: new Uint8Array(readFileSync(join(dir, `${name}.png`))), path: `${name}-${i}.png` }, label: i % 2 }));
  return { classNames: ["Avulsion fracture", "Comminuted fracture"], splits: new Map([["train", rows]]) };
}

async function adapterDelta(a: string, b: string): Promise<number> {
  const [x, y] = await Promise.all([openSafetensors(join(a, "adapter_model.safetensors")), openSafetensors(join(b, "adapter_model.safetensors"))]);
  let worst = 0;
  for (const key of x.keys()) {
    const [p, q] = [toFloat32(await x.read(key)), toFloat32(await y.read(key))];
    for (let i = 0; i < p.length; i++) worst = Math.max(worst, Math.abs(p[i]! - q[i]!));
  }
  await Promise.all([x.close(), y.close()]);
  return worst;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { out: { type: "string", default: process.env.OUT ?? "out/gpu-check" }, backend: { type: "string", default: "cuda" } } });
  const lines: string[] = ["# NCCL world-size-1 check", ""];
  const fail = (what: string) => {
    lines.push(`- FAILED: ${what}`);
    process.exitCode = 1;
  };
  let backend: Backend;
  if (values.backend === "cuda") {
    const cuda = createCudaBackend();
    backend = cuda;
    lines.push(`device: ${cuda.device}`);
    const group = await joinGroup(WORLD_OF_ONE, { timeoutMs: 60_000 });
    try {
      await NcclCommunicator.create(cuda, group.store, 0, 1, "/nonexistent/libnccl.so.2");
      fail("a wrong NCCL path did not throw");
    } catch (error) {
      const message = (error as Error).message;
      if (/cannot load \/nonexistent\/libnccl\.so\.2/.test(message)) lines.push(`- a wrong NCCL path throws: ${message}`);
      else fail(`a wrong NCCL path threw something else: ${message}`);
    }
    await group.close();
    const lib = findNccl();
    lines.push(`- NCCL library: ${lib ?? "libnccl.so.2 from the loader path"}`);
    if (lib) process.env.SPLINT_NCCL_LIB = lib;
  } else {
    backend = createCpuBackend();
  }
  const comm: Communicator = await communicatorFor(WORLD_OF_ONE, backend);
  for (const dtype of ["f32", "bf16"] as const) {
    if (values.backend !== "cuda" && dtype === "bf16") continue;
    const values32 = Float32Array.from({ length: 1000 }, (_, i) => (i % 17) - 8.5);
    for (const op of ["sum", "avg"] as const) {
      const t = backend.upload(values32, [1000], dtype);
      const before = Array.from(backend.read(t));
      await comm.allReduce(t, op);
      const same = Array.from(backend.read(t)).every((v, i) => v === before[i]);
      (same ? (m: string) => lines.push(`- ${m}`) : fail)(`all-reduce ${op} ${dtype} over 1 rank leaves the tensor as it was`);
      t.free();
    }
    const b = backend.upload(values32, [1000], dtype);
    await comm.broadcast(b, 0);
    const kept = Array.from(backend.read(b)).every((v, i) => Math.abs(v - values32[i]!) < 1e-2);
    (kept ? (m: string) => lines.push(`- ${m}`) : fail)(`broadcast ${dtype} from rank 0 keeps the tensor`);
    b.free();
  }
  await comm.destroy();

  const root = await mkdtemp(join(tmpdir(), "splint-nccl-check-"));
  try {
    const config = { r: 4, lora_alpha: 8, lora_dropout: 0.1, per_device_train_batch_size: 1, gradient_accumulation_steps: 2, max_steps: 4, learning_rate: 5e-3, save_strategy: "no" as const, bf16: false, seed: 3 };
    const modelDir = join("test", "fixtures", "models", "tiny");
    const plain = await runTraining({ modelDir, dataset: tinyDataset(), outDir: join(root, "plain"), config, output: silent, backend });
    const communicator = await communicatorFor(WORLD_OF_ONE, backend);
    const through = await runTraining({ modelDir, dataset: tinyDataset(), outDir: join(root, "comm"), config, output: silent, backend, communicator });
    await communicator.destroy();
    const delta = await adapterDelta(plain.adapterDir, through.adapterDir);
    (delta <= 1e-6 ? (m: string) => lines.push(`- ${m}`) : fail)(`training through the communicator gives the plain run's adapter (max |Δ| ${delta})`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  mkdirSync(values.out, { recursive: true });
  writeFileSync(join(values.out, "nccl-check.md"), `${lines.join("\n")}\n`);
  process.stdout.write(`${lines.join("\n")}\n`);
}

await main();
