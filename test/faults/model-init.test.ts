// Defect 2: `splint model init OUT` deleted an existing folder. It now refuses a non-empty folder
// (exit 2, nothing touched); --force replaces only a model folder, atomically.
import assert from "node:assert/strict";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { EXIT } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { runSplintAsync } from "./helpers/cli.ts";

test("model init refuses a non-empty folder and leaves it exactly as it was", async () => {
  await withTempDir("splint-faults-init-", async (dir) => {
    const precious = join(dir, "thesis");
    await mkdir(precious);
    await writeFile(join(precious, "chapter1.tex"), "years of work");
    for (const args of [[], ["--force"]]) {
      const run = await runSplintAsync(["model", "init", precious, ...args]);
      assert.equal(run.status, EXIT.usage, run.stderr);
      assert.match(run.stderr, args.length ? /is not a model folder \(no config\.json\); refusing/ : /already exists and is not empty; refusing to replace it/);
      assert.deepEqual(await readdir(precious), ["chapter1.tex"]);
      assert.equal(await readFile(join(precious, "chapter1.tex"), "utf8"), "years of work");
    }
  });
});

test("model init writes into a new or empty folder, and --force replaces an existing model", async () => {
  await withTempDir("splint-faults-init-", async (dir) => {
    const empty = join(dir, "empty");
    await mkdir(empty);
    assert.equal((await runSplintAsync(["model", "init", empty, "--seed", "1"])).status, 0);
    const before = await readFile(join(empty, "model.safetensors"));
    assert.equal((await runSplintAsync(["model", "init", empty, "--seed", "2"])).status, EXIT.usage, "a model folder is not replaced without --force");
    const forced = await runSplintAsync(["model", "init", empty, "--seed", "2", "--force"]);
    assert.equal(forced.status, 0, forced.stderr);
    assert.ok(!(await readFile(join(empty, "model.safetensors"))).equals(before), "replaced by the new seed's weights");
    assert.ok((await readdir(dir)).every((n) => !n.endsWith(".tmp")), "no temporary folder left beside it");
  });
});
