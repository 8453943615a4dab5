import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { cpuCommunicator, joinGroup } from "../../src/dist/group.ts";
import { runTraining, type TrainResult } from "../../src/train/run.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { quiet } from "../train/quiet-output.ts";
import { adapterDifference } from "./adapters.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "../train/tiny-dataset.ts";

/** worldSize ranks of one run in this process (TCP on 127.0.0.1), sharing outDir. */
async function trainRanks(worldSize: number, outDir: string, config: Record<string, unknown>, resume = false): Promise<TrainResult[]> {
  const first = await joinGroup({ rank: 0, worldSize, localRank: 0, masterAddr: "127.0.0.1", masterPort: 0 }, { timeoutMs: 60_000 });
  const rest = await Promise.all(Array.from({ length: worldSize - 1 }, (_, i) => joinGroup({ rank: i + 1, worldSize, localRank: i + 1, masterAddr: "127.0.0.1", masterPort: first.server!.port }, { timeoutMs: 60_000 })));
  return Promise.all(
    [first, ...rest].map(async (group) => {
      const communicator = cpuCommunicator(group, createCpuBackend());
      try {
        const result = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: resume ? undefined : config, resume, output: quiet, backend: createCpuBackend(), communicator });
        await communicator.destroy();
        return result;
      } catch (error) {
        communicator.abort();
        throw error;
      }
    }),
  );
}

for (const { worldSize, accumulation } of [
  { worldSize: 2, accumulation: 2 },
  { worldSize: 2, accumulation: 3 },
  { worldSize: 3, accumulation: 2 },
]) {
  test(`${worldSize} ranks splitting each step's ${accumulation} micro-batches train the adapter one process trains`, async () => {
    await withTempDir("splint-dp-", async (root) => {
      // Dropout on (TINY_RECIPE): the ranks must also use the one-process run's dropout seeds.
      const config = { ...TINY_RECIPE, gradient_accumulation_steps: accumulation };
      const single = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: join(root, "single"), config, output: quiet, backend: createCpuBackend() });
      const results = await trainRanks(worldSize, join(root, "dp"), config);
      // Every rank saw the same step records (losses, norms, token counts are all-reduced).
      for (const r of results) {
        assert.equal(r.history.length, single.history.length);
        r.history.forEach((h, i) => {
          const s = single.history[i]!;
          assert.equal(h.tokens, s.tokens, `step ${h.step} tokens`);
          assert.ok(Math.abs(h.loss - s.loss) < 1e-5, `step ${h.step}: loss ${h.loss} vs ${s.loss}`);
          assert.ok(Math.abs(h.grad_norm - s.grad_norm) < 1e-4 * Math.max(1, s.grad_norm), `step ${h.step}: grad_norm ${h.grad_norm} vs ${s.grad_norm}`);
        });
      }
      assert.ok(single.history[single.history.length - 1]!.loss < single.history[0]!.loss, "the loss goes down, so the adapter moved");
      const worst = await adapterDifference(single.adapterDir, results[0]!.adapterDir);
      assert.ok(worst < 1e-5, `adapter max |Δ| ${worst}`);
      // Rank 0 alone wrote the run folder: the same files as the one-process run.
      assert.deepEqual((await readdir(join(root, "dp"))).sort(), (await readdir(join(root, "single"))).sort());
      assert.deepEqual(await readdir(join(root, "dp", "checkpoints")), await readdir(join(root, "single", "checkpoints")));
    });
  });
}

test("a one-process run resumed on 2 ranks ends with the uninterrupted run's adapter (the data order does not depend on the rank count)", async () => {
  await withTempDir("splint-dp-", async (root) => {
    const straight = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: join(root, "straight"), config: TINY_RECIPE, output: quiet, backend: createCpuBackend() });
    const stopped = join(root, "stopped");
    const controller = new AbortController();
    await assert.rejects(
      runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: stopped, config: TINY_RECIPE, output: quiet, backend: createCpuBackend(), signal: controller.signal, onStep: (r) => r.step === 3 && controller.abort() }),
      /training stopped at step 4/,
    );
    const resumed = await trainRanks(2, stopped, TINY_RECIPE, true);
    // The stop saved the 3 finished steps; both ranks continue from there.
    assert.match(resumed[0]!.resumedFrom ?? "", /checkpoint-3$/);
    assert.deepEqual(resumed[1]!.history.map((r) => r.step), [4, 5, 6]);
    const worst = await adapterDifference(straight.adapterDir, resumed[0]!.adapterDir);
    assert.ok(worst < 1e-5, `adapter max |Δ| ${worst}`);
  });
});
