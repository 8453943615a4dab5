import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  openCheckpoint,
  openSafetensors,
  toBf16Bits,
  toFloat32,
  toFp8Bytes,
  toInt32,
  writeSafetensors,
  writeShardedCheckpoint,
  type SafetensorsDType,
  type StoredTensor,
  type TensorToWrite,
} from "../../src/io/safetensors.ts";
import { InputError } from "../../src/util/errors.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "splint-safetensors-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let counter = 0;
const fresh = (name: string): string => join(dir, `${counter++}-${name}`);

const SIZES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

function randomTensor(name: string, dtype: SafetensorsDType, shape: number[]): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Uint8Array(randomBytes(n * SIZES[dtype]));
  if (dtype === "BOOL") for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) & 1;
  return { name, dtype, shape, data };
}

/** A file with an arbitrary header (object, raw text or raw bytes) and data section. */
async function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Promise<string> {
  const json = header instanceof Uint8Array ? header : Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, declaredLength ?? BigInt(json.byteLength), true);
  const path = fresh("raw.safetensors");
  await writeFile(path, Buffer.concat([prefix, json, data]));
  return path;
}

async function rejectsWith(path: string, pattern: RegExp): Promise<void> {
  await assert.rejects(openSafetensors(path), (error: unknown) => {
    assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
    assert.ok(error.message.includes(path), `message names the file: ${error.message}`);
    assert.match(error.message, pattern);
    return true;
  });
}

