import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { readRecipe } from "../../src/demo/recipe.ts";

test("the FP8 tutorial recipe is the tutorial's with Mistral's FP8 checkpoint as the model", async () => {
  const dir = join(import.meta.dirname, "../../recipes");
  const fp8 = await readRecipe(join(dir, "ministral3-14b-fp8-bone-fracture.yaml"));
  const bf16 = await readRecipe(join(dir, "ministral3-14b-bone-fracture.yaml"));
  assert.deepEqual(fp8.model, { kind: "hub", repo: "mistralai/Ministral-3-14B-Instruct-2512", revision: "main" });
  assert.deepEqual(fp8.train, bf16.train);
  assert.deepEqual(fp8.data, bf16.data);
  assert.notEqual(fp8.runDir, bf16.runDir);
});
