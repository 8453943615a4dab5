import type { MatmulPrecision } from "../tensor/backend.ts";
import { InputError } from "../util/errors.ts";

/** The --matmul flag that the inference commands share (training takes it from bf16). */
export const MATMUL_FLAG = "--matmul <precision>";
export const MATMUL_FLAG_HELP =
  "f32 (exact) or bf16: activations rounded to bf16 where they meet bf16/fp8 weights, as PyTorch runs a bf16 model (tensor cores on a GPU)";

export function parseMatmulPrecision(text: string): MatmulPrecision {
  if (text !== "f32" && text !== "bf16") throw new InputError("--matmul", `must be f32 or bf16, got ${JSON.stringify(text)}`);
  return text;
}
