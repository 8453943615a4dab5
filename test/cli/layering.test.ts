import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dirname, "../../src");

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(entries.map((e) => (e.isDirectory() ? sourceFiles(join(dir, e.name)) : Promise.resolve(e.name.endsWith(".ts") ? [join(dir, e.name)] : []))));
  return nested.flat();
}

test("library modules never import from src/cli (progress and output reach them through src/util/output.ts)", async () => {
  const cliDir = join(SRC, "cli");
  const offenders: string[] = [];
  for (const file of await sourceFiles(SRC)) {
    if (file.startsWith(cliDir + "/")) continue;
    const text = await readFile(file, "utf8");
    for (const match of text.matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)) {
      const target = resolve(dirname(file), match[1]!);
      if (target === cliDir || target.startsWith(cliDir + "/")) offenders.push(`${relative(SRC, file)} imports ${match[1]}`);
    }
  }
  assert.deepEqual(offenders, []);
});
