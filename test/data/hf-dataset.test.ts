import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DataType, tableFromIPC, type Struct, type Table } from "apache-arrow";
import { readParquet } from "parquet-wasm";
import YAML from "yaml";
import { loadDatasetDict, saveDatasetDict } from "../../src/data/hf-dataset.ts";
import type { DatasetDict, DatasetRow } from "../../src/data/types.ts";
import { InputError } from "../../src/util/errors.ts";

function row(seed: number, label: number, withPath = true): DatasetRow {
  const bytes = new Uint8Array(10 + seed).map((_, i) => (i * 31 + seed) & 255);
  return { image: { bytes, path: withPath ? `cls${label}/img${seed}.png` : null }, label };
}

const sample: DatasetDict = {
  classNames: ["Avulsion fracture", "Comminuted fracture", "Spiral Fracture"],
  splits: new Map([
    ["train", Array.from({ length: 230 }, (_, i) => row(i, i % 3, i % 7 !== 0))],
    ["validation", [row(500, 2)]],
    ["test", [row(600, 0), row(601, 1)]],
  ]),
};

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "splint-hf-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function assertSameDataset(actual: DatasetDict, expected: DatasetDict): void {
  assert.deepEqual(actual.classNames, expected.classNames);
  assert.deepEqual([...actual.splits.keys()], [...expected.splits.keys()]);
  for (const [split, rows] of expected.splits) {
    const got = actual.splits.get(split)!;
    assert.equal(got.length, rows.length, split);
    rows.forEach((r, i) => {
      assert.deepEqual(Buffer.from(got[i]!.image.bytes), Buffer.from(r.image.bytes), `${split}[${i}] bytes`);
      assert.equal(got[i]!.image.path, r.image.path, `${split}[${i}] path`);
      assert.equal(got[i]!.label, r.label, `${split}[${i}] label`);
    });
  }
}

function assertHfSchema(table: Table, classNames: readonly string[]): void {
  const [image, label] = table.schema.fields;
  assert.equal(image!.name, "image");
  assert.equal(DataType.isStruct(image!.type), true, "image is a struct");
  const children = (image!.type as Struct).children;
  assert.deepEqual(children.map((c) => c.name), ["bytes", "path"]);
  assert.equal(DataType.isBinary(children[0]!.type), true, "bytes is binary");
  assert.equal(DataType.isUtf8(children[1]!.type), true, "path is utf8");
  assert.equal(label!.name, "label");
  assert.equal(String(label!.type), "Int64");
  const meta = JSON.parse(table.schema.metadata.get("huggingface")!);
  assert.deepEqual(meta.info.features, { image: { _type: "Image" }, label: { names: classNames, _type: "ClassLabel" } });
}

test("arrow layout follows save_to_disk: dataset_dict.json, state.json, dataset_info.json, IPC stream with features", async (t) => {
  const dir = path.join(await tempDir(t), "ds");
  await saveDatasetDict(dir, sample, "arrow");
  assert.deepEqual(JSON.parse(await readFile(path.join(dir, "dataset_dict.json"), "utf8")), { splits: ["train", "validation", "test"] });
  const state = JSON.parse(await readFile(path.join(dir, "train", "state.json"), "utf8"));
  assert.deepEqual(state._data_files, [{ filename: "data-00000-of-00001.arrow" }]);
  assert.equal(state._split, "train");
  assert.match(state._fingerprint, /^[0-9a-f]{16}$/);
  assert.equal(state._format_type, null);
  assert.deepEqual(state._format_kwargs, {});
  const info = JSON.parse(await readFile(path.join(dir, "train", "dataset_info.json"), "utf8"));
  assert.deepEqual(info.features.label, { names: sample.classNames, _type: "ClassLabel" });

  const bytes = await readFile(path.join(dir, "train", "data-00000-of-00001.arrow"));
  // IPC *stream* (what datasets' ArrowWriter writes) has no "ARROW1" file magic at the start.
  assert.notEqual(bytes.subarray(0, 6).toString("latin1"), "ARROW1");
  const table = tableFromIPC(bytes);
  assertHfSchema(table, sample.classNames);
  assert.equal(table.numRows, 230);
  assert.ok(table.batches.length > 1, "written in several record batches");
  assert.equal(Number(table.getChild("label")!.get(4)), 1);
  assert.equal(table.getChild("image")!.get(7).path, null, "null path kept as null");

  assertSameDataset(await loadDatasetDict(dir), sample);
});

