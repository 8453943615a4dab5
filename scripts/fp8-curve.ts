/**
 * The committed table of issue 13's "a tiny-model run trained from an FP8 checkpoint tracks the
 * same run from its BF16 dequantized copy": both 20-step runs of test/train/fp8-curve.ts, step by
 * step, as Markdown.
 *
 *   node --import tsx scripts/fp8-curve.ts --out bench/results/<date>-fp8-vs-bf16-tiny-cpu.md
 *   SPLINT_BACKEND=cuda (with the library built) runs them on the CUDA backend instead.
 */
import { writeFile } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";
import { referenceBackend } from "../test/helpers/reference.ts";
import { fp8Curves, FP8_CURVE_RECIPE } from "../test/train/fp8-curve.ts";

const { values } = parseArgs({ options: { out: { type: "string" } } });
const backend = referenceBackend();
const { fp8, bf16 } = await fp8Curves(backend);
let commit = "unknown";
try {
  commit = execFileSync("git", ["log", "-1", "--format=%h"], { encoding: "utf8" }).trim();
} catch {
  // no git on the device
}
const worst = Math.max(...fp8.map((s, i) => Math.abs(s.loss - bf16[i]!.loss)));
const lines = [
  `# Training from the FP8 tiny checkpoint vs its BF16-dequantized copy (${backend.name} backend)`,
  "",
  `${new Date().toISOString().slice(0, 10)}, commit ${commit}; \`scripts/fp8-curve.ts\` (runs of test/train/fp8-curve.ts).`,
  "",
  "`test/fixtures/models/tiny-fp8` (the 7 decoder linears per layer in e4m3 with a per-tensor weight_scale_inv) against a copy whose " +
    "fp8 weights are dequantized to BF16 as transformers does (W = bf16(fp8 · weight_scale_inv)). The fixtures' curve recipe " +
    `(r ${FP8_CURVE_RECIPE.r}, alpha ${FP8_CURVE_RECIPE.lora_alpha}, lr ${FP8_CURVE_RECIPE.learning_rate}, warm-up ${FP8_CURVE_RECIPE.warmup_steps}, ` +
    `${FP8_CURVE_RECIPE.gradient_accumulation_steps} micro-batches per step, clip ${FP8_CURVE_RECIPE.max_grad_norm}), the same initial adapter and micro-batches, ` +
    "bf16 matmul with the weights as stored. The FP8 run multiplies by the exact fp8 · scale; the copy by its bf16 rounding.",
  "",
  "| step | loss (FP8) | loss (BF16 copy) | Δ loss | grad norm (FP8) | grad norm (BF16 copy) |",
  "| ---: | ---: | ---: | ---: | ---: | ---: |",
  ...fp8.map((s, i) => {
    const b = bf16[i]!;
    return `| ${s.step} | ${s.loss.toFixed(5)} | ${b.loss.toFixed(5)} | ${(s.loss - b.loss).toExponential(2)} | ${s.grad_norm.toFixed(4)} | ${b.grad_norm.toFixed(4)} |`;
  }),
  "",
  `Largest |Δ loss|: ${worst.toExponential(2)} (the test's bound: 5e-3 per step).`,
  "",
];
const md = lines.join("\n");
if (values.out) await writeFile(values.out, md);
process.stdout.write(md);
