import assert from "node:assert/strict";
import { test } from "node:test";
import { type CudaBackend, createCudaBackend } from "../../src/backends/cuda/index.ts";

/**
 * The CUDA backend for a test file, or null and the skip reason when the library or a GPU is
 * absent. Also registers the test that fails instead of skipping where a GPU is required.
 */
export function cudaUnderTest(): { cuda: CudaBackend | null; skip: string | false } {
  let cuda: CudaBackend | null = null;
  let reason = "";
  try {
    cuda = createCudaBackend();
  } catch (err) {
    reason = (err as Error).message;
  }
  // scripts/gpu-check sets SPLINT_REQUIRE_CUDA=1: on the GPU machine a skip would hide a broken build.
  test("the CUDA backend is available where it is required", { skip: process.env.SPLINT_REQUIRE_CUDA !== "1" }, () => {
    assert.ok(cuda, reason);
  });
  return { cuda, skip: cuda ? false : `CUDA backend unavailable: ${reason}` };
}
