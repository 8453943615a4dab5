/**
 * The FP8 benchmark row (bench/train-step.ts --weights fp8): random e4m3 decoder linears with
 * per-tensor scales in the FP8 Instruct checkpoints' key layout, and a CPU smoke run of the script.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { parseMistral3Config } from "../../src/models/mistral3/config.ts";
import { expectedWeights } from "../../src/models/mistral3/weights.ts";
import { FP8_E4M3_TABLE } from "../../src/tensor/fp8.ts";
import { fp8CheckpointLayout, hfConfig, isFp8Linear, randomWeights } from "../../bench/workload.ts";

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "..", "..");

test("fp8 bench weights: the 7 decoder linears per layer are e4m3 with their own scale, everything else bf16", () => {
  const backend = createCpuBackend();
  const config = parseMistral3Config(hfConfig("tiny"));
  const weights = randomWeights(backend, config, false, 1, "fp8");
  const specs = expectedWeights(config);
  assert.equal(weights.size, specs.length);
  const fp8 = [...weights].filter(([, t]) => t.dtype === "fp8_e4m3");
  assert.equal(fp8.length, 7 * config.text_config.num_hidden_layers);
  assert.ok(fp8.every(([name]) => isFp8Linear(name)));
  assert.ok([...weights].every(([name, t]) => isFp8Linear(name) || t.dtype === "bf16"), "embeddings, norms, vision, projector and head stay bf16");
  assert.ok(new Set(fp8.map(([, t]) => t.scale)).size > 1, "per-tensor scales differ");
  // A weight reads back as e4m3 value × scale, within the random weights' bound (±0.0346, scale ≤ 1.06× amax/448).
  const [, q] = fp8[0]!;
  const raw = backend.readRaw(q) as Uint8Array;
  const values = backend.read(q) as Float32Array;
  for (let i = 0; i < 50; i++) assert.equal(values[i], Math.fround(FP8_E4M3_TABLE[raw[i]!]! * q.scale));
  assert.ok(values.every((v) => Math.abs(v) <= 0.0346 * 1.07));
  assert.ok(values.some((v) => v !== 0));
});

test("the FP8 key layout is the checkpoints': legacy names, a 0-d f32 weight_scale_inv and activation_scale per linear", () => {
  const config = parseMistral3Config(hfConfig("14b"));
  const layout = fp8CheckpointLayout(expectedWeights(config));
  assert.deepEqual(layout.get("language_model.model.layers.39.mlp.down_proj.weight"), { dtype: "F8_E4M3", shape: [5120, 16384] });
  assert.deepEqual(layout.get("language_model.model.layers.0.self_attn.k_proj.weight_scale_inv"), { dtype: "F32", shape: [] });
  assert.deepEqual(layout.get("language_model.model.layers.0.self_attn.k_proj.activation_scale"), { dtype: "F32", shape: [] });
  assert.equal(layout.get("language_model.lm_head.weight")?.dtype, "BF16");
  assert.equal(layout.get("language_model.model.embed_tokens.weight")?.dtype, "BF16");
  assert.equal(layout.get("vision_tower.transformer.layers.0.attention.q_proj.weight")?.dtype, "BF16");
  assert.equal(layout.get("multi_modal_projector.linear_1.weight")?.dtype, "BF16");
  assert.equal([...layout.values()].filter((t) => t.dtype === "F8_E4M3").length, 280);
  // 12.16 GB of fp8 linears: ministral3.md §5.3's shard arithmetic.
  const fp8Bytes = [...layout.values()].filter((t) => t.dtype === "F8_E4M3").reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  assert.equal(fp8Bytes, 12_163_481_600);
});

test("bench/train-step.ts --weights fp8 runs a step on the CPU backend and reports it beside the planner's estimate", async () => {
  const args = ["--import", "tsx", "bench/train-step.ts", "--backend", "cpu", "--size", "tiny", "--image-size", "56", "--prompt-tokens", "24", "--steps", "1", "--warmup", "0"];
  const rows = await Promise.all(
    ["fp8", "bf16"].map(async (kind) => {
      const { stdout } = await run(process.execPath, [...args, "--weights", kind], { cwd: ROOT });
      return JSON.parse(stdout.trim().split("\n").at(-1)!) as { weights: string; losses: number[]; medianMs: number; peakBytes: number; plannedPeakBytes: number; weightBytes: number };
    }),
  );
  const [fp8, bf16] = rows as [(typeof rows)[0], (typeof rows)[0]];
  assert.equal(fp8.weights, "fp8");
  assert.equal(bf16.weights, "bf16");
  assert.ok(fp8.losses.every(Number.isFinite) && fp8.medianMs > 0);
  // tiny: 2 layers × (64·(64 + 32 + 32 + 64) + 3·64·128) decoder linear elements, one byte instead of two.
  const fp8Elements = 2 * (64 * (64 + 32 + 32 + 64) + 3 * 64 * 128);
  assert.equal(bf16.weightBytes - fp8.weightBytes, fp8Elements);
  assert.ok(fp8.peakBytes > fp8.weightBytes);
  const ratio = fp8.plannedPeakBytes / fp8.peakBytes;
  assert.ok(ratio > 0.9 && ratio < 1.15, `planned ${fp8.plannedPeakBytes} vs measured ${fp8.peakBytes}`);
  // An unknown kind is refused by name.
  await assert.rejects(run(process.execPath, [...args, "--weights", "int4"], { cwd: ROOT }), /--weights must be one of bf16, fp8/);
});
