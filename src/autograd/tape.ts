/**
 * The Graph implementation: a tape of recorded ops, each holding the closure that runs its
 * backward primitive. Gradients are written once per op here; the kernels live in the backend.
 *
 * Ownership: every tensor an op allocates is pushed on `owned` and freed by scope() (when not
 * taping) or dispose(). Gradients of intermediates are freed as soon as the op that consumed them
 * has run backward; gradients of leaves (Var.grad) belong to the caller.
 */
import type { AttentionMask, Backend, MatmulPrecision } from "../tensor/backend.ts";
import type { DType } from "../tensor/dtype.ts";
import { TensorError } from "../tensor/errors.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { Graph, Var } from "./graph.ts";

class Value implements Var {
  grad: Tensor | null = null;
  /** Ops that took this value as an input. */
  consumers = 0;
  /**
   * The op that made this value rounds its gradient to bf16 before any use (a bf16-tier product),
   * or this value is a view (reshape) of such a value.
   */
  roundsGrad = false;
  viewOf: Value | null = null;
  /** Some reshape views this value (an evicted value's views would dangle: it is not evicted). */
  viewed = false;
  /**
   * Selective recomputation: makes this value again from its op's inputs (which its own backward
   * keeps), so its scope may drop it and a backward that reads it gets it back.
   */
  remake: (() => Tensor) | null = null;
  /** What remake reads (remade first when evicted themselves). */
  remakeInputs: readonly Value[] = [];
  /** Dropped by its scope; remade on the first backward that takes it. */
  evicted = false;
  /** Made again by remake (and so dropped once its last reader has run). */
  remade = false;
  /** Recorded backward nodes that read it and have not run (or been skipped) yet; a remade value goes at 0. */
  readersLeft = 0;
  constructor(
    public value: Tensor,
    readonly requiresGrad: boolean,
    readonly isLeaf: boolean,
  ) {}
}

/**
 * Returns one gradient per input (null where the input needs none). A returned tensor may be
 * dout itself or a view of it; the tape handles the aliasing. `narrow[j]`: input j's gradient may
 * be written as bf16 (see TapeGraph.narrowGrad) — the same numbers, one cast fewer. `into[j]`:
 * input j's gradient summed so far (f32, owned by the tape alone), which the op may add its own
 * into and return instead of a new tensor (a product with beta = 1 instead of a sum afterwards).
 */
type BackwardFn = (dout: Tensor, needs: readonly boolean[], narrow: readonly boolean[], into: readonly (Tensor | null)[]) => (Tensor | null)[];

interface Node {
  readonly inputs: readonly Value[];
  readonly output: Value;
  readonly backward?: BackwardFn;
  /** The inputs whose tensors the backward reads (an evicted one is remade before it runs). */
  readonly readInputs: readonly Value[];
  /** Checkpointed body: re-run recorded during backward instead of a BackwardFn. */
  readonly recompute?: () => Value;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function asValue(v: Var): Value {
  if (!(v instanceof Value)) throw new TensorError("graph", "a Var from another graph implementation was passed in");
  return v;
}

/**
 * `narrowGradients` (default true): where a bf16 value's only consumer chain ends in a product that
 * rounds its gradient to bf16 anyway, the op that produces that gradient writes it in bf16
 * directly. false keeps every gradient f32 until its consumer rounds it: the same numbers, the
 * reference the narrow path is tested against.
 *
 * `loraUpOps` (default false): a bf16-tier loraLinear runs its products with B through
 * Backend.loraUp (y = scale·u·Bᵀ) and loraUpBackward (du and dB in one pass over dy) instead of
 * three matmul calls. The same numbers on the CPU backend. On an H100 the rank-r kernels lost to
 * cuBLASLt's skinny products at most shapes (up 0.32–0.73×, du+dB 0.60–1.22×,
 * bench/results/2026-12-06-gpu-check-h100-51f067b.md) and the 14B step took 243.7 ms with them
 * against 233.5 without, so the matmul calls stay the default.
 */
export function createGraph(
  backend: Backend,
  opts: { recording: boolean; narrowGradients?: boolean; evictElementwise?: boolean; loraUpOps?: boolean },
): Graph {
  return new TapeGraph(backend, opts.recording, opts.narrowGradients ?? true, opts.evictElementwise ?? false, opts.loraUpOps ?? false);
}

class TapeGraph implements Graph {
  /** Where ops are recorded now; null while not taping (inference, or a checkpoint's first run). */
  private tape: Node[] | null;
  private owned: Tensor[] = [];
  /** The gradient backward() starts from, with its value known on the host (no read back). */
  private seed: { tensor: Tensor; value: number } | null = null;
  /** Storage of every tensor a recorded backward will read (scope() keeps those); weak, so freed ones go. */
  private readonly backwardReads = new WeakSet<object>();
  /** Checkpoints recorded so far: their re-runs read whatever their bodies capture. */
  private checkpointsRecorded = 0;

