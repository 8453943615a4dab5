// What the reference-parity tests run on and read from. On a development machine or CI: the CPU
// backend and test/fixtures. scripts/gpu-check bundles the same tests and runs them with
// SPLINT_BACKEND=cuda and SPLINT_FIXTURES pointing at the fixtures, so the CUDA backend is held to
// the same transformers/peft fixtures and tolerances as the CPU backend.
import { join } from "node:path";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { createCudaBackend } from "../../src/backends/cuda/index.ts";
import type { Backend } from "../../src/tensor/backend.ts";

export const FIXTURES = process.env.SPLINT_FIXTURES ?? join(import.meta.dirname, "..", "fixtures");

export function referenceBackend(): Backend {
  return process.env.SPLINT_BACKEND === "cuda" ? createCudaBackend() : createCpuBackend();
}
