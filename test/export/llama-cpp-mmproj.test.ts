import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { exportGguf } from "../../src/export/gguf/export.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { openCheckpoint, toFloat32 } from "../../src/io/safetensors.ts";
import { REPO_ROOT } from "../helpers/cli.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

/**
 * The exported mmproj run by llama.cpp's own vision code (tools/mtmd/clip.cpp, pixtral graph):
 * `llama-mtmd-debug -p encode --image rainbow` feeds a synthetic image straight to the encoder and
 * prints the projector's output, [IMG_BREAK] rows included; splint's projector output for the same
 * pixels must agree. node-llama-cpp 3.21.1 has no multimodal binding, so this needs the binary
 * tools/llama-cpp/build.sh builds from the llama.cpp source node-llama-cpp ships (same release as
 * its prebuilt binary); LLAMA_MTMD_DEBUG may point elsewhere. Without it the test is skipped.
 */

const F = join(import.meta.dirname, "..", "fixtures");
const TINY = join(F, "models", "tiny");
const BIN = process.env.LLAMA_MTMD_DEBUG ?? join(REPO_ROOT, "node_modules", ".cache", "splint-llama-cpp", "bin", "llama-mtmd-debug");
const SIZE = 112;

/** mtmd-debug's "rainbow" input, in f32 as its C++ computes it. */
function rainbow(size: number): Float32Array {
  const fr = Math.fround;
  const px = new Float32Array(3 * size * size);
  const c = size / 2;
  const maxDist = fr(Math.sqrt(2 * c * c));
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const dx = x - c;
      const dy = y - c;
      let hue = fr(fr(Math.atan2(dy, dx)) / fr(2 * 3.14159265));
      if (hue < 0) hue = fr(hue + 1);
      const sat = Math.min(1, fr(fr(Math.sqrt(dx * dx + dy * dy)) / maxDist));
      const h6 = fr(hue * 6);
      const i6 = Math.trunc(h6);
      const f = fr(h6 - i6);
      const p = fr(1 - sat);
      const q = fr(1 - fr(sat * f));
      const t = fr(1 - fr(sat * fr(1 - f)));
      const rgb = [[1, t, p], [q, 1, p], [p, 1, t], [p, q, 1], [t, p, 1], [1, p, q]][i6 % 6]!;
      for (let ch = 0; ch < 3; ch++) px[ch * size * size + y * size + x] = rgb[ch]!;
    }
  }
  return px;
}

/** The rows mtmd-debug prints for the first node whose header contains `header`: [first three …, last three] each. */
function parseRows(log: string, header: string): number[][] | undefined {
  const at = log.indexOf(header);
  if (at < 0) return undefined;
  const rows: number[][] = [];
  for (const line of log.slice(at).split("\n").slice(1)) {
    if (line.includes("sum =")) break;
    const m = /^\s*\[\s*([-\d.e+\s,]+?),\s*\.\.\.,\s*([-\d.e+\s,]+?)\s*\],?\s*$/.exec(line);
    if (m) rows.push([...m[1]!.split(","), ...m[2]!.split(",")].map(Number));
  }
  return rows;
}

test("llama.cpp's clip (pixtral) encodes an image with the exported mmproj as splint's vision tower and projector do", { skip: existsSync(BIN) ? false : `no ${BIN}: run tools/llama-cpp/build.sh (or set LLAMA_MTMD_DEBUG)` }, async () => {
  await withTempDir("splint-mmproj-", async (root) => {
    const out = join(root, "gguf");
    const result = await exportGguf({ modelDir: TINY, outDir: out, quant: "bf16" });
    // The projector's output (mm.2) and the [IMG_BREAK] rows (its ADD), read from the log file:
    // llama.cpp's logger writes on its own thread and can lose the tail at exit, so a run whose
    // log stops early is repeated.
    const logFile = join(root, "mtmd-debug.log");
    const args = ["-m", join(out, result.text.file), "--mmproj", join(out, result.mmproj.file), "-p", "encode", "-n", String(SIZE), "--image", "rainbow", "--log-file", logFile];
    let image: number[][] | undefined;
    let breaks: number[][] | undefined;
    for (let attempt = 0; attempt < 3 && !(image && breaks); attempt++) {
      const run = spawnSync(BIN, args, { encoding: "utf8", stdio: ["ignore", "ignore", "pipe"] });
      assert.equal(run.status, 0, run.stderr.slice(-2000));
      const log = readFileSync(logFile, "utf8");
      image = parseRows(log, "MUL_MAT(mm.2.weight");
      breaks = parseRows(log, "v.token_embd.img_break{");
    }
    assert.ok(image && breaks, `no projector output in ${logFile}`);
    const grid = SIZE / 28;
    // ggml's debug print shows the first and last three rows of a 16-row tensor
    assert.equal(image.length, 6, "rows 0-2 and 13-15 of the 4 × 4 merged patches");
    const imageRows = [0, 1, 2, grid * grid - 3, grid * grid - 2, grid * grid - 1];
    assert.equal(breaks.length, grid, "one [IMG_BREAK] per row");

    const backend = createCpuBackend();
    const model = await loadMistral3(TINY, backend, { dtype: "f32" });
    const ids: number[] = [1, 3];
    for (let r = 0; r < grid; r++) {
      for (let c = 0; c < grid; c++) ids.push(10);
      ids.push(r === grid - 1 ? 13 : 12);
    }
    ids.push(4);
    const graph = createGraph(backend, { recording: false });
    const ctx = new ForwardContext(graph);
    let mine: Float32Array | undefined;
    try {
      forwardMistral3(
        ctx,
        model,
        { batch: 1, seqLen: ids.length, inputIds: Int32Array.from(ids), positionIds: Int32Array.from(ids, (_, i) => i), images: { pixelValues: rainbow(SIZE), shape: [1, 3, SIZE, SIZE], imageSizes: Int32Array.from([SIZE, SIZE]) } },
        { capture: (name, v) => void (name === "projector.out" && (mine = Float32Array.from(backend.read(v.value) as Float32Array))) },
      );
    } finally {
      graph.dispose();
      ctx.release();
      freeMistral3(model);
    }
    const D = 48;
    const source = await openCheckpoint(TINY);
    const breakRow = toFloat32(await source.read("language_model.model.embed_tokens.weight")).slice(12 * D, 13 * D);
    await source.close();
    let worst = 0;
    const compare = (got: number[], want: Float32Array) => {
      const shown = [want[0]!, want[1]!, want[2]!, want[D - 3]!, want[D - 2]!, want[D - 1]!];
      for (let k = 0; k < 6; k++) worst = Math.max(worst, Math.abs(got[k]! - shown[k]!));
    };
    imageRows.forEach((row, i) => compare(image[i]!, mine!.subarray(row * D, (row + 1) * D)));
    for (const b of breaks) compare(b, breakRow);
    // llama.cpp prints 4 decimals and runs the bf16 weights with its own kernels (GELU by its
    // approximation); splint computes in f32. Measured: 1.3e-3 (values of order 0.3). The same
    // export without the vision q/k row permutation measured 4.6e-3: this random tower's attention
    // depends little on position, so the bound is tight on purpose.
    console.log(`largest difference from llama.cpp: ${worst}`);
    assert.ok(worst < 2.5e-3, `largest difference ${worst}`);
  });
});