  constructor(
    readonly backend: Backend,
    readonly recording: boolean,
    private readonly narrowGradients: boolean,
    /**
     * Selective recomputation: a recorded scope drops the outputs of its norms and SwiGLUs (cheap
     * element-wise work; every product's output stays) and the backward makes them again where it
     * reads them, one at a time.
     */
    private readonly evictElementwise: boolean,
    /** Whether the bf16 tier's loraLinear calls Backend.loraUp / loraUpBackward (see createGraph). */
    private readonly loraUpOps: boolean,
  ) {
    this.tape = recording ? [] : null;
  }

  /** Values made since the graph started that their scope may evict (selective recomputation). */
  private readonly evictable: Value[] = [];

  /** Marks an element-wise op's output as one its scope may drop and the backward remake. */
  private evictableOutput(out: Value, inputs: readonly Value[], remake: () => Tensor): Value {
    if (this.evictElementwise && this.tape && out.requiresGrad) {
      out.remake = remake;
      out.remakeInputs = inputs;
      this.evictable.push(out);
    }
    return out;
  }

  // ---- bookkeeping -------------------------------------------------------------------------

  private own(t: Tensor): Tensor {
    this.owned.push(t);
    return t;
  }

  /** A tensor backward will need: kept while taping, freed at once otherwise. */
  private save(t: Tensor): Tensor | null {
    if (this.tape) {
      this.backwardReads.add(t.storage as object);
      return this.own(t);
    }
    t.free();
    return null;
  }

  /**
   * Records an op. `reads`: the tensors its backward reads (besides what it saved); absent, every
   * input and the output, the safe assumption. A tensor no backward reads can be freed once the
   * scope that made it returns (scope()).
   */
  private result(value: Tensor, inputs: readonly Value[], backward: BackwardFn, reads?: readonly Tensor[]): Value {
    const requiresGrad = inputs.some((v) => v.requiresGrad);
    for (const v of inputs) v.consumers++;
    const out = new Value(this.own(value), requiresGrad, false);
    if (this.tape && requiresGrad) {
      const read = reads ?? [...inputs.map((v) => v.value), value];
      this.record(this.tape, { inputs, output: out, backward, readInputs: inputs.filter((v) => read.includes(v.value)) });
      for (const t of read) this.backwardReads.add(t.storage as object);
    }
    return out;
  }

  param(t: Tensor, requiresGrad: boolean): Var {
    return new Value(t, requiresGrad, true);
  }

  constant(t: Tensor): Var {
    return new Value(t, false, true);
  }

  // ---- ops ---------------------------------------------------------------------------------

  linear(x: Var, w: Var, precision: MatmulPrecision = "f32"): Var {
    const [xv, wv] = [asValue(x), asValue(w)];
    const b = this.backend;
    return this.result(
      b.matmul(xv.value, wv.value, { transB: true, precision }),
      [xv, wv],
      (dy, needs, _narrow, into) => [
        needs[0] ? b.matmul(dy, wv.value, { precision, accumulate: into[0] ?? undefined }) : null,
        needs[1] ? b.matmul(dy, xv.value, { transA: true, precision }) : null,
      ],
      [xv.value, wv.value],
    );
  }

