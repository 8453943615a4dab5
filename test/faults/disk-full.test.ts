// Defect 9: a full disk was reported as "internal error" (exit 70). ENOSPC is injected through the
// real write calls (helpers/enospc-preload.mjs patches node:fs in the splint process) and must end
// in exit 74 with "disk full" and the path, leaving earlier work whole and no half-written output.
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { EXIT } from "../../src/util/errors.ts";
import { pngBytes, writeTree } from "../data/import-fixtures.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { TINY_MODEL, tinyDataset } from "../train/tiny-dataset.ts";
import { runSplintAsync } from "./helpers/cli.ts";

const PRELOAD = join(import.meta.dirname, "helpers", "enospc-preload.mjs");
const diskFull = (dir: string, after: number, match = "") => ({ preload: [PRELOAD], env: { SPLINT_FAULT_ENOSPC_DIR: dir, SPLINT_FAULT_ENOSPC_AFTER: String(after), SPLINT_FAULT_ENOSPC_MATCH: match } });

test("model init on a full disk: exit 74, 'disk full' with the path, no folder and no temp files left", async () => {
  await withTempDir("splint-faults-enospc-", async (dir) => {
    const out = join(dir, "model");
    const run = await runSplintAsync(["model", "init", out, "--json"], diskFull(dir, 64 * 1024));
    assert.equal(run.status, EXIT.filesystem, run.stderr);
    assert.match(run.stderr, /^error: disk full while writing .*\(ENOSPC\)$/m);
    assert.ok(run.stderr.includes(`while writing ${join(out, "model.safetensors")}`) || run.stderr.includes(`while writing ${join(out, "config.json")}`), "the message names the file meant, not its temporary name");
    assert.doesNotMatch(run.stderr, /internal error/);
    assert.equal((JSON.parse(run.stdout) as { error: { exitCode: number } }).error.exitCode, EXIT.filesystem);
    assert.deepEqual(readdirSync(dir), [], "the atomic write left nothing behind");
  });
});

test("training whose disk fills while writing checkpoint-4: exit 74, checkpoint-2 intact, --resume finishes once space is back", async () => {
  await withTempDir("splint-faults-enospc-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const out = join(root, "run");
    const flags = ["--r", "4", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "1", "--max-steps", "6", "--save-strategy", "steps", "--save-steps", "2", "--bf16", "false", "--device", "cpu"];
    const full = await runSplintAsync(["train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, ...flags], diskFull(out, 0, "checkpoint-4"));
    assert.equal(full.status, EXIT.filesystem, full.stderr);
    assert.match(full.stderr, /disk full while writing .*checkpoint-4/);
    assert.match(full.stderr, /hint: free some space/);
    const left = readdirSync(join(out, "checkpoints"));
    assert.deepEqual(left, ["checkpoint-2"], "no half-written checkpoint-4, no temp folder");
    const resumed = await runSplintAsync(["train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--resume", "--device", "cpu", "--json"]);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match((JSON.parse(resumed.stdout) as { resumedFrom: string }).resumedFrom, /checkpoint-2$/);
  });
});

test("data import onto a full disk: exit 74 and no dataset folder (the temp folder is removed)", async () => {
  await withTempDir("splint-faults-enospc-", async (dir) => {
    const files: Record<string, Uint8Array> = {};
    let seed = 1;
    for (const split of ["train", "test"]) for (const c of ["A", "B"]) files[`src/${split}/${c}/${seed}.png`] = await pngBytes(seed++);
    await writeTree(dir, files);
    const outDir = join(dir, "out");
    const run = await runSplintAsync(["data", "import", "--dir", join(dir, "src"), "--out", join(outDir, "ds")], diskFull(outDir, 100));
    assert.equal(run.status, EXIT.filesystem, run.stderr);
    assert.match(run.stderr, /disk full/);
    assert.ok(!existsSync(join(outDir, "ds", "dataset_dict.json")));
    assert.deepEqual(existsSync(outDir) ? readdirSync(outDir).filter((n) => !n.endsWith(".json")) : [], []);
    assert.ok((await readFile(join(dir, "src", "train", "A", "1.png"))).length > 0, "the source is untouched");
  });
});
