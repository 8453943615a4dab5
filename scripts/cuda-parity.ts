/**
 * The backend parity suite as a report: runs every case of test/cuda/parity-cases.ts on the CUDA
 * and CPU backends, prints a table (op, outputs, max abs/rel error, tolerance, verdict) and writes
 * parity.json and parity.md into the output folder. Exit code 1 when a case fails, 2 when the CUDA
 * backend cannot start.
 *
 *   node --import tsx scripts/cuda-parity.ts [--out DIR] [--seed N] [--only TEXT]
 *
 * --only keeps the cases whose name contains TEXT (scripts/gpu-check's flash variants run the
 * "flash attention" ones against each variant build).
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { createCudaBackend } from "../src/backends/cuda/index.ts";
import { type CaseResult, parityCases, runCase } from "../test/cuda/parity-cases.ts";

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

function fmt(x: number): string {
  return x === 0 ? "0" : Number.isFinite(x) ? x.toExponential(2) : String(x);
}

function table(results: readonly CaseResult[]): string {
  const lines = [
    "| op | outputs | max abs err | max rel err | max ‖err‖/‖ref‖ | tolerance (atol, rtol[, norm]) | result |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of results) {
    const maxAbs = Math.max(0, ...r.comparisons.map((c) => c.maxAbs));
    const maxRel = Math.max(0, ...r.comparisons.map((c) => c.maxRel));
    const normRel = Math.max(0, ...r.comparisons.map((c) => c.normRel));
    const tol = `${r.tolerance.atol}, ${r.tolerance.rtol}${r.tolerance.normRel === undefined ? "" : `, ${r.tolerance.normRel}`}`;
    const outputs = r.comparisons.map((c) => c.output).join(", ");
    const verdict = r.ok ? "ok" : r.error ? `ERROR ${r.error.split("\n")[0]}` : `FAIL (${r.comparisons.filter((c) => c.violations > 0).map((c) => `${c.output}: ${c.violations}/${c.count}`).join("; ")})`;
    lines.push(`| ${r.name} | ${outputs} | ${fmt(maxAbs)} | ${fmt(maxRel)} | ${fmt(normRel)} | ${tol} | ${verdict} |`);
  }
  return lines.join("\n");
}

function main(): number {
  const outDir = argValue("--out") ?? process.env.OUT ?? "out/gpu-check";
  const seedArg = argValue("--seed") ?? process.env.SPLINT_PARITY_SEED;
  const seed = seedArg ? Number(seedArg) : Math.floor(Math.random() * 2 ** 31);
  mkdirSync(outDir, { recursive: true });
  let cuda;
  try {
    cuda = createCudaBackend();
  } catch (err) {
    console.error(`cuda backend unavailable: ${(err as Error).message}`);
    return 2;
  }
  const cpu = createCpuBackend();
  console.error(`backend parity: ${cuda.device}, seed ${seed}`);
  const results: CaseResult[] = [];
  const started = Date.now();
  const only = argValue("--only");
  for (const c of parityCases().filter((pc) => only === undefined || pc.name.includes(only))) {
    const r = runCase(c, cuda, cpu, seed);
    results.push(r);
    if (r.error) console.error(`${c.name}: ${r.error}`);
  }
  const stats = cuda.allocatorStats();
  cuda.dispose();
  const failed = results.filter((r) => !r.ok).length;
  const summary = `${results.length - failed}/${results.length} cases within tolerance (seed ${seed}, ${cuda.device}, ${((Date.now() - started) / 1000).toFixed(1)} s; allocator peak ${stats.peak} B, ${stats.mallocs} cudaMalloc calls)`;
  const md = `# Backend parity: CUDA vs CPU\n\n${summary}\n\n${table(results)}\n\nTolerances: |cuda − cpu| ≤ atol + rtol·|cpu| per element; infinities must match; where a norm bound is given, also ‖cuda − cpu‖₂ ≤ norm·‖cpu‖₂.\n\n${[...new Set(results.map((r) => `- ${r.tolerance.atol}, ${r.tolerance.rtol}: ${r.tolerance.why}`))].join("\n")}\n`;
  writeAtomic(join(outDir, "parity.md"), md);
  writeAtomic(join(outDir, "parity.json"), `${JSON.stringify({ device: cuda.device, seed, results, allocator: stats }, null, 1)}\n`);
  console.log(table(results));
  console.log(summary);
  return failed === 0 ? 0 : 1;
}

process.exitCode = main();