  loraLinear(
    x: Var,
    w: Var,
    a: Var,
    bVar: Var,
    lora: { scale: number; dropout: number; seed: number | null; narrow?: { a: Tensor; b: Tensor } },
    precision: MatmulPrecision = "f32",
  ): Var {
    const [xv, wv, av, bv] = [asValue(x), asValue(w), asValue(a), asValue(bVar)];
    const b = this.backend;
    const { scale, dropout, seed } = lora;
    // bf16: x is rounded once for the base and the LoRA product, the dropped x is bf16 (inside the
    // fused LoRA ops, which recompute the mask from the seed), and A and B are used as bf16 copies (their f32 masters get f32 gradients), as PEFT's layers run under
    // autocast. Temporaries made here are freed as soon as their products are queued.
    const narrow = precision === "bf16";
    const low = (t: Tensor): Tensor => (narrow && t.dtype === "f32" ? b.cast(t, "bf16") : t);
    // A and B as the products read them: the caller's per-pass copies, else a cast per product.
    const lowA = (): Tensor => (narrow && lora.narrow ? lora.narrow.a : low(av.value));
    const lowB = (): Tensor => (narrow && lora.narrow ? lora.narrow.b : low(bv.value));
    const done = (t: Tensor, original: Tensor): void => {
      if (t !== original) t.free();
    };
    // The caller's copies are the caller's to free.
    const doneLow = (t: Tensor, original: Tensor): void => {
      if (t !== original && t !== lora.narrow?.a && t !== lora.narrow?.b) t.free();
    };
    const mask = { dropout, seed, precision };
    // u and du only ever meet bf16 operands in bf16 products, which would round them anyway.
    const lowDtype: DType = narrow ? "bf16" : "f32";
    // The products with B as the rank-r ops (their operands are bf16 here, as the matmuls' are).
    const upOps = narrow && this.loraUpOps;

    const xl = low(xv.value); // [N, in]
    const al = lowA();
    const u = b.loraDown(xl, al, { ...mask, outDtype: lowDtype }); // [N, r] = dropout(x)·Aᵀ
    doneLow(al, av.value);
    // The LoRA update first, then the base product added onto it: the read of y that the sum
    // needs then happens in the epilogue of the large compute-bound product rather than in the
    // memory-bound rank-r one. bf16: y too, as under autocast (the update rounded once, as PEFT's
    // lora_B(…)·scaling is, then the sum): half the bytes for every consumer.
    const bl = lowB();
    const y = upOps // [N, out]
      ? b.loraUp(u, bl, { alpha: scale, outDtype: lowDtype })
      : b.matmul(u, bl, { transB: true, alpha: scale, precision, outDtype: lowDtype });
    doneLow(bl, bv.value);
    b.matmul(xl, wv.value, { transB: true, precision, accumulate: y });
    done(xl, xv.value);
    const savedU = this.save(u);
    const out = this.result(y, [xv, wv, av, bv], (dy, needs, _narrow, into) => {
      // dy [N, out]. du = scale·dy·B [N, r]; dB = scale·dyᵀ·u; dA = duᵀ·dropout(x); dx = dy·W + dropout'(du·A).
      const dyl = low(dy);
      const needsDu = needs[0] || needs[2];
      let du: Tensor | null = null;
      let db: Tensor | null = null;
      if (upOps && needsDu && needs[3]) {
        const bl2 = lowB();
        ({ du, db } = b.loraUpBackward(dyl, bl2, savedU!, { alpha: scale, duDtype: lowDtype }));
        doneLow(bl2, bv.value);
      } else {
        if (needsDu) {
          const bl2 = lowB();
          du = b.matmul(dyl, bl2, { alpha: scale, precision, outDtype: lowDtype });
          doneLow(bl2, bv.value);
        }
        if (needs[3]) db = b.matmul(dyl, savedU!, { transA: true, alpha: scale, precision });
      }
      const xl2 = needs[1] || needs[2] ? low(xv.value) : null;
      const da = needs[2] ? b.loraGradA(du!, xl2!, mask) : null;
      const dw = needs[1] ? b.matmul(dyl, xl2!, { transA: true, precision }) : null;
      if (xl2) done(xl2, xv.value);
      let dx: Tensor | null = null;
      if (needs[0]) {
        // The LoRA term first, added to x's gradient so far where x feeds several products (q, k
        // and v; gate and up), then the base product added onto it in its epilogue (a fresh dx is
        // then only written by the LoRA pass, never read back).
        const al2 = lowA();
        const sum = into[0];
        if (sum) b.loraDxAccumulate(sum, du!, al2, mask);
        dx = sum ?? b.loraDx(du!, al2, mask);
        doneLow(al2, av.value);
        b.matmul(dyl, wv.value, { precision, accumulate: dx });
      }
      du?.free();
      done(dyl, dy);
      return [dx, dw, da, db];
    }, [xv.value, wv.value, av.value, bv.value]);
    // Every product above reads dy rounded to bf16 (dyl).
    out.roundsGrad = narrow;
    return out;
  }

