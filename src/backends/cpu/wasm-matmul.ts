/**
 * The inner matmul kernels as a hand-assembled WebAssembly SIMD module (no toolchain needed: the
 * bytes are built below, instruction by instruction). Both take
 * (a, tile, out, rows, k, cols, outStride, aStride) — byte addresses, then element counts — with A
 * row-major at a pitch of aStride floats, and write raw sums out[i·outStride + j] for i < rows,
 * j < cols:
 *
 * - tn: tile holds B transposed, [cols, k] (k a multiple of 4, zero-padded): dot products of
 *   rows, 2 rows × 4 columns per pass, each in an f32x4 accumulator (four interleaved f32 partial
 *   sums, added lane 0+1+2+3 at the end). rows even, cols a multiple of 4.
 * - nn: tile holds B as is, [k, cols]: per k, a[i,k] broadcast times a row of B, 4 rows × 8
 *   columns per pass, each output lane one sequential f32 sum. rows a multiple of 4, cols of 8.
 *
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
  f32Load: [0x2a, 0x02, 0x00],
  v128Load: (offset: number) => [0xfd, ...uleb(0x00), 0x02, ...uleb(offset)],
  v128Store: (offset: number) => [0xfd, ...uleb(0x0b), 0x02, ...uleb(offset)],
  f32x4Splat: [0xfd, ...uleb(0x13)],
  v128Zero: [0xfd, ...uleb(0x0c), ...new Array<number>(16).fill(0)],
  f32x4Add: [0xfd, ...uleb(0xe4)],
  f32x4Mul: [0xfd, ...uleb(0xe6)],
  extractLane: (lane: number) => [0xfd, ...uleb(0x1f), lane],
};

/** The shared parameter list (all i32). */
const P = { a: 0, tile: 1, out: 2, rows: 3, k: 4, cols: 5, outStride: 6, aStride: 7 };
const PARAMS = 8;

/** A function body under construction: locals are numbered after the parameters. */
class Body {
  readonly code: number[] = [];
  private i32Count = 0;
  private v128Count = 0;
  constructor(
    private readonly i32Locals: number,
    private readonly v128Locals: number,
  ) {}
  i32(): number {
    if (this.i32Count === this.i32Locals) throw new Error("wasm-matmul: more i32 locals than declared");
    return PARAMS + this.i32Count++;
  }
  v128(): number {
    if (this.v128Count === this.v128Locals) throw new Error("wasm-matmul: more v128 locals than declared");
    return PARAMS + this.i32Locals + this.v128Count++;
  }
  emit(...parts: number[][]): void {
    for (const part of parts) this.code.push(...part);
  }
  bytes(): number[] {
    const locals = vec([
      [...uleb(this.i32Locals), I32],
      [...uleb(this.v128Locals), V128],
    ]);
    const body = [...locals, ...this.code, ...op.end];
    return [...uleb(body.length), ...body];
  }
}

