/**
 * The inner matmul kernel as a hand-assembled WebAssembly SIMD module (no toolchain needed: the
 * bytes are built below, instruction by instruction). It computes raw dot products
 *
 *   out[i·outStride + j] = Σ_k a[i·k4 + k] · tile[j·k4 + k]      for i < m2, j < nb4
 *
 * over zero-padded operands (m2 even, nb4 and k4 multiples of 4), 2 rows × 4 columns per pass,
 * each in an f32x4 accumulator (four interleaved f32 partial sums, added lane 0+1+2+3 at the end).
 * Wasm SIMD has no fused multiply-add, so results are deterministic on every machine. The module
 * imports a shared memory (up to 4 GiB) so that worker threads can run it on the same operands
 * (kernel-pool.ts).
 */

// ---- a minimal assembler ------------------------------------------------------------------

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const str = (s: string): number[] => [...uleb(s.length), ...Buffer.from(s, "utf8")];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];

const I32 = 0x7f;
const V128 = 0x7b;
const op = {
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  i32: (n: number) => [0x41, ...sleb(n)],
  add: [0x6a],
  mul: [0x6c],
  ltU: [0x49],
  loop: [0x03, 0x40],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  end: [0x0b],
  f32Add: [0x92],
  f32Store: (offset: number) => [0x38, 0x02, ...uleb(offset)],
  v128Load: [0xfd, ...uleb(0x00), 0x02, 0x00],
  v128Zero: [0xfd, ...uleb(0x0c), ...new Array<number>(16).fill(0)],
  f32x4Add: [0xfd, ...uleb(0xe4)],
  f32x4Mul: [0xfd, ...uleb(0xe6)],
  extractLane: (lane: number) => [0xfd, ...uleb(0x1f), lane],
};

// Parameters (all i32, byte addresses and element counts).
const P = { a: 0, tile: 1, out: 2, m2: 3, k4: 4, nb4: 5, outStride: 6 };
// i32 locals.
const L = { i: 7, j: 8, kk: 9, rowBytes: 10, pa0: 11, pa1: 12, pb0: 13, pb1: 14, pb2: 15, pb3: 16, po: 17 };
// v128 locals: acc[r][c] at 18 + 4r + c, then x0, x1, w.
const ACC = 18;
const X0 = 26;
const X1 = 27;
const W = 28;

function kernelBody(): number[] {
  const code: number[] = [];
  const emit = (...parts: number[][]): void => {
    for (const p of parts) code.push(...p);
  };
  // rowBytes = k4 · 4
  emit(op.get(P.k4), op.i32(4), op.mul, op.set(L.rowBytes));
  emit(op.i32(0), op.set(L.i));
  emit(op.loop); // rows, two at a time
  {
    // pa0 = a + i·rowBytes, pa1 = pa0 + rowBytes
    emit(op.get(P.a), op.get(L.i), op.get(L.rowBytes), op.mul, op.add, op.set(L.pa0));
    emit(op.get(L.pa0), op.get(L.rowBytes), op.add, op.set(L.pa1));
    emit(op.i32(0), op.set(L.j));
    emit(op.loop); // columns, four at a time
    {
      emit(op.get(P.tile), op.get(L.j), op.get(L.rowBytes), op.mul, op.add, op.set(L.pb0));
      emit(op.get(L.pb0), op.get(L.rowBytes), op.add, op.set(L.pb1));
      emit(op.get(L.pb1), op.get(L.rowBytes), op.add, op.set(L.pb2));
      emit(op.get(L.pb2), op.get(L.rowBytes), op.add, op.set(L.pb3));
      for (let r = 0; r < 8; r++) emit(op.v128Zero, op.set(ACC + r));
      emit(op.i32(0), op.set(L.kk));
      emit(op.loop); // k, four at a time (kk is a byte offset)
      {
        emit(op.get(L.pa0), op.get(L.kk), op.add, op.v128Load, op.set(X0));
        emit(op.get(L.pa1), op.get(L.kk), op.add, op.v128Load, op.set(X1));
        [L.pb0, L.pb1, L.pb2, L.pb3].forEach((pb, c) => {
          emit(op.get(pb), op.get(L.kk), op.add, op.v128Load, op.set(W));
          emit(op.get(ACC + c), op.get(X0), op.get(W), op.f32x4Mul, op.f32x4Add, op.set(ACC + c));
          emit(op.get(ACC + 4 + c), op.get(X1), op.get(W), op.f32x4Mul, op.f32x4Add, op.set(ACC + 4 + c));
        });
        emit(op.get(L.kk), op.i32(16), op.add, op.set(L.kk));
        emit(op.get(L.kk), op.get(L.rowBytes), op.ltU, op.brIf(0));
      }
      emit(op.end);
      // po = out + (i·outStride + j)·4; row i+1 is outStride·4 bytes further.
      emit(op.get(P.out), op.get(L.i), op.get(P.outStride), op.mul, op.get(L.j), op.add, op.i32(4), op.mul, op.add, op.set(L.po));
      for (let r = 0; r < 2; r++) {
        for (let c = 0; c < 4; c++) {
          // f32.store(po [+ outStride·4], lane0 + lane1 + lane2 + lane3)
          emit(op.get(L.po));
          if (r === 1) emit(op.get(P.outStride), op.i32(4), op.mul, op.add);
          const acc = ACC + 4 * r + c;
          emit(op.get(acc), op.extractLane(0), op.get(acc), op.extractLane(1), op.f32Add);
          emit(op.get(acc), op.extractLane(2), op.f32Add, op.get(acc), op.extractLane(3), op.f32Add);
          emit(op.f32Store(4 * c));
        }
      }
      emit(op.get(L.j), op.i32(4), op.add, op.set(L.j));
      emit(op.get(L.j), op.get(P.nb4), op.ltU, op.brIf(0));
    }
    emit(op.end);
    emit(op.get(L.i), op.i32(2), op.add, op.set(L.i));
    emit(op.get(L.i), op.get(P.m2), op.ltU, op.brIf(0));
  }
  emit(op.end);
  emit(op.end); // function
  const locals = vec([
    [...uleb(11), I32],
    [...uleb(11), V128],
  ]);
  return [...locals, ...code];
}

/** Pages of 64 KiB: the most a 32-bit memory can address. */
export const MAX_PAGES = 65536;

export function moduleBytes(): Uint8Array {
  const funcType = [0x60, ...vec([[I32], [I32], [I32], [I32], [I32], [I32], [I32]]), 0x00];
  const body = kernelBody();
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec([funcType])),
    // Import env.memory: kind 0x02 (memory), limits 0x03 (shared, with a maximum).
    ...section(2, vec([[...str("env"), ...str("memory"), 0x02, 0x03, ...uleb(1), ...uleb(MAX_PAGES)]])),
    ...section(3, vec([[0x00]])),
    ...section(7, vec([[...str("kernel"), 0x00, 0x00]])),
    ...section(10, vec([[...uleb(body.length), ...body]])),
  ]);
}

export type WasmKernel = (a: number, tile: number, out: number, m2: number, k4: number, nb4: number, outStride: number) => void;

/** The slice of the WebAssembly JS API used here (the project's TypeScript libs do not declare it). */
export interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Memory: new (descriptor: { initial: number; maximum: number; shared: true }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** The kernel instantiated on `memory`. */
export function instantiateKernel(bytes: Uint8Array, memory: WasmMemory): WasmKernel {
  const instance = new wasmApi.Instance(new wasmApi.Module(bytes), { env: { memory } });
  return instance.exports["kernel"] as WasmKernel;
}