  matmul(a: Var, bVar: Var, opts: { transA?: boolean; transB?: boolean; alpha?: number } = {}): Var {
    const [av, bv] = [asValue(a), asValue(bVar)];
    const { transA = false, transB = false, alpha = 1 } = opts;
    const b = this.backend;
    return this.result(b.matmul(av.value, bv.value, { transA, transB, alpha }), [av, bv], (dc, needs) => [
      // C = α·op(A)·op(B): dA = α·dC·op(B)ᵀ, dB = α·op(A)ᵀ·dC, transposed back where A or B was.
      needs[0]
        ? transA
          ? b.matmul(bv.value, dc, { transA: transB, transB: true, alpha })
          : b.matmul(dc, bv.value, { transB: !transB, alpha })
        : null,
      needs[1]
        ? transB
          ? b.matmul(dc, av.value, { transA: true, transB: transA, alpha })
          : b.matmul(av.value, dc, { transA: !transA, alpha })
        : null,
    ]);
  }

  add(a: Var, bVar: Var): Var {
    const [av, bv] = [asValue(a), asValue(bVar)];
    // A bf16 side (a bf16 product's output on the residual stream) takes its rounded copy
    // instead of an f32 one that its product would round.
    const side = (d: Tensor, narrow: boolean): Tensor => (narrow ? this.backend.cast(d, "bf16") : d);
    return this.result(this.backend.add(av.value, bv.value), [av, bv], (d, _needs, narrow) => [side(d, narrow[0]!), side(d, narrow[1]!)], []);
  }

  mul(a: Var, bVar: Var): Var {
    const [av, bv] = [asValue(a), asValue(bVar)];
    const b = this.backend;
    return this.result(b.mul(av.value, bv.value), [av, bv], (d, needs) => [
      needs[0] ? b.mul(d, bv.value) : null,
      needs[1] ? b.mul(d, av.value) : null,
    ]);
  }

  scale(x: Var, s: number): Var {
    const xv = asValue(x);
    return this.result(this.backend.scale(xv.value, s), [xv], (d) => [this.backend.scale(d, s)], []);
  }

  swiglu(gate: Var, up: Var, outDtype: DType = "f32"): Var {
    const [gv, uv] = [asValue(gate), asValue(up)];
    const b = this.backend;
    const out = this.result(b.swiglu(gv.value, uv.value, outDtype), [gv, uv], (d, _needs, narrow) => {
      const { dgate, dup } = b.swigluBackward(gv.value, uv.value, d, narrow[0] && narrow[1] ? "bf16" : "f32");
      return [dgate, dup];
    }, [gv.value, uv.value]);
    return this.evictableOutput(out, [gv, uv], () => b.swiglu(gv.value, uv.value, outDtype));
  }

  gelu(x: Var): Var {
    const xv = asValue(x);
    return this.result(this.backend.gelu(xv.value), [xv], (d) => [this.backend.geluBackward(xv.value, d)], [xv.value]);
  }

  dropout(x: Var, p: number, seed: number): Var {
    const xv = asValue(x);
    if (p === 0) return xv;
    return this.result(this.backend.dropout(xv.value, p, seed), [xv], (d) => [this.backend.dropoutBackward(d, p, seed)], []);
  }

  rmsNorm(x: Var, weight: Var, eps: number, outDtype: DType = "f32"): Var {
    const [xv, wv] = [asValue(x), asValue(weight)];
    const b = this.backend;
    const { y, rstd } = b.rmsNorm(xv.value, wv.value, eps, outDtype);
    const saved = this.save(rstd);
    const out = this.result(y, [xv, wv], (dy, needs, _narrow, into) => {
      // Norm weights are frozen under LoRA: their gradient pass is skipped when nothing needs it.
      // dx joins the residual stream's gradient so far (the skip path's) where there is one.
      const { dx, dweight } = b.rmsNormBackward(xv.value, wv.value, saved!, dy, needs[1], into[0] ?? undefined);
      return [dx, dweight];
    }, [xv.value, wv.value]);
    return this.evictableOutput(out, [xv, wv], () => {
      const again = b.rmsNorm(xv.value, wv.value, eps, outDtype);
      again.rstd.free();
      return again.y;
    });
  }

