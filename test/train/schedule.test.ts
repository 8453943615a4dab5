import assert from "node:assert/strict";
import { test } from "node:test";
import { learningRate } from "../../src/train/schedule.ts";
import { Rng } from "../../src/util/rng.ts";

test("linear schedule with warmup follows transformers' get_linear_schedule_with_warmup", () => {
  // lr_lambda(s) = s/w for s < w, else (T - s)/(T - w)
  const lr = (s: number) => learningRate("linear", 2e-4, s, 25, 124);
  assert.equal(lr(0), 0);
  assert.equal(lr(5), 2e-4 * (5 / 25));
  assert.equal(lr(25), 2e-4);
  assert.ok(Math.abs(lr(74) - 2e-4 * (50 / 99)) < 1e-18);
  assert.equal(lr(124), 0);
  assert.equal(lr(200), 0);
});

test("cosine schedule ends at zero and is halfway at the midpoint", () => {
  assert.ok(Math.abs(learningRate("cosine", 1, 55, 10, 100) - 0.5) < 1e-12);
  assert.ok(Math.abs(learningRate("cosine", 1, 100, 10, 100)) < 1e-12);
});

test("Rng is deterministic, resumable from its snapshot, and permutations are permutations", () => {
  const a = new Rng(42);
  const first = [a.next(), a.next()];
  const resumed = new Rng(a.snapshot);
  const b = new Rng(42);
  assert.deepEqual([b.next(), b.next()], first);
  assert.equal(resumed.next(), a.next());
  const p = new Rng(7).permutation(50);
  assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  assert.notDeepEqual(p, Array.from({ length: 50 }, (_, i) => i));
  let sum = 0;
  const r = new Rng(1);
  for (let i = 0; i < 10000; i++) sum += r.next();
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
});
