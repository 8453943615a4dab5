import { SplintError } from "../../util/errors.ts";

/** A failure inside the CUDA backend: the op, the library's "file:line op: message", and a hint. */
export class CudaError extends SplintError {
  constructor(
    readonly op: string,
    message: string,
    hint?: string,
  ) {
    super(`cuda ${op}: ${message}`, hint);
    this.name = "CudaError";
  }
}
