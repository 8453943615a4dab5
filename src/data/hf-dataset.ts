/**
 * Reads and writes a DatasetDict in the two on-disk forms Hugging Face `datasets` understands:
 *
 * - "arrow": the `save_to_disk` folder that `datasets.load_from_disk()` opens —
 *   `dataset_dict.json` plus one folder per split holding `data-0000i-of-0000N.arrow` (Arrow IPC
 *   *stream*, schema metadata `huggingface`), `dataset_info.json` and `state.json`.
 * - "parquet": the Hub layout `push_to_hub` produces — `data/<split>-0000i-of-0000N.parquet` plus a
 *   README.md whose YAML front matter declares the features and splits.
 *
 * Features are always {image: Image(), label: ClassLabel(names)}: Image is the struct
 * {bytes: binary, path: string} with the encoded file inlined, so the folder is self-contained.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  Binary,
  Field,
  Int64,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  tableFromIPC,
  Utf8,
  type Table,
} from "apache-arrow";
import { Compression, readParquet, Table as WasmTable, writeParquet, WriterPropertiesBuilder } from "parquet-wasm";
import YAML from "yaml";
import { writeDirAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import type { DatasetDict, DatasetRow } from "./types.ts";

export type DatasetFormat = "arrow" | "parquet";

/** `datasets` caps a save_to_disk shard at 500 MB (config.MAX_SHARD_SIZE); we shard the same way. */
const MAX_SHARD_BYTES = 500 * 1024 * 1024;
/** `datasets` writes image datasets in record batches of 100 rows (ARROW_RECORD_BATCH_SIZE_FOR_IMAGE_DATASETS). */
const ROWS_PER_BATCH = 100;
const HF_METADATA_KEY = "huggingface";

interface HfFeatures {
  image: { _type: "Image" };
  label: { names: string[]; _type: "ClassLabel" };
}

function hfFeatures(classNames: readonly string[]): HfFeatures {
  // Key order and omitted defaults follow datasets' asdict(): it drops fields equal to their default.
  return { image: { _type: "Image" }, label: { names: [...classNames], _type: "ClassLabel" } };
}

/** The Arrow schema `datasets` derives from the features: every field nullable, Image = struct<bytes, path>. */
function arrowSchema(classNames: readonly string[]): Schema {
  const imageType = new Struct([new Field("bytes", new Binary(), true), new Field("path", new Utf8(), true)]);
  const metadata = { info: { features: hfFeatures(classNames) } };
  return new Schema(
    [new Field("image", imageType, true), new Field("label", new Int64(), true)],
    new Map([[HF_METADATA_KEY, pythonJsonDumps(metadata)]]),
  );
}

/**
 * JSON as Python's json.dumps writes it (", " and ": " separators, non-ASCII escaped), so the
 * files and metadata match what `datasets` itself writes byte for byte.
 */