  rope(x: Var, cos: Tensor, sin: Tensor, outDtype: DType = "f32"): Var {
    const xv = asValue(x);
    const b = this.backend;
    return this.result(b.rope(xv.value, cos, sin, false, outDtype), [xv], (d, _needs, narrow) => [b.rope(d, cos, sin, true, narrow[0] ? "bf16" : "f32")], [cos, sin]);
  }

  attention(q: Var, k: Var, v: Var, mask: AttentionMask, scale: number, precision: MatmulPrecision = "f32"): Var {
    const [qv, kv, vv] = [asValue(q), asValue(k), asValue(v)];
    const b = this.backend;
    const { out, lse } = b.attention(qv.value, kv.value, vv.value, mask, scale, precision);
    const savedLse = this.save(lse);
    return this.result(out, [qv, kv, vv], (dout) => {
      const { dq, dk, dv } = b.attentionBackward(qv.value, kv.value, vv.value, out, savedLse!, dout, mask, scale, precision);
      return [dq, dk, dv];
    }, [qv.value, kv.value, vv.value, out]);
  }

  reshape(x: Var, shape: readonly number[]): Var {
    const xv = asValue(x);
    const view = xv.value.reshape(shape);
    const out = new Value(view, xv.requiresGrad, false);
    xv.consumers++;
    xv.viewed = true;
    out.viewOf = xv;
    if (this.tape && xv.requiresGrad) this.record(this.tape, { inputs: [xv], output: out, backward: (d) => [d.reshape(xv.value.shape)], readInputs: [] });
    return out;
  }

  sliceRows(x: Var, start: number, count: number): Var {
    const xv = asValue(x);
    const b = this.backend;
    return this.result(b.sliceRows(xv.value, start, count), [xv], (d) => {
      const dx = b.zeros(xv.value.shape, "f32");
      const rows = b.upload(Int32Array.from({ length: count }, (_, i) => start + i), [count], "i32");
      b.scatterRowsInPlace(dx, rows, d);
      rows.free();
      return [dx];
    });
  }

  concatRows(parts: readonly Var[]): Var {
    const pv = parts.map(asValue);
    const b = this.backend;
    return this.result(b.concatRows(pv.map((p) => p.value)), pv, (d, needs) => {
      let offset = 0;
      return pv.map((p, i) => {
        const rows = p.value.shape[0] ?? 1;
        const slice = needs[i] ? b.sliceRows(d, offset, rows) : null;
        offset += rows;
        return slice;
      });
    });
  }

  gatherRows(x: Var, index: Tensor): Var {
    const xv = asValue(x);
    const b = this.backend;
    return this.result(b.gatherRows(xv.value, index), [xv], (d) => {
      const dx = b.zeros(xv.value.shape, "f32");
      b.scatterAddRowsInPlace(dx, index, d);
      return [dx];
    });
  }

  scatterRows(dst: Var, index: Tensor, src: Var): Var {
    const [dv, sv] = [asValue(dst), asValue(src)];
    const b = this.backend;
    const out = dv.value.dtype === sv.value.dtype ? b.copy(dv.value) : b.cast(dv.value, "f32");
    b.scatterRowsInPlace(out, index, sv.value);
    return this.result(out, [dv, sv], (d, needs) => {
      let ddst: Tensor | null = null;
      if (needs[0]) {
        ddst = b.copy(d);
        const zeros = b.zeros(sv.value.shape, "f32");
        b.scatterRowsInPlace(ddst, index, zeros);
        zeros.free();
      }
      return [ddst, needs[1] ? b.gatherRows(d, index) : null];
    });
  }

  permute(x: Var, index: Tensor, outShape: readonly number[]): Var {
    const xv = asValue(x);
    const b = this.backend;
    return this.result(b.gatherElements(xv.value, index, outShape), [xv], (d) => [b.scatterElements(d, index, xv.value.shape)]);
  }

