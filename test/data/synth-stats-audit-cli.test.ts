import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadDatasetDict, saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { KAGGLE_WRAPPER } from "../../src/data/synth.ts";
import type { DatasetRow } from "../../src/data/types.ts";
import { runSplint } from "../helpers/cli.ts";


function splint(cwd: string, ...args: string[]) {
  return runSplint(["data", ...args], { cwd });
}

test("synth → import → stats → audit --dedupe through the CLI", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "splint-data-cli-"));
  try {
    const synth = splint(dir, "synth", "raw", "--per-class", "4", "--test-per-class", "2", "--seed", "3", "--size", "48", "--json");
    assert.equal(synth.status, 0, synth.stderr);
    assert.deepEqual(JSON.parse(synth.stdout).counts, { Train: 40, Test: 20 });
    assert.equal((await readdir(path.join(dir, "raw", KAGGLE_WRAPPER))).length, 10);

    const imported = splint(dir, "import", "--dir", "raw", "--out", "ds", "--json");
    assert.equal(imported.status, 0, imported.stderr);
    const dataset = await loadDatasetDict(path.join(dir, "ds"));
    // Plant a leak: a training image copied into test.
    const train = dataset.splits.get("train") ?? [];
    const leaked = train[5] as DatasetRow;
    const planted = new Map(dataset.splits);
    planted.set("test", [...(dataset.splits.get("test") ?? []), leaked]);
    await saveDatasetDict(path.join(dir, "leaky"), { classNames: dataset.classNames, splits: planted }, "arrow");

    const stats = splint(dir, "stats", "leaky", "--out", "st", "--samples", "4", "--json");
    assert.equal(stats.status, 0, stats.stderr);
    const numbers = JSON.parse(stats.stdout);
    assert.deepEqual(numbers.splits.map((s: { split: string; total: number }) => [s.split, s.total]), [["train", 40], ["test", 21]]);
    assert.deepEqual((await readdir(path.join(dir, "st"))).sort(), ["class-counts.png", "samples.png", "stats.json"]);
    const statsText = splint(dir, "stats", "leaky", "--out", "st2");
    assert.equal(statsText.status, 0, statsText.stderr);
    assert.match(statsText.stdout, /total\s+40\s+21/);

    const audit = splint(dir, "audit", "leaky", "--report", "audit.json", "--dedupe", "clean", "--json");
    assert.equal(audit.status, 0, audit.stderr);
    const result = JSON.parse(audit.stdout);
    assert.deepEqual(result.summary.leakedFromTrain, { test: 1 });
    assert.equal(result.leaks[0].trainMatches[0].index, 5);
    assert.equal(result.leaks[0].match, "bytes");
    const full = JSON.parse(await readFile(path.join(dir, "audit.json"), "utf8"));
    assert.equal(full.groups.length, result.summary.groups);
    const clean = await loadDatasetDict(path.join(dir, "clean"));
    assert.equal(clean.splits.get("train")?.length, 40);
    assert.equal(clean.splits.get("test")?.length, 20);

    const text = splint(dir, "audit", "leaky", "--report", "audit2.json");
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /Leaking from train: 1 of 21 test/);

    const bad = splint(dir, "audit", "leaky", "--threshold", "x");
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--threshold/);
    const notEmpty = splint(dir, "synth", "raw", "--per-class", "1");
    assert.equal(notEmpty.status, 2);
    assert.match(notEmpty.stderr, /raw: already exists/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