describe("safetensors round trip", () => {
  test("every dtype comes back byte for byte, with shapes, metadata and sizes", async () => {
    const dtypes = Object.keys(SIZES) as SafetensorsDType[];
    const tensors = dtypes.map((d, i) => randomTensor(`t.${d.toLowerCase()}`, d, [i % 3 + 1, 5]));
    tensors.push(randomTensor("empty", "F32", [0, 4]), randomTensor("scalar", "BF16", []));
    const path = fresh("all.safetensors");
    await writeSafetensors(path, tensors, { format: "pt", note: "héllo" });
    const source = await openSafetensors(path);
    try {
      assert.deepEqual(new Set(source.keys()), new Set(tensors.map((t) => t.name)));
      assert.deepEqual(source.metadata, { format: "pt", note: "héllo" });
      for (const t of tensors) {
        assert.ok(source.has(t.name));
        const info = source.info(t.name);
        assert.deepEqual(info, { dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength, file: path });
        const read = await source.read(t.name);
        assert.equal(read.dtype, t.dtype);
        assert.deepEqual(read.shape, t.shape);
        assert.deepEqual(read.data, t.data);
      }
      assert.equal(source.has("nope"), false);
      await assert.rejects(source.read("nope"), (e: unknown) => e instanceof InputError && /no tensor named "nope"/.test(e.message));
    } finally {
      await source.close();
    }
  });

  test("the header is laid out as the Rust library writes it", async () => {
    const path = fresh("layout.safetensors");
    const a = new Float32Array([1, 2]);
    await writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [2], data: a }], { format: "pt" });
    const bytes = await readFile(path);
    const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    const padded = Math.ceil(json.length / 8) * 8;
    assert.equal(bytes.readBigUInt64LE(0), BigInt(padded));
    assert.equal(bytes.subarray(8, 8 + json.length).toString(), json);
    assert.equal(bytes.subarray(8 + json.length, 8 + padded).toString(), " ".repeat(padded - json.length));
    assert.deepEqual(new Float32Array(bytes.buffer.slice(bytes.byteOffset + 8 + padded)), a);
  });

  test("matches the byte vectors of the Rust reference's own tests", async () => {
    // safetensors/src/tensor.rs: test_serialization_forced_alignement and test_empty.
    const expect = async (tensors: TensorToWrite[], metadata: Record<string, string> | undefined, length: number, json: string, data: number[]) => {
      const path = fresh("vector.safetensors");
      await writeSafetensors(path, tensors, metadata);
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(length));
      const expected = Buffer.concat([prefix, Buffer.from(json.padEnd(length, " ")), Buffer.from(new Float32Array(data).buffer)]);
      assert.deepEqual(await readFile(path), expected);
    };
    const attn0: TensorToWrite = { name: "attn0", dtype: "F32", shape: [1, 1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) };
    await expect([attn0], undefined, 72, '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}', [0, 1, 2, 3, 4, 5]);
    await expect([], undefined, 8, "{}", []);
    await expect([], { framework: "pt" }, 40, '{"__metadata__":{"framework":"pt"}}', []);
  });

  test("tensors are ordered by dtype alignment, then name, in header and data", async () => {
    const path = fresh("order.safetensors");
    const tensors = [
      randomTensor("b", "U8", [3]),
      randomTensor("z", "I64", [1]),
      randomTensor("a", "U8", [2]),
      randomTensor("m", "BF16", [2]),
      randomTensor("c", "F32", [1]),
    ];
    await writeSafetensors(path, tensors);
    const bytes = await readFile(path);
    const length = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + length).toString()) as Record<string, { data_offsets: number[] }>;
    assert.deepEqual(Object.keys(header), ["z", "c", "m", "a", "b"]);
    const begins = Object.values(header).map((e) => e.data_offsets[0]);
    assert.deepEqual(begins, [...begins].sort((x, y) => (x as number) - (y as number)));
  });

  test("overwriting replaces the file and leaves no temp files", async () => {
    const sub = fresh("atomic");
    await mkdir(sub);
    const path = join(sub, "x.safetensors");
    await writeSafetensors(path, [randomTensor("old", "F32", [100])]);
    await writeSafetensors(path, [randomTensor("new", "F32", [1])]);
    await assert.rejects(writeSafetensors(path, [{ name: "bad", dtype: "F32", shape: [3], data: new Uint8Array(4) }]), InputError);
    const source = await openSafetensors(path);
    assert.deepEqual(source.keys(), ["new"]);
    await source.close();
    assert.deepEqual(await readdir(sub), ["x.safetensors"]);
  });

  test("the writer refuses inconsistent tensors", async () => {
    const path = fresh("bad.safetensors");
    await assert.rejects(writeSafetensors(path, [{ name: "x", dtype: "BF16", shape: [3], data: new Uint8Array(4) }]), /needs 6 bytes, got 4/);
    const t = randomTensor("x", "U8", [1]);
    await assert.rejects(writeSafetensors(path, [t, t]), /given twice/);
    await assert.rejects(writeSafetensors(path, [{ ...t, name: "__metadata__" }]), /cannot be a tensor name/);
  });
});

describe("lazy reads", () => {
  test("reading one tensor reads exactly its bytes and nothing else", async () => {
    const path = fresh("lazy.safetensors");
    const big = randomTensor("big", "F32", [4096]);
    const small = randomTensor("small", "BF16", [3, 7]);
    await writeSafetensors(path, [big, small]);
    const source = await openSafetensors(path);
    const probe = await open(path, "r");
    const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<{ bytesRead: number }> };
    await probe.close();
    const original = proto.read;
    const reads: { position: number; bytes: number }[] = [];
    proto.read = async function (this: unknown, ...args: unknown[]) {
      const result = await original.apply(this, args);
      reads.push({ position: args[3] as number, bytes: result.bytesRead });
      return result;
    };
    let read: StoredTensor;
    try {
      read = await source.read("small");
    } finally {
      proto.read = original;
      await source.close();
    }
    assert.deepEqual(read.data, small.data);
    const file = await readFile(path);
    const headerEnd = 8 + Number(file.readBigUInt64LE(0));
    // F32 sorts before BF16, so "small" starts after big's 16384 bytes.
    const start = headerEnd + 4096 * 4;
    assert.equal(reads.reduce((s, r) => s + r.bytes, 0), small.data.byteLength);
    for (const r of reads) assert.ok(r.position >= start && r.position + r.bytes <= start + small.data.byteLength);
  });
});

