/** Cross-entropy over rows of logits, forward and gradient in one pass (log-sum-exp in f64). */
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { rowsCols } from "../../tensor/checks.ts";
import { type CpuAllocator, i32Of, valuesF32 } from "./storage.ts";

/**
 * loss = Σ over counted rows of (logsumexp(row) − row[label]); rows labelled ignoreIndex count for
 * nothing. With gradScale: dlogits = gradScale·(softmax(row) − onehot(label)) on counted rows, 0
 * on ignored ones.
 */
export function crossEntropy(
  alloc: CpuAllocator,
  logits: Tensor,
  labels: Tensor,
  ignoreIndex: number,
  gradScale?: number,
): { loss: Tensor; dlogits?: Tensor } {
  const [n, vocab] = rowsCols(logits);
  const lab = i32Of(labels, "crossEntropy");
  if (lab.length !== n) throw new TensorError("crossEntropy", `labels must have one entry per row (${n})`, { shapes: [logits.shape, labels.shape] });
  const x = valuesF32(logits, "crossEntropy");
  const grad = gradScale === undefined ? null : new Float32Array(n * vocab);
  let total = 0;
  for (let r = 0; r < n; r++) {
    const label = lab[r]!;
    if (label === ignoreIndex) continue;
    if (label < 0 || label >= vocab) {
      throw new TensorError("crossEntropy", `label ${label} at row ${r} is outside the vocabulary 0..${vocab - 1}`, {
        shapes: [logits.shape],
        hint: `labels must be token ids or ${ignoreIndex}`,
      });
    }
    const o = r * vocab;
    let max = -Infinity;
    for (let j = 0; j < vocab; j++) if (x[o + j]! > max) max = x[o + j]!;
    let sum = 0;
    for (let j = 0; j < vocab; j++) sum += Math.exp(x[o + j]! - max);
    const lse = max + Math.log(sum);
    total += lse - x[o + label]!;
    if (grad) {
      const g = gradScale!;
      for (let j = 0; j < vocab; j++) grad[o + j] = g * Math.exp(x[o + j]! - lse);
      grad[o + label] = g * (Math.exp(x[o + label]! - lse) - 1);
    }
  }
  const loss = alloc.fromF32(Float32Array.of(total), [1]);
  return grad ? { loss, dlogits: alloc.fromF32(grad, logits.shape) } : { loss };
}
