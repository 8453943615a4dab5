/**
 * Picks the backend a command runs on: CUDA when the native library loads and sees a GPU, else
 * the CPU backend, with the reason in words so the CLI can say which backend runs and why.
 */
import type { Backend } from "../../tensor/backend.ts";
import { InputError } from "../../util/errors.ts";
import { createCpuBackend } from "../cpu/index.ts";
import { createCudaBackend } from "./index.ts";
import { defaultLibraryPath } from "./ffi.ts";

export interface BackendChoice {
  backend: Backend;
  /** One line: which backend runs, on what, and why (e.g. why not CUDA). */
  reason: string;
}

export type BackendPreference = "auto" | "cpu" | "cuda";

/** SPLINT_BACKEND=auto|cpu|cuda picks the backend for every command that does not say otherwise. */
export function backendPreference(value = process.env.SPLINT_BACKEND ?? "auto"): BackendPreference {
  if (value === "auto" || value === "cpu" || value === "cuda") return value;
  throw new InputError("SPLINT_BACKEND", `must be auto, cpu or cuda (got "${value}")`);
}

export interface DetectOptions {
  /** "cpu" skips CUDA; "cuda" throws when it is unavailable instead of falling back. Default: SPLINT_BACKEND, else "auto". */
  prefer?: BackendPreference;
  /** Library path (default: $SPLINT_CUDA_LIB or native/cuda/build/libsplint_cuda.so). */
  libPath?: string;
}

export function detectBackend(options: DetectOptions = {}): BackendChoice {
  const prefer = options.prefer ?? backendPreference();
  if (prefer === "cpu") return { backend: createCpuBackend(), reason: "cpu backend (requested)" };
  const libPath = options.libPath ?? defaultLibraryPath();
  try {
    const cuda = createCudaBackend(libPath);
    return { backend: cuda, reason: `cuda backend on ${cuda.device} (${libPath})` };
  } catch (err) {
    if (prefer === "cuda") throw err;
    return { backend: createCpuBackend(), reason: `cpu backend: CUDA unavailable (${(err as Error).message})` };
  }
}