function pythonJsonDumps(value: unknown, indent?: number): string {
  const text = indent === undefined ? compactPythonJson(value) : JSON.stringify(value, null, indent);
  return text.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function compactPythonJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(compactPythonJson).join(", ")}]`;
  if (typeof value === "object" && value !== null) {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${compactPythonJson(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

function recordBatch(schema: Schema, rows: readonly DatasetRow[]): RecordBatch {
  const n = rows.length;
  const byteOffsets = new Int32Array(n + 1);
  const pathOffsets = new Int32Array(n + 1);
  const pathValidity = new Uint8Array(Math.ceil(n / 8));
  const encoder = new TextEncoder();
  const encodedPaths = rows.map((row) => (row.image.path === null ? null : encoder.encode(row.image.path)));
  let byteTotal = 0;
  let pathTotal = 0;
  let pathNulls = 0;
  for (let i = 0; i < n; i++) {
    byteTotal += rows[i]!.image.bytes.length;
    byteOffsets[i + 1] = byteTotal;
    const encoded = encodedPaths[i]!;
    if (encoded === null) pathNulls++;
    else {
      pathValidity[i >> 3]! |= 1 << (i & 7);
      pathTotal += encoded.length;
    }
    pathOffsets[i + 1] = pathTotal;
  }
  const byteValues = new Uint8Array(byteTotal);
  const pathValues = new Uint8Array(pathTotal);
  const labels = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    byteValues.set(rows[i]!.image.bytes, byteOffsets[i]!);
    const encoded = encodedPaths[i]!;
    if (encoded !== null) pathValues.set(encoded, pathOffsets[i]!);
    labels[i] = BigInt(rows[i]!.label);
  }
  const imageType = schema.fields[0]!.type as Struct;
  const [bytesField, pathField] = imageType.children as [Field<Binary>, Field<Utf8>];
  const bytesData = makeData({ type: bytesField.type, length: n, nullCount: 0, valueOffsets: byteOffsets, data: byteValues });
  const pathData = makeData({
    type: pathField.type,
    length: n,
    nullCount: pathNulls,
    nullBitmap: pathNulls > 0 ? pathValidity : null,
    valueOffsets: pathOffsets,
    data: pathValues,
  });
  const imageData = makeData({ type: imageType, length: n, nullCount: 0, children: [bytesData, pathData] });
  const labelData = makeData({ type: new Int64(), length: n, nullCount: 0, data: labels });
  const rowType = new Struct(schema.fields);
  return new RecordBatch(schema, makeData({ type: rowType, length: n, nullCount: 0, children: [imageData, labelData] }));
}

function ipcStream(schema: Schema, rows: readonly DatasetRow[]): Uint8Array {
  const writer = new RecordBatchStreamWriter();
  writer.reset(undefined, schema);
  for (let start = 0; start < rows.length; start += ROWS_PER_BATCH) {
    writer.write(recordBatch(schema, rows.slice(start, start + ROWS_PER_BATCH)));
  }
  if (rows.length === 0) writer.write(recordBatch(schema, []));
  writer.finish();
  return writer.toUint8Array(true);
}

function splitBytes(rows: readonly DatasetRow[]): number {
  let total = 0;
  for (const row of rows) total += row.image.bytes.length + (row.image.path?.length ?? 0) + 8;
  return total;
}

/** Contiguous shards of near-equal row counts, as Dataset.shard(num_shards, i, contiguous=True). */
function shards(rows: readonly DatasetRow[]): (readonly DatasetRow[])[] {
  const count = Math.max(1, Math.ceil(splitBytes(rows) / MAX_SHARD_BYTES));
  const result: (readonly DatasetRow[])[] = [];
  const base = Math.floor(rows.length / count);
  const extra = rows.length % count;
  let start = 0;
  for (let i = 0; i < count; i++) {
    const size = base + (i < extra ? 1 : 0);
    result.push(rows.slice(start, start + size));
    start += size;
  }
  return result;
}

function shardName(prefix: string, index: number, count: number, ext: string): string {
  return `${prefix}${String(index).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.${ext}`;
}

/** A 16-hex-digit content fingerprint, the form `datasets` uses for `_fingerprint`. */
function fingerprint(split: string, classNames: readonly string[], rows: readonly DatasetRow[]): string {
  const hash = createHash("sha256").update(split).update(JSON.stringify(classNames));
  for (const row of rows) hash.update(row.image.bytes).update(`${row.image.path}\u0000${row.label}`);
  return hash.digest("hex").slice(0, 16);
}

function checkDataset(dir: string, dataset: DatasetDict): void {
  if (dataset.splits.size === 0) throw new InputError(dir, "refusing to write a dataset with no splits");
  for (const [split, rows] of dataset.splits) {
    if (!/^[\w.-]+$/.test(split)) throw new InputError(dir, `split name ${JSON.stringify(split)} is not a plain word`);
    for (const row of rows) {
      if (!Number.isInteger(row.label) || row.label < 0 || row.label >= dataset.classNames.length) {
        throw new InputError(dir, `split ${split}: label ${row.label} is outside the ${dataset.classNames.length} classes`);
      }
    }
  }
}

async function writeArrowLayout(root: string, dataset: DatasetDict): Promise<void> {
  const splitNames = [...dataset.splits.keys()];
  for (const [split, rows] of dataset.splits) {
    const splitDir = path.join(root, split);
    await mkdir(splitDir, { recursive: true });
    const fp = fingerprint(split, dataset.classNames, rows);
    const schema = arrowSchema(dataset.classNames);
    const parts = shards(rows);
    const files = parts.map((_, i) => shardName("data-", i, parts.length, "arrow"));
    for (let i = 0; i < parts.length; i++) await writeFile(path.join(splitDir, files[i]!), ipcStream(schema, parts[i]!));
    const info = { citation: "", description: "", features: hfFeatures(dataset.classNames), homepage: "", license: "" };
    await writeFile(path.join(splitDir, "dataset_info.json"), pythonJsonDumps(info, 2));
    const state = {
      _data_files: files.map((filename) => ({ filename })),
      _fingerprint: fp,
      _format_columns: null,
      _format_kwargs: {},
      _format_type: null,
      _output_all_columns: false,
      _split: split,
    };
    await writeFile(path.join(splitDir, "state.json"), pythonJsonDumps(state, 2));
  }
  await writeFile(path.join(root, "dataset_dict.json"), pythonJsonDumps({ splits: splitNames }));
}

async function writeParquetLayout(root: string, dataset: DatasetDict): Promise<void> {
  const dataDir = path.join(root, "data");
  await mkdir(dataDir, { recursive: true });
  const splitInfo: { name: string; num_bytes: number; num_examples: number }[] = [];
  let downloadSize = 0;
  for (const [split, rows] of dataset.splits) {
    const schema = arrowSchema(dataset.classNames);
    const hfJson = schema.metadata.get(HF_METADATA_KEY)!;
    const parts = shards(rows);
    for (let i = 0; i < parts.length; i++) {
      const properties = new WriterPropertiesBuilder()
        .setCompression(Compression.SNAPPY)
        .setKeyValueMetadata(new Map([[HF_METADATA_KEY, hfJson]]))
        .build();
      const parquet = writeParquet(WasmTable.fromIPCStream(ipcStream(schema, parts[i]!)), properties);
      await writeFile(path.join(dataDir, shardName(`${split}-`, i, parts.length, "parquet")), parquet);
      downloadSize += parquet.length;
    }
    splitInfo.push({ name: split, num_bytes: splitBytes(rows), num_examples: rows.length });
  }
  const names: Record<string, string> = {};
  dataset.classNames.forEach((name, i) => (names[String(i)] = name));
  const card = {
    dataset_info: {
      features: [
        { name: "image", dtype: "image" },
        { name: "label", dtype: { class_label: { names } } },
      ],
      splits: splitInfo,
      download_size: downloadSize,
      dataset_size: splitInfo.reduce((sum, s) => sum + s.num_bytes, 0),
    },
    configs: [
      {
        config_name: "default",
        data_files: [...dataset.splits.keys()].map((split) => ({ split, path: `data/${split}-*` })),
      },
    ],
  };
  const counts = splitInfo.map((s) => `${s.name}: ${s.num_examples}`).join(", ");
  const readme =
    `---\n${YAML.stringify(card)}---\n\n` +
    `Image classification dataset written by splint: ${dataset.classNames.length} classes (${counts}).\n\n` +
    "```python\nfrom datasets import load_dataset\nds = load_dataset(\"parquet\", data_dir=\"data\")  # or load_dataset(\"<this folder>\")\n```\n";
  await writeFile(path.join(root, "README.md"), readme);
}

/**
 * Writes `dataset` to `dir` in the chosen layout. Atomic: everything is written to a sibling temp
 * folder that is renamed into place at the end, so `dir` is never half-written. An existing
 * dataset at `dir` is replaced; any other non-empty folder there is refused.
 */
export async function saveDatasetDict(dir: string, dataset: DatasetDict, format: DatasetFormat): Promise<void> {
  checkDataset(dir, dataset);
  const target = path.resolve(dir);
  const existing = await existingKind(target);
  if (existing === "other") {
    throw new InputError(dir, "exists and is not a dataset folder; refusing to overwrite it", "choose another output folder");
  }
  // writeDirAtomic moves an existing (empty or dataset) folder aside, swaps, then deletes it.
  await writeDirAtomic(target, (temp) =>
    format === "arrow" ? writeArrowLayout(temp, dataset) : writeParquetLayout(temp, dataset),
  );
}

async function existingKind(dir: string): Promise<"none" | "empty" | "dataset" | "other"> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "none";
    throw new InputError(dir, `cannot read the output folder (${(error as Error).message})`);
  }
  if (entries.length === 0) return "empty";
  if (entries.includes("dataset_dict.json")) return "dataset";
  if (entries.includes("README.md") && entries.includes("data") && (await parquetShards(dir)).length > 0) return "dataset";
  return "other";
}

