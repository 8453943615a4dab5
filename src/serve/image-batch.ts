import type { ImageBatch } from "../models/mistral3/model.ts";

/**
 * Joins the images of several requests into one batch: each request's pixels were padded to its
 * own largest image, the batch pads them all to the largest of any (zeros bottom/right, as the
 * processor pads), and keeps every image's real size so the vision tower crops the padding away.
 */
export function concatImageBatches(parts: readonly ImageBatch[]): ImageBatch | undefined {
  const present = parts.filter((p) => p.shape[0] > 0);
  if (present.length === 0) return undefined;
  if (present.length === 1) return present[0];
  const C = present[0]!.shape[1];
  const H = Math.max(...present.map((p) => p.shape[2]));
  const W = Math.max(...present.map((p) => p.shape[3]));
  const N = present.reduce((n, p) => n + p.shape[0], 0);
  const pixelValues = new Float32Array(N * C * H * W);
  const imageSizes = new Int32Array(2 * N);
  let at = 0;
  for (const p of present) {
    const [n, c, h, w] = p.shape;
    if (c !== C) throw new Error(`concatImageBatches: ${c} channels next to ${C}`);
    for (let i = 0; i < n; i++, at++) {
      for (let ch = 0; ch < c; ch++) {
        for (let y = 0; y < h; y++) {
          const src = ((i * c + ch) * h + y) * w;
          pixelValues.set(p.pixelValues.subarray(src, src + w), ((at * C + ch) * H + y) * W);
        }
      }
      imageSizes[2 * at] = p.imageSizes[2 * i]!;
      imageSizes[2 * at + 1] = p.imageSizes[2 * i + 1]!;
    }
  }
  return { pixelValues, shape: [N, C, H, W], imageSizes };
}
