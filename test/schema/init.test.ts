import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse as parseYaml } from "yaml";
import { readRecipe } from "../../src/demo/recipe.ts";
import { configSchema, recipeSchema } from "../../src/schema/json-schema.ts";
import { readConfigFile, resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

const run = promisify(execFile);
const SPLINT = join(import.meta.dirname, "..", "..", "bin", "splint.js");
const ajv = new Ajv2020({ strict: true, strictRequired: false, allowUnionTypes: true });

test("splint init writes a commented recipe that parses, passes the schema, and points at it", async () => {
  await withTempDir("splint-init-", async (dir) => {
    const file = join(dir, "sub", "recipe.yaml");
    const { stdout } = await run(process.execPath, [SPLINT, "init", file, "--json"]);
    assert.equal((JSON.parse(stdout) as { file: string }).file, file);
    const text = await readFile(file, "utf8");
    const schemaPath = /^# yaml-language-server: \$schema=(.+)$/m.exec(text)?.[1];
    assert.ok(schemaPath, "schema modeline");
    // The modeline's relative path reaches the committed schema.
    assert.deepEqual(JSON.parse(await readFile(join(dir, "sub", schemaPath), "utf8")), recipeSchema());
    assert.ok((text.match(/^\s*# /gm) ?? []).length > 60, "commented");
    const recipe = await readRecipe(file);
    assert.equal(recipe.data.source.kind, "synth");
    assert.equal(recipe.model.kind, "init");
    assert.deepEqual(recipe.train, TUTORIAL_DEFAULTS);
    assert.ok(ajv.validate(recipeSchema(), parseYaml(text)), JSON.stringify(ajv.errors));

    // It does not overwrite without --force.
    const again = await run(process.execPath, [SPLINT, "init", file]).then(
      () => assert.fail("expected a refusal"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists/);
    await run(process.execPath, [SPLINT, "init", file, "--force"]);
  });
});

test("splint init --config writes every training setting at its default", async () => {
  await withTempDir("splint-init-", async (dir) => {
    const file = join(dir, "train.yaml");
    await run(process.execPath, [SPLINT, "init", "--config", file]);
    const raw = await readConfigFile(file);
    assert.deepEqual(Object.keys(raw).sort(), Object.keys(TUTORIAL_DEFAULTS).sort());
    assert.deepEqual(resolveConfig(TUTORIAL_DEFAULTS, raw, file), TUTORIAL_DEFAULTS);
    assert.deepEqual(raw, { ...TUTORIAL_DEFAULTS });
    assert.ok(ajv.validate(configSchema(), raw), JSON.stringify(ajv.errors));
  });
});
