/**
 * Backend selection without a GPU (this runs everywhere, CI included): a missing library or device
 * falls back to the CPU backend and says why; asking for CUDA explicitly fails with a SplintError.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCudaBackend } from "../../src/backends/cuda/index.ts";
import { detectBackend } from "../../src/backends/cuda/detect.ts";
import { SplintError } from "../../src/util/errors.ts";

const missing = "/nonexistent/splint/libsplint_cuda.so";

test("a missing library falls back to the cpu backend and names the path", () => {
  const choice = detectBackend({ libPath: missing });
  assert.equal(choice.backend.name, "cpu");
  assert.match(choice.reason, /^cpu backend: CUDA unavailable/);
  assert.ok(choice.reason.includes(missing), choice.reason);
});

test("prefer: cpu skips CUDA; prefer: cuda refuses to fall back", () => {
  assert.equal(detectBackend({ prefer: "cpu", libPath: missing }).backend.name, "cpu");
  assert.throws(() => detectBackend({ prefer: "cuda", libPath: missing }), SplintError);
});

test("createCudaBackend without the library is a SplintError with a build hint", () => {
  assert.throws(
    () => createCudaBackend(missing),
    (err: unknown) => err instanceof SplintError && /does not exist/.test(err.message) && /make -C native\/cuda/.test(err.hint ?? ""),
  );
});

test("the fallback backend computes (a CPU op through the chosen backend)", () => {
  const { backend } = detectBackend({ libPath: missing });
  const x = backend.upload(Float32Array.of(1, -2, 3), [3], "f32");
  assert.deepEqual(Array.from(backend.read(backend.scale(x, 2))), [2, -4, 6]);
});
