/**
 * bench/train-step.ts on the host stub (bench/host-stub.ts) for every size and recomputation
 * setting: what the CUDA backend asks of the host per micro-batch, measured without a GPU.
 *
 *   node --import tsx bench/host-stub-bench.ts [--out FILE.md] [--json FILE.json] [--sizes 3b,8b,14b] [--steps 8]
 *
 * Per row: backend calls (each one or more kernel launches on a GPU), the caching allocator's
 * high-water mark of live bytes (the stub counts them as the device allocator does, so this is
 * the peak bench/train-step.ts reports on the GPU, less what native code allocates for itself:
 * the FP8 path's widening scratch) beside the memory planner's estimate, and the host's
 * milliseconds per micro-batch with no device work (noisy on a shared 2-core machine: a floor the
 * GPU step cannot go below, not a speed figure).
 *
 * train-step.ts runs as the GPU machine runs it: one esbuild bundle (scripts/carry-bundle.sh's
 * bundle_entries), not through tsx, whose per-closure name helper (keepNames) alone cost the host a few
 * percent of the step.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildHostStub } from "./host-stub.ts";

interface StepRow {
  size: string;
  recompute: string;
  weights: string;
  medianMs: number;
  peakBytes: number;
  plannedPeakBytes: number;
  profile: { backendCalls: number };
}

const GIB = 2 ** 30;
const SETTINGS: readonly [recompute: string, weights: string][] = [
  ["none", "bf16"],
  ["selective", "bf16"],
  ["full", "bf16"],
  ["full", "fp8"],
];

/** Bundles bench/train-step.ts with scripts/carry-bundle.sh's bundle_entries (the GPU machine's bundle); returns its path. */
function bundleTrainStep(): string {
  const root = join(import.meta.dirname, "..");
  // Inside the repository, so the packages left outside the bundle resolve from its node_modules.
  const dir = join(root, "node_modules", ".cache", "splint-host-stub");
  mkdirSync(dir, { recursive: true });
  execFileSync("bash", ["-c", 'source "$1/scripts/carry-bundle.sh" && bundle_entries "$1" "$2" bench/train-step.ts:train-step', "bundle", root, dir], { stdio: "inherit" });
  return join(dir, "train-step.mjs");
}

function main(): void {
  const { values } = parseArgs({ options: { out: { type: "string" }, json: { type: "string" }, sizes: { type: "string", default: "3b,8b,14b" }, steps: { type: "string", default: "8" } } });
  const trainStep = bundleTrainStep();
  const lib = buildHostStub(mkdtempSync(join(tmpdir(), "splint-host-stub-")));
  const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  const rows: StepRow[] = [];
  for (const size of values.sizes.split(",")) {
    for (const [recompute, weights] of SETTINGS) {
      if (weights === "fp8" && size !== "14b") continue;
      const args = [trainStep, "--size", size, "--recompute", recompute, "--weights", weights, "--steps", values.steps, "--warmup", "3"];
      const out = execFileSync(process.execPath, args, { encoding: "utf8", env: { ...process.env, SPLINT_CUDA_LIB: lib }, stdio: ["ignore", "pipe", "ignore"] });
      rows.push(JSON.parse(out.trim().split("\n").at(-1)!) as StepRow);
      process.stderr.write(`${size} recompute ${recompute} ${weights}: done\n`);
    }
  }
  const md = [
    `# bench/train-step.ts on the host stub, ${commit}`,
    "",
    "`node --import tsx bench/host-stub-bench.ts`: the CUDA backend's TypeScript side against a library that does no device work (bench/host-stub.ts). Backend calls per micro-batch (a GPU runs one or more kernels for each), the allocator's peak of live bytes beside the memory planner's estimate, and the host's median milliseconds per micro-batch without device work.",
    "",
    "| size | recompute | weights | backend calls | peak live (GiB) | planner (GiB) | host ms / micro-batch |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ...rows.map((r) => `| ${r.size} | ${r.recompute} | ${r.weights} | ${r.profile.backendCalls} | ${(r.peakBytes / GIB).toFixed(2)} | ${(r.plannedPeakBytes / GIB).toFixed(2)} | ${r.medianMs.toFixed(1)} |`),
    "",
  ].join("\n");
  if (values.out) writeFileSync(values.out, md);
  // The rows as bench/train-step.ts wrote them, in the results layout of gpu-bench's JSON.
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ machine: "host stub (no device work)", commit, results: rows })}\n`);
  process.stdout.write(md);
}

main();
