import { readFile } from "node:fs/promises";
import { gguf } from "@huggingface/gguf";
import { GgmlType, GGML_BLOCK, type GgmlTypeName } from "../../src/export/gguf/format.ts";
import { decodeAs } from "../../src/export/gguf/quant.ts";

/**
 * Reads a GGUF file back with Hugging Face's maintained parser (@huggingface/gguf), not with
 * splint's writer's own code, so a test compares what was written with what another reader sees.
 */
export interface ReadTensor {
  /** Row-major, outermost first (GGUF stores it innermost first). */
  readonly shape: number[];
  /** ggml's order, as llama.cpp's create_tensor tables write it. */
  readonly ne: number[];
  readonly type: GgmlTypeName;
  readonly offset: number;
  readonly bytes: Uint8Array;
  values(): Float32Array;
}

export interface ReadGguf {
  readonly metadata: Record<string, unknown>;
  readonly types: Record<string, string>;
  readonly tensors: Map<string, ReadTensor>;
  readonly dataOffset: number;
}

const TYPE_NAME = new Map<number, GgmlTypeName>(Object.entries(GgmlType).map(([k, v]) => [v, k as GgmlTypeName]));

export async function readGguf(path: string): Promise<ReadGguf> {
  const parsed = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  const file = await readFile(path);
  const dataOffset = Number(parsed.tensorDataOffset);
  const tensors = new Map<string, ReadTensor>();
  for (const info of parsed.tensorInfos) {
    const ne = info.shape.map(Number);
    const type = TYPE_NAME.get(info.dtype);
    if (type === undefined) throw new Error(`${info.name}: ggml type ${info.dtype} is not one splint writes`);
    const count = ne.reduce((a, b) => a * b, 1);
    const size = (count / GGML_BLOCK[type].elements) * GGML_BLOCK[type].bytes;
    const start = dataOffset + Number(info.offset);
    const bytes = new Uint8Array(file.buffer, file.byteOffset + start, size);
    tensors.set(info.name, { shape: [...ne].reverse(), ne, type, offset: Number(info.offset), bytes, values: () => decodeAs(type, bytes, count) });
  }
  const metadata: Record<string, unknown> = {};
  const types: Record<string, string> = {};
  for (const [key, entry] of Object.entries(parsed.typedMetadata)) {
    const e = entry as { value: unknown; type: number; subType?: number };
    metadata[key] = e.value;
    types[key] = e.subType !== undefined ? `${e.type}/${e.subType}` : String(e.type);
  }
  return { metadata, types, tensors, dataOffset };
}