test("parquet layout: data/<split>-00000-of-00001.parquet with huggingface metadata and a README card", async (t) => {
  const dir = path.join(await tempDir(t), "ds");
  await saveDatasetDict(dir, sample, "parquet");
  assert.deepEqual((await readdir(path.join(dir, "data"))).sort(), [
    "test-00000-of-00001.parquet",
    "train-00000-of-00001.parquet",
    "validation-00000-of-00001.parquet",
  ]);
  const table = tableFromIPC(readParquet(await readFile(path.join(dir, "data", "train-00000-of-00001.parquet"))).intoIPCStream());
  assertHfSchema(table, sample.classNames);

  const readme = await readFile(path.join(dir, "README.md"), "utf8");
  const card = YAML.parse(/^---\n([\s\S]*?)\n---/.exec(readme)![1]!);
  assert.deepEqual(card.dataset_info.features[0], { name: "image", dtype: "image" });
  assert.deepEqual(card.dataset_info.features[1].dtype.class_label.names, { "0": "Avulsion fracture", "1": "Comminuted fracture", "2": "Spiral Fracture" });
  assert.deepEqual(
    card.dataset_info.splits.map((s: { name: string; num_examples: number }) => [s.name, s.num_examples]),
    [["train", 230], ["validation", 1], ["test", 2]],
  );
  assert.deepEqual(card.configs[0].data_files[0], { split: "train", path: "data/train-*" });

  assertSameDataset(await loadDatasetDict(dir), sample);
});

test("saving over an existing dataset replaces it and leaves no temp folders behind", async (t) => {
  const parent = await tempDir(t);
  const dir = path.join(parent, "ds");
  await saveDatasetDict(dir, sample, "arrow");
  const smaller: DatasetDict = { classNames: ["x", "y"], splits: new Map([["train", [row(1, 1)]]]) };
  await saveDatasetDict(dir, smaller, "parquet");
  assertSameDataset(await loadDatasetDict(dir), smaller);
  assert.deepEqual(await readdir(parent), ["ds"]);
});

test("refuses to overwrite a folder that is not a dataset", async (t) => {
  const dir = await tempDir(t);
  await writeFile(path.join(dir, "notes.txt"), "mine");
  await assert.rejects(saveDatasetDict(dir, sample, "arrow"), (e) => e instanceof InputError && /not a dataset folder/.test(e.message));
  assert.deepEqual(await readdir(dir), ["notes.txt"]);
});

test("refuses labels outside the class list before writing anything", async (t) => {
  const parent = await tempDir(t);
  const bad: DatasetDict = { classNames: ["a"], splits: new Map([["train", [row(1, 3)]]]) };
  await assert.rejects(saveDatasetDict(path.join(parent, "ds"), bad, "arrow"), InputError);
  assert.deepEqual(await readdir(parent), []);
});

test("loading a folder that is not a dataset is a clear InputError", async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(loadDatasetDict(path.join(dir, "missing")), (e) => e instanceof InputError && /does not exist/.test(e.message));
  await mkdir(path.join(dir, "plain"));
  await writeFile(path.join(dir, "plain", "a.png"), "x");
  await assert.rejects(loadDatasetDict(path.join(dir, "plain")), (e) => e instanceof InputError && /not a dataset folder/.test(e.message));
  await mkdir(path.join(dir, "broken"));
  await writeFile(path.join(dir, "broken", "dataset_dict.json"), '{"splits":["train"]}');
  await mkdir(path.join(dir, "broken", "train"));
  await writeFile(path.join(dir, "broken", "train", "state.json"), '{"_data_files":[{"filename":"data-00000-of-00001.arrow"}]}');
  await writeFile(path.join(dir, "broken", "train", "data-00000-of-00001.arrow"), "not arrow");
  await assert.rejects(loadDatasetDict(path.join(dir, "broken")), (e) => e instanceof InputError && /not a readable Arrow/.test(e.message));
});
