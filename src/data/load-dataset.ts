import { resolveDatasetRef } from "../hub/resolve.ts";
import type { Output } from "../util/output.ts";
import { loadDatasetDict } from "./hf-dataset.ts";
import type { DatasetDict } from "./types.ts";

export interface LoadedDataset {
  readonly dataset: DatasetDict;
  /** The local folder read (the given one, or the snapshot in the Hugging Face cache). */
  readonly dir: string;
  /** What to record as its source: the absolute folder, or the Hub id `owner/name[@revision]`. */
  readonly name: string;
}

/**
 * `--dataset`: a dataset folder (`splint data import`, Python `save_to_disk`, Hub-layout Parquet),
 * or a Hub dataset repo id, downloaded (Parquet/Arrow and JSON files only) into the shared cache.
 */
export async function loadDataset(idOrDir: string, options: { output?: Output; offline?: boolean } = {}): Promise<LoadedDataset> {
  const ref = await resolveDatasetRef(idOrDir, {
    ...(options.output ? { output: options.output } : {}),
    ...(options.offline ? { settings: { offline: true } } : {}),
  });
  return { dataset: await loadDatasetDict(ref.dir), dir: ref.dir, name: ref.name };
}
