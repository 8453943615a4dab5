/**
 * The GGUF container (version 3) as ggml defines it (ggml/include/gguf.h, docs/gguf.md of
 * llama.cpp): little-endian; magic "GGUF", version u32, tensor count u64, key/value count u64;
 * the key/value pairs; one info record per tensor (name, dims innermost first, ggml type, data
 * offset); padding to `general.alignment` (32 by default); the tensor data, each tensor starting
 * at a multiple of the alignment.
 */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

/** Value types of the key/value section (gguf_type in gguf.h). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

/** One metadata value, typed the way gguf-py's writer types it (counts u32, floats f32). */
export type GgufValue =
  | { type: "u32"; value: number }
  | { type: "i32"; value: number }
  | { type: "f32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "string[]"; value: readonly string[] }
  | { type: "i32[]"; value: readonly number[] | Int32Array }
  | { type: "f32[]"; value: readonly number[] | Float32Array };

export type GgufMetadata = ReadonlyArray<readonly [string, GgufValue]>;

export const u32 = (value: number): GgufValue => ({ type: "u32", value });
export const f32 = (value: number): GgufValue => ({ type: "f32", value });
export const str = (value: string): GgufValue => ({ type: "string", value });
export const bool = (value: boolean): GgufValue => ({ type: "bool", value });

/** The ggml tensor types splint writes (ggml_type in ggml.h). */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q8_0: 8,
  Q4_K: 12,
  Q6_K: 14,
  BF16: 30,
} as const;
export type GgmlTypeName = keyof typeof GgmlType;

/** Elements per block and bytes per block (ggml's type_traits; block structs in ggml-common.h). */
export const GGML_BLOCK: Readonly<Record<GgmlTypeName, { elements: number; bytes: number }>> = {
  F32: { elements: 1, bytes: 4 },
  F16: { elements: 1, bytes: 2 },
  BF16: { elements: 1, bytes: 2 },
  // d (f16) + 32 × int8
  Q8_0: { elements: 32, bytes: 34 },
  // d, dmin (f16) + 12 bytes of packed 6-bit scales/mins + 128 bytes of 4-bit quants
  Q4_K: { elements: 256, bytes: 144 },
  // 128 bytes low 4 bits + 64 bytes high 2 bits + 16 int8 scales + d (f16)
  Q6_K: { elements: 256, bytes: 210 },
};

/** `general.file_type` (llama_ftype in llama.h): what most of the weights are. */
export const LlamaFileType = {
  ALL_F32: 0,
  MOSTLY_F16: 1,
  MOSTLY_Q8_0: 7,
  MOSTLY_Q4_K_M: 15,
  MOSTLY_BF16: 32,
} as const;

/** Token types of `tokenizer.ggml.token_type` (llama_token_type / gguf-py TokenType). */
export const TokenType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** Bytes of a tensor of `type` whose innermost dimension is `ne0` and that has `count` elements. */
export function tensorBytes(type: GgmlTypeName, ne0: number, count: number): number {
  const block = GGML_BLOCK[type];
  if (ne0 % block.elements !== 0) throw new Error(`${type} needs rows of a multiple of ${block.elements} elements, got ${ne0}`);
  return (count / block.elements) * block.bytes;
}

export function alignUp(n: number, alignment = GGUF_ALIGNMENT): number {
  return Math.ceil(n / alignment) * alignment;
}