describe("strict header validation", () => {
  const okEntry = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
  const eight = new Uint8Array(8);

  test("too short for the length prefix", async () => {
    const path = fresh("short.safetensors");
    await writeFile(path, new Uint8Array(5));
    await rejectsWith(path, /shorter than the 8-byte header length/);
  });
  test("missing file or a folder", async () => {
    await rejectsWith(join(dir, "absent.safetensors"), /cannot open safetensors file \(ENOENT\)/);
    await rejectsWith(dir, /is not a file/);
  });
  test("header length above the limit", async () => {
    await rejectsWith(await rawFile({ a: okEntry }, eight, 200_000_000n), /exceeds the 100000000-byte limit/);
  });
  test("header length past the end of the file", async () => {
    await rejectsWith(await rawFile({ a: okEntry }, eight, 5000n), /runs past the end of the file/);
  });
  test("header not UTF-8", async () => {
    await rejectsWith(await rawFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
  });
  test("header not JSON", async () => {
    await rejectsWith(await rawFile('{"a": '), /not valid JSON/);
  });
  test("header not an object", async () => {
    await rejectsWith(await rawFile([1, 2]), /not a JSON object/);
  });
  test("unknown dtype", async () => {
    await rejectsWith(await rawFile({ a: { ...okEntry, dtype: "F12" } }, eight), /tensor "a": unsupported dtype "F12"/);
  });
  test("shape not integers", async () => {
    await rejectsWith(await rawFile({ a: { ...okEntry, shape: [2.5] } }, eight), /tensor "a": shape \[2\.5\]/);
    await rejectsWith(await rawFile({ a: { ...okEntry, shape: [-2] } }, eight), /non-negative integers/);
  });
  test("offsets reversed or malformed", async () => {
    await rejectsWith(await rawFile({ a: { ...okEntry, data_offsets: [8, 0] } }, eight), /0 <= begin <= end/);
    await rejectsWith(await rawFile({ a: { ...okEntry, data_offsets: [0] } }, eight), /data_offsets/);
  });
  test("shape × dtype size differs from the offsets' span", async () => {
    await rejectsWith(await rawFile({ a: { ...okEntry, shape: [3] } }, eight), /F32 \[3\] needs 12 bytes but data_offsets \[0, 8\] span 8/);
  });
  test("offsets past the end of the file (truncated)", async () => {
    const path = fresh("trunc.safetensors");
    await writeSafetensors(path, [randomTensor("a", "F32", [64])]);
    await truncate(path, (await readFile(path)).byteLength - 10);
    await rejectsWith(path, /tensor "a": data_offsets \[0, 256\] run past the end of the data/);
  });
  test("overlapping tensors", async () => {
    const header = { a: okEntry, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } };
    await rejectsWith(await rawFile(header, new Uint8Array(12)), /tensors "a" and "b" overlap/);
  });
  test("gap between tensors", async () => {
    const header = { a: okEntry, b: { dtype: "F32", shape: [1], data_offsets: [12, 16] } };
    await rejectsWith(await rawFile(header, new Uint8Array(16)), /4 unclaimed bytes before tensor "b"/);
  });
  test("bytes after the last tensor", async () => {
    await rejectsWith(await rawFile({ a: okEntry }, new Uint8Array(12)), /cover 8 bytes but the data section holds 12/);
  });
  test("__metadata__ not a string map", async () => {
    await rejectsWith(await rawFile({ __metadata__: { format: 1 }, a: okEntry }, eight), /__metadata__ value "format" is not a string/);
    await rejectsWith(await rawFile({ __metadata__: ["pt"], a: okEntry }, eight), /__metadata__ is not an object/);
  });
  test("a valid hand-made file with a padded header opens", async () => {
    const source = await openSafetensors(await rawFile(`${JSON.stringify({ a: okEntry })}      `, new Uint8Array(new Float32Array([3, 4]).buffer)));
    assert.deepEqual(toFloat32(await source.read("a")), new Float32Array([3, 4]));
    await source.close();
  });
});