function tnBody(): number[] {
  const f = new Body(13, 11);
  const [i, j, kk, tileRowBytes, aRowBytes, outRowBytes, pa0, pa1, po] = Array.from({ length: 9 }, () => f.i32());
  const columns = Array.from({ length: 4 }, () => f.i32()); // tile rows of the 4 output columns
  const acc = Array.from({ length: 8 }, () => f.v128()); // acc[4r + c]: row r, column c
  const [x0, x1, w] = [f.v128(), f.v128(), f.v128()];
  f.emit(op.get(P.k), op.i32(4), op.mul, op.set(tileRowBytes));
  f.emit(op.get(P.aStride), op.i32(4), op.mul, op.set(aRowBytes));
  f.emit(op.get(P.outStride), op.i32(4), op.mul, op.set(outRowBytes));
  f.emit(op.i32(0), op.set(i), op.loop);
  {
    f.emit(op.get(P.a), op.get(i), op.get(aRowBytes), op.mul, op.add, op.set(pa0));
    f.emit(op.get(pa0), op.get(aRowBytes), op.add, op.set(pa1));
    f.emit(op.i32(0), op.set(j), op.loop);
    {
      f.emit(op.get(P.tile), op.get(j), op.get(tileRowBytes), op.mul, op.add, op.set(columns[0]!));
      for (let c = 1; c < 4; c++) f.emit(op.get(columns[c - 1]!), op.get(tileRowBytes), op.add, op.set(columns[c]!));
      for (const a of acc) f.emit(op.v128Zero, op.set(a));
      f.emit(op.i32(0), op.set(kk), op.loop); // kk is a byte offset, 4 floats per step
      {
        f.emit(op.get(pa0), op.get(kk), op.add, op.v128Load(0), op.set(x0));
        f.emit(op.get(pa1), op.get(kk), op.add, op.v128Load(0), op.set(x1));
        columns.forEach((column, c) => {
          f.emit(op.get(column), op.get(kk), op.add, op.v128Load(0), op.set(w));
          f.emit(op.get(acc[c]!), op.get(x0), op.get(w), op.f32x4Mul, op.f32x4Add, op.set(acc[c]!));
          f.emit(op.get(acc[4 + c]!), op.get(x1), op.get(w), op.f32x4Mul, op.f32x4Add, op.set(acc[4 + c]!));
        });
        f.emit(op.get(kk), op.i32(16), op.add, op.set(kk));
        f.emit(op.get(kk), op.get(tileRowBytes), op.ltU, op.brIf(0));
      }
      f.emit(op.end);
      // po = out + (i·outStride + j)·4; row i+1 is one output row further.
      f.emit(op.get(P.out), op.get(i), op.get(outRowBytes), op.mul, op.add, op.get(j), op.i32(4), op.mul, op.add, op.set(po));
      for (let r = 0; r < 2; r++) {
        for (let c = 0; c < 4; c++) {
          const a = acc[4 * r + c]!;
          f.emit(op.get(po));
          if (r === 1) f.emit(op.get(outRowBytes), op.add);
          f.emit(op.get(a), op.extractLane(0), op.get(a), op.extractLane(1), op.f32Add);
          f.emit(op.get(a), op.extractLane(2), op.f32Add, op.get(a), op.extractLane(3), op.f32Add);
          f.emit(op.f32Store(4 * c));
        }
      }
      f.emit(op.get(j), op.i32(4), op.add, op.set(j));
      f.emit(op.get(j), op.get(P.cols), op.ltU, op.brIf(0));
    }
    f.emit(op.end);
    f.emit(op.get(i), op.i32(2), op.add, op.set(i));
    f.emit(op.get(i), op.get(P.rows), op.ltU, op.brIf(0));
  }
  f.emit(op.end);
  return f.bytes();
}

