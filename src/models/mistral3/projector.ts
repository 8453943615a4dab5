import type { Var } from "../../autograd/graph.ts";
import type { LoraLinear } from "../../lora/lora-linear.ts";
import { InputError } from "../../util/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { ForwardContext } from "./context.ts";
import type { ShapeConstants } from "./shape-constants.ts";

/**
 * The multimodal projector (transformers' Mistral3MultiModalProjector, ministral3.md §2.2):
 * RMSNorm → m×m patch merger (unfold, channel-major) → merging linear → linear_1 → GELU → linear_2.
 *
 * Dimension letters: P vision patches, Dv vision hidden, m spatial merge size, Dt text hidden.
 */

export interface Projector {
  norm: Tensor; // (Dv)
  mergingLayer: LoraLinear; // (Dv, Dv·m·m)
  linear1: LoraLinear; // (Dt, Dv)
  linear2: LoraLinear; // (Dt, Dt)
}

/**
 * The merger's gather map: for every image (grid rows × cols of patches, images concatenated), block
 * (i, j) becomes one row of width Dv·m·m whose element c·m² + ki·m + kj is patch (m·i+ki, m·j+kj)'s
 * channel c, as torch's F.unfold orders it; blocks row-major. out.flat[e] = x.flat[index[e]].
 */
export function patchMergerIndex(grids: readonly { rows: number; cols: number }[], channels: number, merge: number): Int32Array {
  const total = grids.reduce((n, g) => n + g.rows * g.cols, 0);
  const index = new Int32Array(total * channels);
  let e = 0;
  let base = 0; // first patch of the current image
  for (const { rows, cols } of grids) {
    for (let i = 0; i < rows / merge; i++) {
      for (let j = 0; j < cols / merge; j++) {
        for (let c = 0; c < channels; c++) {
          for (let ki = 0; ki < merge; ki++) {
            for (let kj = 0; kj < merge; kj++) {
              const patch = base + (merge * i + ki) * cols + (merge * j + kj);
              index[e++] = patch * channels + c;
            }
          }
        }
      }
    }
    base += rows * cols;
  }
  return index;
}

/** Vision features (P, Dv) → image features (P/m², Dt) in [IMG] order. */
export function runProjector(
  ctx: ForwardContext,
  projector: Projector,
  features: Var,
  grids: readonly { rows: number; cols: number }[],
  merge: number,
  eps: number,
  constants: ShapeConstants,
  capture?: (name: string, v: Var) => void,
): Var {
  for (const { rows, cols } of grids) {
    if (rows % merge !== 0 || cols % merge !== 0) {
      throw new InputError("pixel_values", `an image grid of ${rows}×${cols} patches is not divisible by spatial_merge_size ${merge}`, "image sides must be multiples of patch_size × spatial_merge_size (the processor resizes them so)");
    }
  }
  const g = ctx.graph;
  const [P, Dv] = features.value.shape as [number, number];
  const normed = g.rmsNorm(features, ctx.bind(projector.norm), eps);
  capture?.("projector.norm", normed);
  const gridKey = grids.map((gr) => `${gr.rows}x${gr.cols}`).join(",");
  const index = constants.get(g.backend, `merger:${gridKey}:${Dv}:${merge}`, () => ({ data: patchMergerIndex(grids, Dv, merge), shape: [P * Dv], dtype: "i32" }));
  const blocks = g.permute(normed, index, [P / (merge * merge), Dv * merge * merge]);
  const merged = projector.mergingLayer.forward(ctx, blocks);
  capture?.("projector.patch_merger", merged);
  const out = projector.linear2.forward(ctx, g.gelu(projector.linear1.forward(ctx, merged)));
  capture?.("projector.out", out);
  return out;
}