describe("sharded checkpoints", () => {
  async function* stream(tensors: TensorToWrite[]): AsyncGenerator<TensorToWrite> {
    for (const t of tensors) yield t;
  }

  test("splits at the size limit, writes the index, and opens back", async () => {
    const out = fresh("sharded");
    await mkdir(out);
    const tensors = [
      randomTensor("layers.0.w", "BF16", [10, 10]), // 200 B
      randomTensor("layers.0.b", "F32", [25]), // 100 B
      randomTensor("layers.1.w", "BF16", [10, 10]), // 200 B
      randomTensor("embed", "F32", [200]), // 800 B: larger than the limit, own shard
      randomTensor("ids", "I64", [4]), // 32 B
    ];
    const result = await writeShardedCheckpoint(out, stream(tensors), 350);
    assert.deepEqual(result.shards, [
      "model-00001-of-00004.safetensors",
      "model-00002-of-00004.safetensors",
      "model-00003-of-00004.safetensors",
      "model-00004-of-00004.safetensors",
    ]);
    const index = JSON.parse(await readFile(join(out, "model.safetensors.index.json"), "utf8")) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    assert.equal(index.metadata.total_size, 200 + 100 + 200 + 800 + 32);
    assert.deepEqual(Object.keys(index.weight_map), ["embed", "ids", "layers.0.b", "layers.0.w", "layers.1.w"]);
    assert.equal(index.weight_map["layers.0.w"], index.weight_map["layers.0.b"]);
    assert.notEqual(index.weight_map["layers.1.w"], index.weight_map["layers.0.w"]);
    assert.notEqual(index.weight_map.embed, index.weight_map["layers.1.w"]);
    assert.deepEqual((await readdir(out)).sort(), [...result.shards, "model.safetensors.index.json"].sort());

    const checkpoint = await openCheckpoint(out);
    try {
      assert.deepEqual(new Set(checkpoint.keys()), new Set(tensors.map((t) => t.name)));
      assert.deepEqual(checkpoint.metadata, { format: "pt" });
      for (const t of tensors) {
        assert.equal(checkpoint.info(t.name).file, join(out, index.weight_map[t.name] as string));
        assert.deepEqual((await checkpoint.read(t.name)).data, t.data);
      }
    } finally {
      await checkpoint.close();
    }
  });

  test("a failing tensor stream leaves no shard, scratch or index behind", async () => {
    const out = fresh("failing");
    await mkdir(out);
    async function* broken(): AsyncGenerator<TensorToWrite> {
      yield randomTensor("a", "F32", [100]);
      yield randomTensor("b", "F32", [100]);
      throw new Error("source failed");
    }
    await assert.rejects(writeShardedCheckpoint(out, broken(), 500), /source failed/);
    assert.deepEqual(await readdir(out), []);
  });

  test("openCheckpoint prefers the index, reads model.safetensors, and never consolidated", async () => {
    const single = fresh("single");
    await mkdir(single);
    await writeSafetensors(join(single, "consolidated.safetensors"), [randomTensor("tok_embeddings.weight", "BF16", [2])]);
    await assert.rejects(openCheckpoint(single), (e: unknown) => {
      assert.ok(e instanceof InputError);
      assert.match(e.message, /no model\.safetensors or model\.safetensors\.index\.json/);
      assert.match(e.hint ?? "", /consolidated/);
      return true;
    });
    await writeSafetensors(join(single, "model.safetensors"), [randomTensor("model.embed_tokens.weight", "BF16", [2])]);
    const source = await openCheckpoint(single);
    assert.deepEqual(source.keys(), ["model.embed_tokens.weight"]);
    await source.close();
  });

  test("an index naming a missing tensor or a path outside the folder is refused", async () => {
    const out = fresh("badindex");
    await mkdir(out);
    await writeSafetensors(join(out, "s1.safetensors"), [randomTensor("a", "F32", [1])]);
    const index = join(out, "model.safetensors.index.json");
    await writeFile(index, JSON.stringify({ weight_map: { a: "s1.safetensors", b: "s1.safetensors" } }));
    await assert.rejects(openCheckpoint(out), /index puts tensor "b" in s1\.safetensors, which has no such tensor/);
    await writeFile(index, JSON.stringify({ weight_map: { a: "../s1.safetensors" } }));
    await assert.rejects(openCheckpoint(out), /not a file beside the index/);
    await writeFile(index, JSON.stringify({ weight_map: { a: "missing.safetensors" } }));
    await assert.rejects(openCheckpoint(out), (e: unknown) => e instanceof InputError && e.message.includes("missing.safetensors"));
  });
});

