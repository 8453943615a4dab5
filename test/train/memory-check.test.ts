/**
 * `splint train`'s memory check on the tiny model, with --gpu-memory standing in for the card: the
 * printed plan, the setting it adopts (and writes into config.resolved.json), and the refusal
 * before any weight is loaded.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { MemoryPlanError } from "../../src/train/memory-check.ts";
import { runTraining } from "../../src/train/run.ts";
import type { Output } from "../../src/util/output.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { TINY_MODEL, tinyDataset } from "./tiny-dataset.ts";

const run = promisify(execFile);
const SPLINT = join(import.meta.dirname, "..", "..", "bin", "splint.js");
const RECIPE = { r: 4, lora_alpha: 8, per_device_train_batch_size: 2, gradient_accumulation_steps: 1, gradient_checkpointing: false, max_steps: 1, save_strategy: "no" as const, bf16: false };

function recording(): { output: Output; lines: string[] } {
  const lines: string[] = [];
  return { lines, output: { json: true, log: (line: string) => lines.push(line), result() {}, progress: () => ({ update() {}, increment() {}, stop() {} }) } };
}

test("with room to spare the plan is printed and the configured setting kept; a CPU run without --gpu-memory is not checked", async () => {
  await withTempDir("splint-memory-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const { output, lines } = recording();
    const roomy = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "roomy"), config: RECIPE, output, gpuMemoryBytes: 80 * 2 ** 30 });
    assert.ok(roomy.memory?.fits);
    assert.deepEqual(roomy.memory.changes, []);
    assert.match(lines.join("\n"), /memory plan \(80\.00 GiB from --gpu-memory\): weights 0\.00 GiB, LoRA with grads and bf16 copies .* card ≈ 0\.7\d GiB/);
    assert.match(lines.join("\n"), /memory plan setting: gradient_checkpointing false, micro-batch 2 × 1 accumulation steps$/m);
    const unchecked = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "unchecked"), config: RECIPE, output: recording().output });
    assert.equal(unchecked.memory, null);
  });
});

test("a card between the estimates gets recomputation and a halved micro-batch, recorded in config.resolved.json", async () => {
  await withTempDir("splint-memory-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    // A 1-byte card fits nothing: the refusal carries every setting tried, in order: as configured,
    // with selective recomputation, with full recomputation, with micro-batch 1.
    const refused = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "tight0"), config: RECIPE, output: recording().output, gpuMemoryBytes: 1 }).then(
      () => assert.fail("a 1-byte card fits nothing"),
      (e: unknown) => e,
    );
    assert.ok(refused instanceof MemoryPlanError);
    assert.match(
      refused.message,
      /tried checkpointing false, micro-batch 2: .*; checkpointing selective, micro-batch 2: .*; checkpointing true, micro-batch 2: .*; checkpointing true, micro-batch 1: /,
    );
    const tried = refused.decision.tried.map((t) => t.cardBytes);
    assert.equal(tried.length, 4);
    assert.ok(tried[3]! < tried[2]! && tried[2]! < tried[1]! && tried[1]! < tried[0]!, `${tried}`);
    const { output, lines } = recording();
    const result = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "tight"), config: RECIPE, output, gpuMemoryBytes: (tried[2]! + tried[3]!) / 2 });
    assert.ok(result.memory?.fits);
    assert.deepEqual(result.memory.setting, { gradient_checkpointing: true, per_device_train_batch_size: 1, gradient_accumulation_steps: 2 });
    assert.match(lines.join("\n"), /changed to fit: gradient_checkpointing false → true; per_device_train_batch_size 2 → 1, gradient_accumulation_steps 1 → 2/);
    const resolved = JSON.parse(await readFile(result.configFile, "utf8")) as Record<string, unknown>;
    assert.equal(resolved.per_device_train_batch_size, 1);
    assert.equal(resolved.gradient_accumulation_steps, 2);
    assert.equal(resolved.gradient_checkpointing, true);
  });
});

test("gradient_checkpointing auto keeps the activations when they fit (the fastest setting), else recomputes, and says which it took", async () => {
  await withTempDir("splint-memory-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const config = { ...RECIPE, gradient_checkpointing: "auto" as const };
    const roomy = recording();
    const kept = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "roomy"), config, output: roomy.output, gpuMemoryBytes: 80 * 2 ** 30 });
    assert.equal(kept.memory?.setting.gradient_checkpointing, false);
    assert.match(roomy.lines.join("\n"), /gradient_checkpointing auto → false \(the activations fit: kept, the fastest setting\)/);
    assert.equal(kept.memory.tried.length, 1, "the first setting tried, without recomputation, fits");
    const [withoutRecompute, selectively, withRecompute] = await triedOnTinyCard(root, dataset, config);
    assert.ok(withRecompute < selectively && selectively < withoutRecompute, `recomputation plans less memory: ${withRecompute} < ${selectively} < ${withoutRecompute}`);
    const between = recording();
    const selective = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "between"), config, output: between.output, gpuMemoryBytes: (withoutRecompute + selectively) / 2 });
    assert.equal(selective.memory?.setting.gradient_checkpointing, "selective");
    assert.match(between.lines.join("\n"), /gradient_checkpointing auto → selective \(every activation does not fit; the products' outputs do: norms and SwiGLU remade in the backward\)/);
    const tight = recording();
    const recomputed = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "tight"), config, output: tight.output, gpuMemoryBytes: (selectively + withRecompute) / 2 });
    assert.equal(recomputed.memory?.setting.gradient_checkpointing, true);
    assert.match(tight.lines.join("\n"), /gradient_checkpointing auto → true \(the activations of every layer do not fit: recomputed\)/);
    assert.equal((JSON.parse(await readFile(recomputed.configFile, "utf8")) as Record<string, unknown>).gradient_checkpointing, true);
    const cpu = recording();
    const unchecked = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "cpu"), config, output: cpu.output });
    assert.equal(unchecked.memory, null);
    assert.match(cpu.lines.join("\n"), /gradient_checkpointing auto → false \(no card to plan against/);
    assert.equal((JSON.parse(await readFile(unchecked.configFile, "utf8")) as Record<string, unknown>).gradient_checkpointing, false);
  });
});

/** The card estimates without, with selective and with full recomputation, from a refusal on a 1-byte card. */
async function triedOnTinyCard(root: string, dataset: string, config: typeof RECIPE | (Omit<typeof RECIPE, "gradient_checkpointing"> & { gradient_checkpointing: "auto" })): Promise<[number, number, number]> {
  const refused = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "probe"), config, output: recording().output, gpuMemoryBytes: 1 }).then(
    () => assert.fail("a 1-byte card fits nothing"),
    (e: unknown) => e,
  );
  assert.ok(refused instanceof MemoryPlanError);
  return [refused.decision.tried[0]!.cardBytes, refused.decision.tried[1]!.cardBytes, refused.decision.tried[2]!.cardBytes];
}

test("splint train refuses a run that cannot fit --gpu-memory, naming every setting tried, before loading weights", async () => {
  await withTempDir("splint-memory-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const out = join(root, "run");
    const args = [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--device", "cpu", "--r", "4", "--max-steps", "1"];
    const error = await run(process.execPath, [...args, "--gpu-memory", "0.5"], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" } }).then(
      () => assert.fail("expected a refusal"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(error.code, 1);
    assert.match(error.stderr, /this run needs about 0\.\d\d GiB of GPU memory even at its smallest setting, the card has 0\.50 GiB \(--gpu-memory\); tried checkpointing false, micro-batch 2: .*; checkpointing true, micro-batch 2: /);
    assert.ok(!existsSync(join(out, "config.resolved.json")), "nothing of the run was written");
    const bad = await run(process.execPath, [...args, "--gpu-memory", "lots"]).then(
      () => assert.fail("expected a failure"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--gpu-memory: expects a positive number of GiB, got "lots"/);
  });
});
