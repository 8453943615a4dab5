#!/usr/bin/env node
// The `splint` command. An installed package runs the compiled JavaScript in dist/. A source
// checkout (src/ next to this folder, with its dev dependencies) runs the TypeScript sources through
// tsx instead, so edits take effect without a rebuild and the tests never exercise a stale dist/.
import { existsSync } from "node:fs";

const source = new URL("../src/cli/main.ts", import.meta.url);
const tsx = existsSync(source) ? await import("tsx/esm/api").catch(() => undefined) : undefined;
if (tsx) {
  tsx.register();
  await import(source.href);
} else {
  await import("../dist/cli/main.js");
}
