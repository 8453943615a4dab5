/**
 * Cross-check with Python `datasets` (opt-in: set SPLINT_PYTHON to a python that can
 * `import datasets`; skipped otherwise, as CI has no Python `datasets`). Python opens what
 * saveDatasetDict writes, and loadDatasetDict reads what Python's save_to_disk/to_parquet write.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadDatasetDict, saveDatasetDict } from "../../src/data/hf-dataset.ts";
import type { DatasetDict } from "../../src/data/types.ts";
import { jpegBytes, pngBytes } from "./import-fixtures.ts";

const python = process.env.SPLINT_PYTHON;
const available = python !== undefined && spawnSync(python, ["-c", "import datasets, PIL"]).status === 0;

const CHECK = `
import json, sys
from datasets import load_from_disk, load_dataset
arrow_dir, parquet_dir, out_dir = sys.argv[1:4]
result = {}
for name, ds in [("arrow", load_from_disk(arrow_dir)), ("parquet", load_dataset(parquet_dir))]:
    result[name] = {
        "splits": list(ds.keys()),
        "features": {k: type(v).__name__ for k, v in ds["train"].features.items()},
        "names": ds["train"].features["label"].names,
        "rows": {s: [[ex["image"].size[0], ex["image"].size[1], ex["image"].format, ex["label"]] for ex in ds[s]] for s in ds},
    }
ds = load_from_disk(arrow_dir)
ds.save_to_disk(out_dir + "/py_arrow")
import os
os.makedirs(out_dir + "/py_parquet/data")
ds["train"].to_parquet(out_dir + "/py_parquet/data/train-00000-of-00001.parquet")
import pyarrow as pa
def hf_metadata(folder):
    with pa.memory_map(folder + "/train/data-00000-of-00001.arrow") as source:
        return pa.ipc.open_stream(source).schema.metadata[b"huggingface"].decode()
result["metadata"] = [hf_metadata(arrow_dir), hf_metadata(out_dir + "/py_arrow")]
print(json.dumps(result))
`;

test("Python datasets opens both layouts with Image + ClassLabel, and splint reads Python's output", { skip: available ? false : "set SPLINT_PYTHON to a python with `datasets` installed" }, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "splint-py-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const dataset: DatasetDict = {
    classNames: ["Avulsion fracture", "Spiral Fracture (spirale, ü)"],
    splits: new Map([
      ["train", [{ image: { bytes: await pngBytes(1, 30, 20), path: "a/1.png" }, label: 0 }, { image: { bytes: await jpegBytes(2, 12, 9), path: null }, label: 1 }]],
      ["test", [{ image: { bytes: await pngBytes(3, 5, 7), path: "t.png" }, label: 1 }]],
    ]),
  };
  await saveDatasetDict(path.join(dir, "arrow"), dataset, "arrow");
  await saveDatasetDict(path.join(dir, "parquet"), dataset, "parquet");
  await mkdir(path.join(dir, "py"));
  const script = path.join(dir, "check.py");
  await writeFile(script, CHECK);
  const run = spawnSync(python!, [script, path.join(dir, "arrow"), path.join(dir, "parquet"), path.join(dir, "py")], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout.trim().split("\n").at(-1)!);
  const expectedRows = { train: [[30, 20, "PNG", 0], [12, 9, "JPEG", 1]], test: [[5, 7, "PNG", 1]] };
  for (const layout of ["arrow", "parquet"]) {
    assert.deepEqual(result[layout].splits, ["train", "test"], layout);
    assert.deepEqual(result[layout].features, { image: "Image", label: "ClassLabel" }, layout);
    assert.deepEqual(result[layout].names, dataset.classNames, layout);
    assert.deepEqual(result[layout].rows, expectedRows, layout);
  }
  // Python's own save_to_disk writes the same JSON files and Arrow schema metadata as ours.
  assert.equal(result.metadata[0], result.metadata[1]);
  for (const file of ["dataset_dict.json", "train/dataset_info.json"]) {
    assert.equal(await readFile(path.join(dir, "arrow", file), "utf8"), await readFile(path.join(dir, "py", "py_arrow", file), "utf8"), file);
  }
  const state = async (root: string) => {
    const { _fingerprint, ...rest } = JSON.parse(await readFile(path.join(root, "train", "state.json"), "utf8"));
    assert.match(_fingerprint, /^[0-9a-f]{16}$/);
    return rest;
  };
  assert.deepEqual(await state(path.join(dir, "arrow")), await state(path.join(dir, "py", "py_arrow")));
  for (const folder of ["py_arrow", "py_parquet"]) {
    const back = await loadDatasetDict(path.join(dir, "py", folder));
    assert.deepEqual(back.classNames, dataset.classNames, folder);
    assert.deepEqual(Buffer.from(back.splits.get("train")![1]!.image.bytes), Buffer.from(dataset.splits.get("train")![1]!.image.bytes), folder);
  }
});