// ---------------------------------------------------------------------------------------------
// Reading

interface SplitShardFile {
  split: string;
  file: string;
}

async function parquetShards(dir: string): Promise<SplitShardFile[]> {
  let names: string[];
  try {
    names = await readdir(path.join(dir, "data"));
  } catch {
    return [];
  }
  const result: SplitShardFile[] = [];
  for (const name of names.sort()) {
    const match = /^(.+?)-\d{5}-of-\d{5}\.parquet$/.exec(name) ?? /^(.+?)(?:-\d+)?\.parquet$/.exec(name);
    if (match) result.push({ split: match[1]!, file: path.join(dir, "data", name) });
  }
  return result;
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new InputError(file, `cannot read (${(error as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InputError(file, `is not valid JSON (${(error as Error).message})`);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Class names from a `huggingface` metadata JSON ({info:{features:{label:{names}}}}), or null. */
function classNamesFromHfMetadata(json: string | undefined): string[] | null {
  if (json === undefined) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return null;
  }
  const info = isRecord(parsed) ? parsed.info : undefined;
  const features = isRecord(info) ? info.features : undefined;
  return classNamesFromFeatures(features);
}

function classNamesFromFeatures(features: unknown): string[] | null {
  if (!isRecord(features)) return null;
  const label = features.label;
  if (!isRecord(label) || label._type !== "ClassLabel" || !Array.isArray(label.names)) return null;
  if (!label.names.every((n): n is string => typeof n === "string")) return null;
  return label.names;
}

function rowsFromTable(file: string, table: Table): DatasetRow[] {
  const image = table.getChild("image");
  const label = table.getChild("label");
  if (!image || !label) {
    throw new InputError(file, `expected columns "image" and "label", found ${table.schema.fields.map((f) => f.name).join(", ")}`);
  }
  const rows: DatasetRow[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const cell = image.get(i) as { bytes: Uint8Array | null; path: string | null } | null;
    const rawLabel = label.get(i) as bigint | number | null;
    if (cell === null || cell.bytes === null || cell.bytes === undefined) {
      throw new InputError(file, `row ${i}: image has no inline bytes (only path ${cell?.path ?? "null"})`, "re-save the dataset with embedded images");
    }
    if (rawLabel === null || Number(rawLabel) < 0) throw new InputError(file, `row ${i}: missing label`);
    // Copy out of the Arrow buffer so rows do not pin the whole file in memory.
    rows.push({ image: { bytes: cell.bytes.slice(), path: cell.path ?? null }, label: Number(rawLabel) });
  }
  return rows;
}

function checkLabels(file: string, rows: readonly DatasetRow[], classNames: readonly string[]): void {
  for (const row of rows) {
    if (row.label >= classNames.length) {
      throw new InputError(file, `label ${row.label} is outside the ${classNames.length} ClassLabel names`);
    }
  }
}

async function loadArrowLayout(dir: string): Promise<DatasetDict> {
  const dictFile = path.join(dir, "dataset_dict.json");
  const dict = await readJson(dictFile);
  if (!isRecord(dict) || !Array.isArray(dict.splits) || !dict.splits.every((s): s is string => typeof s === "string")) {
    throw new InputError(dictFile, 'expected {"splits": [names…]}');
  }
  let classNames: string[] | null = null;
  const splits = new Map<string, DatasetRow[]>();
  for (const split of dict.splits) {
    const splitDir = path.join(dir, split);
    const stateFile = path.join(splitDir, "state.json");
    const state = await readJson(stateFile);
    const dataFiles = isRecord(state) && Array.isArray(state._data_files) ? state._data_files : null;
    if (!dataFiles) throw new InputError(stateFile, "has no _data_files list");
    const info = (await isFile(path.join(splitDir, "dataset_info.json"))) ? await readJson(path.join(splitDir, "dataset_info.json")) : null;
    const rows: DatasetRow[] = [];
    for (const entry of dataFiles) {
      const filename = isRecord(entry) && typeof entry.filename === "string" ? entry.filename : null;
      if (!filename || filename.includes("/") || filename.includes("\\")) throw new InputError(stateFile, "has a malformed _data_files entry");
      const file = path.join(splitDir, filename);
      let table: Table;
      try {
        table = tableFromIPC(await readFile(file));
      } catch (error) {
        throw new InputError(file, `is not a readable Arrow IPC file (${(error as Error).message})`);
      }
      const names = classNamesFromHfMetadata(table.schema.metadata.get(HF_METADATA_KEY)) ?? classNamesFromFeatures(isRecord(info) ? info.features : undefined);
      if (!names) throw new InputError(file, "has no ClassLabel feature named \"label\" in its huggingface metadata or dataset_info.json");
      if (classNames && JSON.stringify(classNames) !== JSON.stringify(names)) {
        throw new InputError(file, `ClassLabel names differ from the other splits (${names.join(", ")})`);
      }
      classNames = names;
      const shardRows = rowsFromTable(file, table);
      checkLabels(file, shardRows, names);
      rows.push(...shardRows);
    }
    splits.set(split, rows);
  }
  if (!classNames) throw new InputError(dictFile, "lists no splits with data");
  return { classNames, splits };
}

/** ClassLabel names from the Hub README's YAML front matter, or null. */
async function classNamesFromReadme(dir: string): Promise<string[] | null> {
  let text: string;
  try {
    text = await readFile(path.join(dir, "README.md"), "utf8");
  } catch {
    return null;
  }
  const match = /^---\r?\n([\s\S]*?)\r?\n---/.exec(text);
  if (!match) return null;
  const card: unknown = YAML.parse(match[1]!);
  const info = isRecord(card) ? card.dataset_info : undefined;
  const features = isRecord(info) && Array.isArray(info.features) ? info.features : [];
  for (const feature of features) {
    if (!isRecord(feature) || feature.name !== "label" || !isRecord(feature.dtype)) continue;
    const classLabel = feature.dtype.class_label;
    const names = isRecord(classLabel) ? classLabel.names : undefined;
    if (!isRecord(names)) continue;
    const entries = Object.entries(names).sort(([a], [b]) => Number(a) - Number(b));
    if (entries.every(([k, v], i) => Number(k) === i && typeof v === "string")) return entries.map(([, v]) => v as string);
  }
  return null;
}

async function loadParquetLayout(dir: string, files: readonly SplitShardFile[]): Promise<DatasetDict> {
  const readmeNames = await classNamesFromReadme(dir);
  let classNames: string[] | null = readmeNames;
  const splits = new Map<string, DatasetRow[]>();
  for (const { split, file } of files) {
    let table: Table;
    try {
      const wasmTable = readParquet(await readFile(file));
      table = tableFromIPC(wasmTable.intoIPCStream());
    } catch (error) {
      throw new InputError(file, `is not a readable Parquet file (${(error as Error).message})`);
    }
    const names = classNamesFromHfMetadata(table.schema.metadata.get(HF_METADATA_KEY)) ?? readmeNames;
    if (!names) throw new InputError(file, "has no ClassLabel feature named \"label\" in its huggingface metadata or README.md");
    if (classNames && JSON.stringify(classNames) !== JSON.stringify(names)) {
      throw new InputError(file, `ClassLabel names differ from README.md or the other splits (${names.join(", ")})`);
    }
    classNames = names;
    const rows = rowsFromTable(file, table);
    checkLabels(file, rows, names);
    const list = splits.get(split) ?? [];
    list.push(...rows);
    splits.set(split, list);
  }
  if (!classNames) throw new InputError(dir, "has no Parquet data files");
  return { classNames, splits: orderSplits(splits) };
}

const SPLIT_ORDER = ["train", "validation", "test"];

function orderSplits(splits: Map<string, DatasetRow[]>): Map<string, DatasetRow[]> {
  const rank = (s: string) => (SPLIT_ORDER.includes(s) ? SPLIT_ORDER.indexOf(s) : SPLIT_ORDER.length);
  return new Map([...splits].sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b)));
}

/**
 * Reads a dataset written by `saveDatasetDict` (or by Python `datasets`: `save_to_disk` folders and
 * Hub-layout Parquet folders with Image + ClassLabel features).
 */
export async function loadDatasetDict(dir: string): Promise<DatasetDict> {
  let info;
  try {
    info = await stat(dir);
  } catch {
    throw new InputError(dir, "does not exist", "pass a folder written by `splint data import`");
  }
  if (!info.isDirectory()) throw new InputError(dir, "is not a folder", "pass a folder written by `splint data import`");
  if (await isFile(path.join(dir, "dataset_dict.json"))) return loadArrowLayout(dir);
  const parquet = await parquetShards(dir);
  if (parquet.length > 0) return loadParquetLayout(dir, parquet);
  if (await isFile(path.join(dir, "state.json"))) {
    throw new InputError(dir, "is a single-split `Dataset` folder, not a `DatasetDict`", "pass its parent folder, or save a DatasetDict");
  }
  throw new InputError(
    dir,
    "is not a dataset folder (no dataset_dict.json and no data/*.parquet)",
    "create one with `splint data import --dir PATH --out DIR` or `splint data synth`",
  );
}
