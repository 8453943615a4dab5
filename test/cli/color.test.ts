import assert from "node:assert/strict";
import { test } from "node:test";
import { colorEnabled, paint } from "../../src/cli/style.ts";
import { runSplint } from "../helpers/cli.ts";

const tty = { isTTY: true };
const pipe = { isTTY: false };

test("colour only on a TTY, never with NO_COLOR or TERM=dumb, whatever FORCE_COLOR says", () => {
  assert.equal(colorEnabled(tty, {}), true);
  assert.equal(colorEnabled(pipe, {}), false);
  assert.equal(colorEnabled(tty, { NO_COLOR: "1" }), false);
  assert.equal(colorEnabled(tty, { NO_COLOR: "" }), true, "an empty NO_COLOR does not count (no-color.org)");
  assert.equal(colorEnabled(tty, { TERM: "dumb" }), false);
  assert.equal(colorEnabled(pipe, { FORCE_COLOR: "1" }), false);
  assert.equal(colorEnabled(tty, { FORCE_COLOR: "1", NO_COLOR: "1" }), false);
  assert.equal(paint("error:", "red", false), "error:");
  assert.equal(paint("error:", "red", true), "\u001b[31merror:\u001b[39m");
});

test("the CLI's error lines are plain for a pipe, with or without NO_COLOR and FORCE_COLOR", () => {
  const args = ["eval", "--model", "./no/such/model", "--dataset", "d", "--out", "o"];
  for (const env of [{ NO_COLOR: "", FORCE_COLOR: "" }, { NO_COLOR: "1", FORCE_COLOR: "" }, { NO_COLOR: "", FORCE_COLOR: "1" }]) {
    const run = runSplint(args, { env });
    assert.equal(run.status, 2);
    assert.match(run.stderr, /^error: \.\/no\/such\/model: does not exist \(no such folder/m);
    assert.ok(!run.stderr.includes("\u001b["), `escape codes in piped output with ${JSON.stringify(env)}`);
  }
});