  crossEntropy(logits: Var, labels: Tensor, ignoreIndex: number, counted?: number): Var {
    const lv = asValue(logits);
    const b = this.backend;
    let rows = counted;
    if (rows === undefined) {
      rows = 0;
      for (const label of b.read(labels)) if (label !== ignoreIndex) rows++;
    }
    const n = rows;
    // With no counted row the mean is 0/0 = NaN, as in torch.
    const { loss: sum } = b.crossEntropy(lv.value, labels, ignoreIndex);
    const mean = b.scale(sum, 1 / n);
    sum.free();
    return this.result(mean, [lv], (d) => {
      // dlogits is recomputed here rather than kept from the forward pass: [N, V] is large. The
      // upstream gradient is read back only when backward() did not start from this loss.
      const upstream = this.seed?.tensor === d ? this.seed.value : b.read(d)[0]!;
      const { loss, dlogits } = b.crossEntropy(lv.value, labels, ignoreIndex, upstream / n);
      loss.free();
      return [dlogits!];
    });
  }

  // ---- memory and recomputation ------------------------------------------------------------

  scope<T extends Var | readonly Var[]>(body: () => T): T {
    const mark = this.owned.length;
    const evictMark = this.evictable.length;
    const checkpoints = this.checkpointsRecorded;
    const result = body();
    // While taping, what a checkpoint inside recorded may read is not known: keep everything.
    if (this.tape && this.checkpointsRecorded !== checkpoints) return result;
    const returned: readonly Var[] = Array.isArray(result) ? (result as readonly Var[]) : [result as Var];
    const kept = new Set<unknown>(returned.map((v) => v.value.storage));
    // Selective recomputation: the scope's element-wise outputs go even where a backward reads them.
    const evicted = new Set<unknown>();
    const passedOut: Value[] = [];
    for (const v of this.evictable.splice(evictMark)) {
      if (v.viewed) continue;
      // Returned: the enclosing scope may still drop it.
      if (kept.has(v.value.storage)) passedOut.push(v);
      else {
        evicted.add(v.value.storage);
        v.evicted = true;
      }
    }
    this.evictable.push(...passedOut);
    const survivors: Tensor[] = [];
    for (const t of this.owned.slice(mark)) {
      const read = this.tape !== null && this.backwardReads.has(t.storage as object) && !evicted.has(t.storage);
      if (kept.has(t.storage) || read) survivors.push(t);
      else t.free();
    }
    this.owned.length = mark;
    this.owned.push(...survivors);
    return result;
  }

  checkpoint(inputs: readonly Var[], body: (inputs: readonly Var[]) => Var): Var {
    const tape = this.tape;
    if (!tape) return this.scope(() => body(inputs));
    this.tape = null;
    let out: Value;
    try {
      out = asValue(this.scope(() => body(inputs)));
    } finally {
      this.tape = tape;
    }
    if (out.requiresGrad && !inputs.includes(out)) {
      this.record(tape, { inputs: inputs.map(asValue), output: out, recompute: () => asValue(body(inputs)), readInputs: inputs.map(asValue) });
      this.checkpointsRecorded++;
      for (const v of inputs) this.backwardReads.add(v.value.storage as object);
    }
    return out;
  }

  backward(loss: Var, gradScale = 1): void {
    const lv = asValue(loss);
    if (!this.tape) throw new TensorError("backward", "this graph does not record (create it with recording: true)");
    if (!lv.requiresGrad) throw new TensorError("backward", "the loss does not depend on any parameter that requires a gradient");
    if (lv.value.size !== 1) throw new TensorError("backward", "the loss must have one element", { shapes: [lv.value.shape] });
    const grads = new Map<Value, Tensor>();
    const seedTensor = this.backend.upload(Float32Array.of(gradScale), lv.value.shape, "f32");
    grads.set(lv, seedTensor);
    this.seed = { tensor: seedTensor, value: gradScale };
    const tape = this.tape;
    this.tape = null;
    try {
      this.runBackward(tape, grads);
    } finally {
      this.seed = null;
      this.tape = tape;
      for (const g of grads.values()) g.free();
    }
  }

