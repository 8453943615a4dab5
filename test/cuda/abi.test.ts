/**
 * The koffi prototypes (src/backends/cuda/ffi.ts) against the C header they bind
 * (native/cuda/include/splint_cuda.h): same functions, same parameter types in the same order,
 * same dtype codes and device-flag bits. Runs without a GPU, so ABI drift fails in CI.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ACTIVITY_FIELD, ACTIVITY_FIELDS, DTYPE_CODE, FLAG_INDEX, FLAG_LABEL, PROTOTYPES, STATUS_NAMES } from "../../src/backends/cuda/ffi.ts";

const header = readFileSync(new URL("../../native/cuda/include/splint_cuda.h", import.meta.url), "utf8");
const common = readFileSync(new URL("../../native/cuda/src/common.cuh", import.meta.url), "utf8");

/** "ret name(type, type, …)" with parameter names, const and koffi's _Out_ dropped. */
function signature(decl: string): string {
  const match = /^(.*?)\b(splint_cuda_\w+)\s*\(([^)]*)\)/s.exec(decl.replace(/\s+/g, " ").trim());
  assert.ok(match, `not a declaration: ${decl}`);
  const type = (t: string): string =>
    t
      .replace(/_Out_|\bconst\b/g, "")
      .replace(/\bsplint_dptr\b/g, "uint64_t")
      .replace(/\s*\*\s*/g, "*")
      .trim();
  // A writable byte buffer is char* in C and uint8_t* for koffi (which then accepts a Buffer): same ABI.
  const param = (p: string): string => type(p.trim().replace(/\s*\b\w+$/, "")).replace(/^char\*$/, "uint8_t*");
  const params = match[3]!.trim() === "void" ? [] : match[3]!.split(",").map(param);
  return `${type(match[1]!)} ${match[2]}(${params.join(",")})`;
}

function headerDeclarations(): Map<string, string> {
  const decls = new Map<string, string>();
  for (const m of header.matchAll(/^(?:int|const char\*)\s+splint_cuda_\w+\([^;]*\);/gm)) {
    const sig = signature(m[0]);
    decls.set(/splint_cuda_(\w+)\(/.exec(sig)![1]!, sig);
  }
  return decls;
}

test("every header function is bound with the same parameter types, and nothing else is", () => {
  const decls = headerDeclarations();
  assert.ok(decls.size > 30, `parsed only ${decls.size} declarations`);
  assert.deepEqual(Object.keys(PROTOTYPES).sort(), [...decls.keys()].sort());
  for (const [name, proto] of Object.entries(PROTOTYPES)) {
    assert.equal(signature(proto), decls.get(name), name);
  }
});

test("dtype codes and device flag bits match the C side", () => {
  for (const [dtype, code] of Object.entries(DTYPE_CODE)) {
    const cName = { f32: "SPLINT_F32", bf16: "SPLINT_BF16", fp8_e4m3: "SPLINT_FP8_E4M3", i32: "SPLINT_I32" }[dtype]!;
    assert.match(header, new RegExp(`${cName} = ${code},`), dtype);
  }
  assert.match(common, new RegExp(`SPLINT_FLAG_LABEL = ${FLAG_LABEL};`));
  assert.match(common, new RegExp(`SPLINT_FLAG_INDEX = ${FLAG_INDEX};`));
});

test("the activity summary's indices and the status codes match the C side", () => {
  const cName = (key: string): string => `SPLINT_ACTIVITY_${key.replace(/Ns$/, "_ns").replace(/([A-Z])/g, "_$1").toUpperCase()}`;
  for (const [key, index] of Object.entries(ACTIVITY_FIELD)) assert.match(header, new RegExp(`${cName(key)} = ${index},`), key);
  assert.match(header, new RegExp(`SPLINT_ACTIVITY_FIELDS = ${ACTIVITY_FIELDS},`));
  assert.equal(Object.keys(ACTIVITY_FIELD).length, ACTIVITY_FIELDS);
  const statuses = [...header.matchAll(/^\s*SPLINT_(\w+) = (\d+),$/gm)].filter(([, name]) => /ERROR|INVALID|MEMORY|SUPPORTED/.test(name!));
  assert.deepEqual(statuses.map(([, , code]) => Number(code)).sort((a, b) => a - b), Object.keys(STATUS_NAMES).map(Number).sort((a, b) => a - b));
});
