import assert from "node:assert/strict";
import { test } from "node:test";
import { parseAnswer } from "../../src/eval/answer.ts";
import { INVALID } from "../../src/eval/metrics.ts";

const names = ["Avulsion fracture", "Hairline Fracture", "Spiral Fracture"];

test("an exact class name is an exact match", () => {
  assert.deepEqual(parseAnswer("Hairline Fracture", names), { label: 1, match: "exact" });
  assert.deepEqual(parseAnswer("  Spiral Fracture</s>\n", names), { label: 2, match: "exact" });
});

test("case, spacing and punctuation differences are a normalized match", () => {
  assert.deepEqual(parseAnswer("hairline  fracture.", names), { label: 1, match: "normalized" });
  assert.deepEqual(parseAnswer("**Avulsion fracture**", names), { label: 0, match: "normalized" });
});

test("prose around a class name, other words, and empty answers are invalid", () => {
  for (const answer of ["It is a Hairline Fracture", "fracture", "", "</s>", "Greenstick fracture"]) {
    assert.equal(parseAnswer(answer, names).label, INVALID, answer);
  }
});