  private runBackward(nodes: readonly Node[], grads: Map<Value, Tensor>): void {
    for (let i = nodes.length - 1; i >= 0; i--) {
      const node = nodes[i]!;
      const dout = grads.get(node.output);
      if (!dout) {
        this.doneReading(node); // no gradient reached it: it will never read its inputs
        continue;
      }
      grads.delete(node.output);
      if (node.recompute) {
        this.recompute(node.recompute, dout, grads);
        this.doneReading(node);
        continue;
      }
      for (const v of node.readInputs) if (v.evicted) this.remakeValue(v);
      // Sums so far that the op may add into: f32, of an intermediate (a leaf's .grad is the
      // caller's), and of an input the op takes once.
      const into = node.inputs.map((v, j) => {
        const g = v.isLeaf ? null : (grads.get(v) ?? null);
        return g && g.dtype === "f32" && node.inputs.indexOf(v) === j && node.inputs.lastIndexOf(v) === j ? g : null;
      });
      const results = node.backward!(
        dout,
        node.inputs.map((v) => v.requiresGrad),
        node.inputs.map((v) => this.narrowGrad(v)),
        into,
      );
      // A tensor (or view of one) handed out twice, e.g. add's [dout, dout], is copied for the
      // second taker so that no two gradients share storage.
      const handed = new Set<unknown>();
      const deliveries: [Value, Tensor][] = [];
      results.forEach((g, j) => {
        if (!g || g === into[j]) return; // null, or already added into the input's sum
        const input = node.inputs[j]!;
        if (!input.requiresGrad) {
          if (g.storage !== dout.storage) g.free();
          return;
        }
        deliveries.push([input, handed.has(g.storage) ? this.backend.copy(g) : g]);
        handed.add(g.storage);
      });
      for (const [input, g] of deliveries) this.accumulate(input, g, grads);
      if (!handed.has(dout.storage)) dout.free();
      this.doneReading(node);
    }
  }

  /** Puts a node on a tape, counting it as a reader of the inputs its backward reads. */
  private record(tape: Node[], node: Node): void {
    tape.push(node);
    for (const v of new Set(node.readInputs)) v.readersLeft++;
  }

  /** A remade value goes again once the last backward that reads it has run (or been skipped). */
  private doneReading(node: Node): void {
    for (const v of new Set(node.readInputs)) {
      if (v.readersLeft > 0) v.readersLeft--;
      if (v.readersLeft === 0 && v.remade) {
        v.value.free();
        v.remade = false;
        v.evicted = true;
      }
    }
  }

  /** Makes an evicted value again for the backward about to read it (and its readers still to run). */
  private remakeValue(v: Value): void {
    for (const input of v.remakeInputs) if (input.evicted) this.remakeValue(input);
    v.value = this.own(v.remake!());
    v.evicted = false;
    v.remade = true;
  }

  /**
   * Whether v's gradient may be written as bf16 without changing any number: v is bf16, and its
   * gradient reaches, without being summed with another one, a product that rounds it to bf16
   * first (v, and every view between, has one consumer).
   */
  private narrowGrad(v: Value): boolean {
    if (!this.narrowGradients || v.isLeaf || !v.requiresGrad || v.consumers !== 1 || v.value.dtype !== "bf16") return false;
    return v.roundsGrad || (v.viewOf !== null && this.narrowGrad(v.viewOf));
  }

  private accumulate(input: Value, g: Tensor, grads: Map<Value, Tensor>): void {
    const grad = sameShape(g.shape, input.value.shape) ? g : g.reshape(input.value.shape);
    const existing = input.isLeaf ? input.grad : (grads.get(input) ?? null);
    if (existing) {
      this.backend.addInPlace(existing, grad);
      grad.free();
    } else if (input.isLeaf) {
      input.grad = grad;
    } else {
      grads.set(input, grad);
    }
  }

  /** Re-runs a checkpointed body recorded, back-propagates through it, then frees what it made. */
  private recompute(body: () => Value, dout: Tensor, grads: Map<Value, Tensor>): void {
    const mark = this.owned.length;
    const inner: Node[] = [];
    this.tape = inner;
    let out: Value;
    try {
      // As a layer's scope does without recomputation: what no backward reads goes at once.
      out = asValue(this.scope(() => body()));
    } finally {
      this.tape = null;
    }
    grads.set(out, dout);
    this.runBackward(inner, grads);
    const leftover = grads.get(out);
    if (leftover) {
      leftover.free();
      grads.delete(out);
    }
    for (const t of this.owned.slice(mark)) t.free();
    this.owned.length = mark;
  }

  dispose(): void {
    for (const t of this.owned) t.free();
    this.owned = [];
    if (this.tape) this.tape.length = 0;
  }
}
