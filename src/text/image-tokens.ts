/**
 * [IMG] placeholder expansion as PixtralProcessor does it (ministral3.md §3): each `[IMG]` of the
 * rendered text becomes rows × ([IMG]×cols + [IMG_BREAK]) with the last [IMG_BREAK] turned into
 * [IMG_END], using the images' token grids in order.
 */
import { SplintError } from "../util/errors.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Token grid of one image: rows × cols [IMG] slots (resized size / (patch × merge)). */
export interface ImageGrid {
  rows: number;
  cols: number;
}

export interface ImageTokenIds {
  imgId: number;
  imgBreakId: number;
  imgEndId: number;
}

export function imageTokenCount(grid: ImageGrid): number {
  return grid.rows * (grid.cols + 1);
}

/** Replaces each [IMG] id with its image's full token block. */
export function expandImageTokens(ids: readonly number[], grids: readonly ImageGrid[], tok: ImageTokenIds): number[] {
  const placeholders = ids.reduce((n, id) => n + (id === tok.imgId ? 1 : 0), 0);
  if (placeholders !== grids.length) {
    throw new SplintError(
      `the prompt has ${placeholders} [IMG] placeholder(s) but ${grids.length} image(s) were given`,
      "each image needs one {type: image} block in the conversation, in order",
    );
  }
  const out: number[] = [];
  let next = 0;
  for (const id of ids) {
    if (id !== tok.imgId) {
      out.push(id);
      continue;
    }
    const { rows, cols } = grids[next++]!;
    if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0)) {
      throw new SplintError(`image ${next - 1} has an invalid token grid ${rows}×${cols}`);
    }
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) out.push(tok.imgId);
      out.push(r === rows - 1 ? tok.imgEndId : tok.imgBreakId);
    }
  }
  return out;
}

export type TokenKind = "text" | "image" | "image_break" | "image_end" | "special";

export interface ChatTokens {
  ids: number[];
  kinds: TokenKind[];
  /** Which image an image/image_break/image_end token belongs to; -1 for other tokens. */
  imageIndex: number[];
}

/** Tokenizes rendered chat text (special tokens recognised, no BOS added) and expands its images. */
export function tokenizeChat(tokenizer: Tokenizer, text: string, grids: readonly ImageGrid[]): ChatTokens {
  const ids = expandImageTokens(tokenizer.encode(text), grids, tokenizer);
  const kinds: TokenKind[] = [];
  const imageIndex: number[] = [];
  let image = -1;
  let inImage = false;
  for (const id of ids) {
    let kind: TokenKind;
    if (id === tokenizer.imgId) kind = "image";
    else if (id === tokenizer.imgBreakId) kind = "image_break";
    else if (id === tokenizer.imgEndId) kind = "image_end";
    else kind = tokenizer.isSpecial(id) ? "special" : "text";
    const isImageToken = kind === "image" || kind === "image_break" || kind === "image_end";
    if (isImageToken && !inImage) image++;
    inImage = isImageToken && kind !== "image_end";
    kinds.push(kind);
    imageIndex.push(isImageToken ? image : -1);
  }
  return { ids, kinds, imageIndex };
}
