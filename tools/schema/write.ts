// Rewrites schema/*.schema.json from the definitions the validators use (src/schema/json-schema.ts).
// Run from the repository root after changing a setting:  node --import tsx tools/schema/write.ts
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { schemaFiles } from "../../src/schema/json-schema.ts";

const dir = join(import.meta.dirname, "..", "..", "schema");
for (const [name, text] of Object.entries(schemaFiles())) {
  writeFileSync(join(dir, name), text);
  console.log(`wrote schema/${name}`);
}