function nnBody(): number[] {
  const f = new Body(13, 14);
  const [i, j, kk, kBytes, aRowBytes, outRowBytes, tileRowBytes, pb, po] = Array.from({ length: 9 }, () => f.i32());
  const rowsA = Array.from({ length: 4 }, () => f.i32()); // the 4 rows of A of this pass
  const acc = Array.from({ length: 8 }, () => f.v128()); // acc[2r + h]: row r, columns 4h..4h+3
  const x = Array.from({ length: 4 }, () => f.v128());
  const [w0, w1] = [f.v128(), f.v128()];
  f.emit(op.get(P.k), op.i32(4), op.mul, op.set(kBytes));
  f.emit(op.get(P.aStride), op.i32(4), op.mul, op.set(aRowBytes));
  f.emit(op.get(P.outStride), op.i32(4), op.mul, op.set(outRowBytes));
  f.emit(op.get(P.cols), op.i32(4), op.mul, op.set(tileRowBytes));
  f.emit(op.i32(0), op.set(i), op.loop);
  {
    f.emit(op.get(P.a), op.get(i), op.get(aRowBytes), op.mul, op.add, op.set(rowsA[0]!));
    for (let r = 1; r < 4; r++) f.emit(op.get(rowsA[r - 1]!), op.get(aRowBytes), op.add, op.set(rowsA[r]!));
    f.emit(op.i32(0), op.set(j), op.loop);
    {
      for (const a of acc) f.emit(op.v128Zero, op.set(a));
      f.emit(op.get(P.tile), op.get(j), op.i32(4), op.mul, op.add, op.set(pb));
      f.emit(op.i32(0), op.set(kk), op.loop); // kk is a byte offset into the rows of A
      {
        rowsA.forEach((row, r) => f.emit(op.get(row), op.get(kk), op.add, op.f32Load, op.f32x4Splat, op.set(x[r]!)));
        f.emit(op.get(pb), op.v128Load(0), op.set(w0), op.get(pb), op.v128Load(16), op.set(w1));
        for (let r = 0; r < 4; r++) {
          f.emit(op.get(acc[2 * r]!), op.get(x[r]!), op.get(w0), op.f32x4Mul, op.f32x4Add, op.set(acc[2 * r]!));
          f.emit(op.get(acc[2 * r + 1]!), op.get(x[r]!), op.get(w1), op.f32x4Mul, op.f32x4Add, op.set(acc[2 * r + 1]!));
        }
        f.emit(op.get(pb), op.get(tileRowBytes), op.add, op.set(pb));
        f.emit(op.get(kk), op.i32(4), op.add, op.set(kk));
        f.emit(op.get(kk), op.get(kBytes), op.ltU, op.brIf(0));
      }
      f.emit(op.end);
      f.emit(op.get(P.out), op.get(i), op.get(outRowBytes), op.mul, op.add, op.get(j), op.i32(4), op.mul, op.add, op.set(po));
      for (let r = 0; r < 4; r++) {
        f.emit(op.get(po), op.get(acc[2 * r]!), op.v128Store(0));
        f.emit(op.get(po), op.get(acc[2 * r + 1]!), op.v128Store(16));
        f.emit(op.get(po), op.get(outRowBytes), op.add, op.set(po));
      }
      f.emit(op.get(j), op.i32(8), op.add, op.set(j));
      f.emit(op.get(j), op.get(P.cols), op.ltU, op.brIf(0));
    }
    f.emit(op.end);
    f.emit(op.get(i), op.i32(4), op.add, op.set(i));
    f.emit(op.get(i), op.get(P.rows), op.ltU, op.brIf(0));
  }
  f.emit(op.end);
  return f.bytes();
}

/** Pages of 64 KiB: the most a 32-bit memory can address. */
export const MAX_PAGES = 65536;

export function moduleBytes(): Uint8Array {
  const funcType = [0x60, ...vec(Array.from({ length: PARAMS }, () => [I32])), 0x00];
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec([funcType])),
    // Import env.memory: kind 0x02 (memory), limits 0x03 (shared, with a maximum).
    ...section(2, vec([[...str("env"), ...str("memory"), 0x02, 0x03, ...uleb(1), ...uleb(MAX_PAGES)]])),
    ...section(3, vec([[0x00], [0x00]])),
    ...section(7, vec([[...str("tn"), 0x00, 0x00], [...str("nn"), 0x00, 0x01]])),
    ...section(10, vec([tnBody(), nnBody()])),
  ]);
}

/** (a, tile, out, rows, k, cols, outStride, aStride); see the header. */
export type WasmKernel = (a: number, tile: number, out: number, rows: number, k: number, cols: number, outStride: number, aStride: number) => void;

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

export type KernelKind = "tn" | "nn";

/** Both kernels instantiated on `memory`. */
export function instantiateKernels(bytes: Uint8Array, memory: WasmMemory): Record<KernelKind, WasmKernel> {
  const instance = new wasmApi.Instance(new wasmApi.Module(bytes), { env: { memory } });
  return { tn: instance.exports["tn"] as WasmKernel, nn: instance.exports["nn"] as WasmKernel };
}
