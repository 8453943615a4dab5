/**
 * Programmatic dependent launch is only safe when every kernel that may be launched early waits
 * for its predecessor first (native/cuda/src/common.cuh, pdl_prologue). These checks read the
 * kernel sources, so a kernel added without the prologue, or launched around launch_kernel,
 * fails in CI before it can race on a GPU.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

const SRC = join(import.meta.dirname, "..", "..", "native", "cuda", "src");
const sources = readdirSync(SRC)
  .filter((f) => f.endsWith(".cu") || f.endsWith(".cuh"))
  .map((file) => ({ file, text: stripComments(readFileSync(join(SRC, file), "utf8")) }));

function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
}

/** Index of the bracket closing the one at `open`. */
function closing(text: string, open: number): number {
  const [o, c] = [text[open]!, text[open] === "(" ? ")" : "}"];
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === o) depth++;
    else if (text[i] === c && --depth === 0) return i;
  }
  throw new Error(`unbalanced ${o} at ${open}`);
}

/** Each __global__ function: its name and the first statement of its body. */
function kernels(text: string): { name: string; first: string }[] {
  const found: { name: string; first: string }[] = [];
  for (const m of text.matchAll(/__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(/g)) {
    const params = m.index + m[0].length - 1;
    const body = text.indexOf("{", closing(text, params));
    const first = text.slice(body + 1).trimStart().split(";")[0]!.trim();
    found.push({ name: m[1]!, first });
  }
  return found;
}

test("every kernel begins with pdl_prologue()", () => {
  let count = 0;
  for (const { file, text } of sources) {
    const found = kernels(text);
    assert.equal(found.length, text.match(/__global__/g)?.length ?? 0, `${file}: a __global__ the parser does not read`);
    for (const k of found) {
      count++;
      assert.equal(k.first, "pdl_prologue()", `${file}: kernel ${k.name} must start with pdl_prologue(); it starts with "${k.first}"`);
    }
  }
  assert.ok(count >= 50, `found only ${count} kernels: the parser no longer sees them`);
});

test("kernels are launched through launch_kernel, or cudaLaunchKernelEx with programmatic_launch_attr", () => {
  for (const { file, text } of sources) {
    assert.ok(!text.includes("<<<"), `${file}: a <<<>>> launch bypasses launch_kernel (no PDL attribute)`);
    if (file === "common.cuh") continue;
    const direct = text.match(/cudaLaunchKernelEx\s*\(/g)?.length ?? 0;
    const attributed = text.match(/programmatic_launch_attr\s*\(/g)?.length ?? 0;
    assert.equal(attributed, direct, `${file}: ${direct} cudaLaunchKernelEx calls but ${attributed} programmatic_launch_attr`);
  }
});

test("the parser finds a kernel's first statement and flags one without the prologue", () => {
  const code = "template <int N>\n__global__ void __launch_bounds__(256) good(const float* x,\n int n) {\n  pdl_prologue();\n  x[0];\n}\n__global__ void bad(int n) { if (n) return; pdl_prologue(); }";
  assert.deepEqual(kernels(code), [
    { name: "good", first: "pdl_prologue()" },
    { name: "bad", first: "if (n) return" },
  ]);
});