describe("decoding", () => {
  const stored = (dtype: SafetensorsDType, shape: number[], data: Uint8Array): StoredTensor => ({ name: "t", file: "f.safetensors", dtype, shape, data });
  const u16 = (...v: number[]) => new Uint8Array(new Uint16Array(v).buffer);

  test("bf16 and f16 widen exactly", () => {
    assert.deepEqual(toFloat32(stored("BF16", [3], u16(0x3f80, 0xc000, 0x3f81))), new Float32Array([1, -2, 1 + 2 ** -7]));
    assert.deepEqual(toBf16Bits(stored("BF16", [2], u16(0x3f80, 0x7fc0))), new Uint16Array([0x3f80, 0x7fc0]));
    const f16 = toFloat32(stored("F16", [5], u16(0x3c00, 0x7bff, 0x0001, 0xfc00, 0xc500)));
    assert.deepEqual([...f16], [1, 65504, 2 ** -24, -Infinity, -5]);
    assert.ok(Number.isNaN(toFloat32(stored("F16", [1], u16(0x7e00)))[0]));
  });

  test("fp8 e4m3fn and e5m2 decode per the OCP spec", () => {
    const e4 = toFloat32(stored("F8_E4M3", [6], new Uint8Array([0x38, 0x7e, 0x01, 0xb8, 0x00, 0x7f])));
    assert.deepEqual([...e4.subarray(0, 5)], [1, 448, 2 ** -9, -1, 0]);
    assert.ok(Number.isNaN(e4[5]));
    const e5 = toFloat32(stored("F8_E5M2", [4], new Uint8Array([0x3c, 0x7b, 0x7c, 0x01])));
    assert.deepEqual([...e5], [1, 57344, Infinity, 2 ** -16]);
    assert.deepEqual(toFp8Bytes(stored("F8_E4M3", [1], new Uint8Array([9]))), new Uint8Array([9]));
    assert.throws(() => toFp8Bytes(stored("F8_E5M2", [1], new Uint8Array([9]))), /is F8_E5M2, expected F8_E4M3/);
  });

  test("i64 narrows to i32 with a range check", () => {
    const ok = new Uint8Array(new BigInt64Array([5n, -7n, 2147483647n, -2147483648n]).buffer);
    assert.deepEqual(toInt32(stored("I64", [4], ok)), new Int32Array([5, -7, 2147483647, -2147483648]));
    const big = new Uint8Array(new BigInt64Array([1n, 2147483648n]).buffer);
    assert.throws(() => toInt32(stored("I64", [2], big)), (e: unknown) => e instanceof InputError && /f\.safetensors: tensor "t": I64 value 2147483648 at index 1/.test(e.message));
    assert.deepEqual(toInt32(stored("I8", [2], new Uint8Array([0xff, 3]))), new Int32Array([-1, 3]));
    assert.throws(() => toInt32(stored("F32", [1], new Uint8Array(4))), /expected an integer dtype/);
  });

  test("unaligned f32 and f64 inputs decode correctly", () => {
    const backing = new Uint8Array(13);
    backing.set(new Uint8Array(new Float32Array([1.5, -3]).buffer), 1);
    assert.deepEqual(toFloat32(stored("F32", [2], backing.subarray(1, 9))), new Float32Array([1.5, -3]));
    assert.deepEqual(toFloat32(stored("F64", [1], new Uint8Array(new Float64Array([0.25]).buffer))), new Float32Array([0.25]));
  });
});
