/**
 * GGUF export time and peak memory (issue 18) on a random-weight checkpoint written in the real
 * Hugging Face layout (config.json of bench/workload.ts's size, sharded BF16 safetensors of ≤ 5 GB,
 * the tiny tokenizer), so the 14B architecture's tensors go through exactly the path a real
 * checkpoint takes: lazy shard reads, row slices, q/k permutation, quantisation, streamed writes.
 *
 *   node --import tsx bench/gguf-export.ts [--size 14b] [--quant q8_0,q4_k_m] [--dir DIR] [--keep] [--out FILE.md]
 *
 * Each export runs in its own child process, which reports its wall time, CPU time and peak
 * resident set (process.resourceUsage().maxRSS: what the export itself held, page cache excluded,
 * since the checkpoint is read with positioned reads, not mapped). The weights are a 16M-value
 * pool of N(0, 0.02) bf16 values laid out at a different offset for every tensor: random enough
 * for quantisation to do its real work, cheap enough to write 28 GB.
 */
import { execSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { exportGguf } from "../src/export/gguf/export.ts";
import { EXPORT_QUANTS, type ExportQuant } from "../src/export/gguf/tensor-map.ts";
import { writeShardedCheckpoint, type TensorToWrite } from "../src/io/safetensors.ts";
import { parseMistral3Config } from "../src/models/mistral3/config.ts";
import { expectedWeights } from "../src/models/mistral3/weights.ts";
import { f32ArrayToBf16 } from "../src/tensor/bf16.ts";
import { Rng } from "../src/util/rng.ts";
import { hfConfig, SIZES, type Size } from "./workload.ts";

const { values: args } = parseArgs({
  options: {
    size: { type: "string", default: "14b" },
    quant: { type: "string", default: "q8_0" },
    dir: { type: "string" },
    keep: { type: "boolean", default: false },
    out: { type: "string" },
    child: { type: "boolean", default: false },
    model: { type: "string" },
    target: { type: "string" },
    layers: { type: "string" },
    vocab: { type: "string" },
  },
});

interface ChildReport {
  quant: ExportQuant;
  seconds: number;
  cpuSeconds: number;
  peakRssMB: number;
  textBytes: number;
  mmprojBytes: number;
  types: Record<string, number | undefined>;
}

if (args.child) {
  const quant = args.quant as ExportQuant;
  const cpu0 = process.cpuUsage();
  const result = await exportGguf({ modelDir: args.model!, outDir: args.target!, quant });
  const cpu = process.cpuUsage(cpu0);
  const report: ChildReport = {
    quant,
    seconds: result.seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    peakRssMB: process.resourceUsage().maxRSS / 1024,
    textBytes: result.text.bytes,
    mmprojBytes: result.mmproj.bytes,
    types: { ...result.text.types },
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(0);
}

const size = args.size as Size;
if (!SIZES.includes(size)) throw new Error(`--size must be one of ${SIZES.join(", ")}`);
const quants = args.quant.split(",") as ExportQuant[];
for (const q of quants) if (!EXPORT_QUANTS.includes(q)) throw new Error(`--quant: ${q} is not one of ${EXPORT_QUANTS.join(", ")}`);

const root = args.dir ?? mkdtempSync(join(tmpdir(), "splint-gguf-bench-"));
const modelDir = join(root, `random-${size}`);
const raw = hfConfig(size);
// --layers N keeps every tensor shape of the size but only N decoder layers: peak memory is set by
// the largest tensors (embedding, head, one layer's projections), not by how many layers there are.
if (args.layers !== undefined) raw.text_config = { ...(raw.text_config as Record<string, unknown>), num_hidden_layers: Number(args.layers) };
// --vocab N shrinks the embedding and head (which pass through in slices anyway): for timing the
// slow k-quants on a loaded machine without changing what bounds memory.
if (args.vocab !== undefined) raw.text_config = { ...(raw.text_config as Record<string, unknown>), vocab_size: Number(args.vocab) };
const config = parseMistral3Config(raw, `${size} config`);

async function writeRandomCheckpoint(): Promise<{ params: number; bytes: number; seconds: number }> {
  const t0 = performance.now();
  mkdirSync(modelDir, { recursive: true });
  writeFileSync(join(modelDir, "config.json"), `${JSON.stringify({ ...raw, dtype: "bfloat16" }, null, 2)}\n`);
  const assets = new URL("../assets/tiny-tokenizer/", import.meta.url);
  for (const f of ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]) copyFileSync(new URL(f, assets), join(modelDir, f));
  const rng = new Rng(18);
  const POOL = 1 << 24;
  const poolF32 = new Float32Array(POOL);
  for (let i = 0; i < POOL; i++) poolF32[i] = 0.02 * Math.sqrt(-2 * Math.log(Math.max(rng.next(), 1e-12))) * Math.cos(2 * Math.PI * rng.next());
  const pool = f32ArrayToBf16(poolF32);
  const tied = raw.tie_word_embeddings === true;
  const specs = expectedWeights(config).filter((s) => !(tied && s.name === "lm_head.weight"));
  let params = 0;
  async function* tensors(): AsyncGenerator<TensorToWrite> {
    for (const [i, spec] of specs.entries()) {
      const n = spec.shape.reduce((a, b) => a * b, 1);
      params += n;
      const data = new Uint16Array(n);
      if (spec.shape.length === 1) {
        data.set(f32ArrayToBf16(Float32Array.from({ length: n }, (_, j) => 1 + poolF32[(i * 7919 + j) % POOL]!)));
      } else {
        for (let at = 0, off = (i * 7919) % POOL; at < n; ) {
          const take = Math.min(POOL - off, n - at);
          data.set(pool.subarray(off, off + take), at);
          at += take;
          off = 0;
        }
      }
      yield { name: spec.name, dtype: "BF16", shape: spec.shape, data };
    }
  }
  const written = await writeShardedCheckpoint(modelDir, tensors(), 5_000_000_000);
  return { params, bytes: written.totalSize, seconds: (performance.now() - t0) / 1000 };
}

const commit = execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
const dirty = execSync("git status --porcelain -- src bench", { encoding: "utf8" }).trim() !== "";
process.stderr.write(`writing a random ${size} checkpoint to ${modelDir}…\n`);
const checkpoint = await writeRandomCheckpoint();
process.stderr.write(`  ${(checkpoint.params / 1e9).toFixed(2)}B parameters, ${(checkpoint.bytes / 1e9).toFixed(1)} GB in ${checkpoint.seconds.toFixed(0)} s\n`);

const reports: ChildReport[] = [];
const load0 = loadavg()[0]!;
for (const quant of quants) {
  const target = join(root, `out-${quant}`);
  rmSync(target, { recursive: true, force: true });
  process.stderr.write(`exporting ${quant}…\n`);
  const run = spawnSync(process.execPath, ["--import", "tsx", new URL(import.meta.url).pathname, "--child", "--model", modelDir, "--target", target, "--quant", quant], {
    encoding: "utf8",
    env: { ...process.env, SPLINT_NO_PROGRESS: "1" },
    maxBuffer: 1 << 24,
  });
  if (run.status !== 0) throw new Error(`export ${quant} failed:\n${run.stderr}`);
  const report = JSON.parse(run.stdout.trim().split("\n").pop()!) as ChildReport;
  reports.push(report);
  process.stderr.write(`  ${JSON.stringify(report)}\n`);
  if (!args.keep) rmSync(target, { recursive: true, force: true });
}
const load1 = loadavg()[0]!;
if (!args.keep && args.dir === undefined) rmSync(root, { recursive: true, force: true });

const gb = (b: number) => (b / 1e9).toFixed(2);
const lines = [
  `# GGUF export, random-weight ${size} checkpoint${args.layers !== undefined ? `, ${args.layers} of its decoder layers` : ""}${args.vocab !== undefined ? `, vocabulary ${args.vocab}` : ""} (CPU)`,
  "",
  `Measured at commit ${commit}${dirty ? " (with uncommitted changes in src/ or bench/)" : ""} by \`node --import tsx bench/gguf-export.ts --size ${size} --quant ${quants.join(",")}${args.layers !== undefined ? ` --layers ${args.layers}` : ""}${args.vocab !== undefined ? ` --vocab ${args.vocab}` : ""}\`, ${new Date().toISOString().slice(0, 10)}.`,
  `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Node ${process.version}; 1-minute load average ${load0.toFixed(1)} before and ${load1.toFixed(1)} after the exports (the machine is shared: wall time is inflated by the load, CPU time much less so).`,
  "",
  `Source: ${(checkpoint.params / 1e9).toFixed(2)}B parameters, ${gb(checkpoint.bytes)} GB of BF16 safetensors in ≤ 5 GB shards (written in ${checkpoint.seconds.toFixed(0)} s).`,
  "",
  "| quant | wall s | CPU s | M params / CPU s | peak RSS | text GGUF | mmproj GGUF | text tensor types |",
  "|---|---|---|---|---|---|---|---|",
  ...reports.map(
    (r) =>
      `| ${r.quant} | ${r.seconds.toFixed(0)} | ${r.cpuSeconds.toFixed(0)} | ${(checkpoint.params / 1e6 / r.cpuSeconds).toFixed(1)} | ${(r.peakRssMB / 1024).toFixed(2)} GB | ${gb(r.textBytes)} GB | ${gb(r.mmprojBytes)} GB | ${Object.entries(r.types)
        .map(([k, n]) => `${n} ${k}`)
        .join(", ")} |`,
  ),
  "",
  "Peak RSS is the export process's own maximum resident set: Node, the tokenizer, and the largest tensor that must be held whole in f32 (an adapted or q/k-permuted projection; plain tensors pass in slices of 16M values).",
  "",
];
const md = lines.join("\n");
process.stdout.write(md);
if (args.out) {
  writeFileSync(args.out, md);
  writeFileSync(args.out.replace(/\.md$/, ".json"), `${JSON.stringify({ commit, dirty, size, checkpoint, reports, load: [load0, load1] }, null, 2)}\n`);
}
