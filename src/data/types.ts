/**
 * The in-memory form of a Hugging Face `DatasetDict` with features
 * {image: Image(), label: ClassLabel(names)} — what `splint data import` writes and every other
 * command (stats, audit, train, eval) reads.
 */
export interface ImageCell {
  /** Encoded image file (PNG/JPEG) exactly as imported. */
  readonly bytes: Uint8Array;
  /** Original file name relative to the import root, or null. */
  readonly path: string | null;
}

export interface DatasetRow {
  readonly image: ImageCell;
  /** Index into DatasetDict.classNames. */
  readonly label: number;
}

export interface DatasetDict {
  /** Class names in ClassLabel order (sorted, as the tutorial's label ids). */
  readonly classNames: readonly string[];
  /** Split name ("train", "test", "validation") → rows. */
  readonly splits: ReadonlyMap<string, readonly DatasetRow[]>;
}
