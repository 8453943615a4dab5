import { SplintError } from "../util/errors.ts";
import type { DType } from "./dtype.ts";

/** An engine error that carries the op, the shapes and dtypes involved, and a hint the user can act on. */
export class TensorError extends SplintError {
  constructor(
    readonly op: string,
    message: string,
    readonly details: { shapes?: readonly (readonly number[])[]; dtypes?: readonly DType[]; hint?: string } = {},
  ) {
    const where = details.shapes ? ` shapes=${details.shapes.map((s) => `[${s.join(",")}]`).join(" ")}` : "";
    const types = details.dtypes ? ` dtypes=${details.dtypes.join(",")}` : "";
    super(`${op}: ${message}${where}${types}`, details.hint);
    this.name = "TensorError";
  }
}
