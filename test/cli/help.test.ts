import assert from "node:assert/strict";
import { test } from "node:test";
import type { Command } from "commander";
import { COMMANDS, createProgram } from "../../src/cli/program.ts";

/** Every command of the program, groups included, with its full name ("data import"). */
function allCommands(command: Command, prefix: string[] = []): { name: string[]; command: Command }[] {
  return command.commands.flatMap((c) => {
    const name = [...prefix, c.name()];
    return [{ name, command: c }, ...allCommands(c, name)];
  });
}

/** What `--help` prints for a command, the text added after it (examples, notes) included. */
function helpOf(command: Command): string {
  let text = "";
  command.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  command.outputHelp();
  return text;
}

test("every --help page, the overview and each group included, shows at least one example of that command", async () => {
  const program = await createProgram([]);
  const commands = allCommands(program);
  // All lazily registered commands were loaded for the overview.
  assert.deepEqual(program.commands.map((c) => c.name()).sort(), COMMANDS.map(([name]) => name).sort());
  assert.ok(commands.length >= 20, `only ${commands.length} commands found`);
  const missing: string[] = [];
  for (const { name, command } of [{ name: [], command: program }, ...commands]) {
    const help = helpOf(command);
    const lines = help.split("\n");
    const heading = lines.findIndex((l) => /^Examples?:$/.test(l));
    const invocation = `splint ${name.join(" ")}`.trimEnd();
    const examples = heading === -1 ? [] : lines.slice(heading + 1).filter((l) => l.startsWith(`  ${invocation}`));
    if (examples.length === 0) missing.push(invocation);
  }
  assert.deepEqual(missing, [], "these help pages have no example line starting with the command itself");
});

test("a bare --version loads no command, and a named command loads only itself", async () => {
  assert.equal((await createProgram(["--version"])).commands.length, 0);
  assert.deepEqual((await createProgram(["merge", "--help"])).commands.map((c) => c.name()), ["merge"]);
  assert.equal((await createProgram(["--help"])).commands.length, COMMANDS.length);
  assert.equal((await createProgram(["no-such-command"])).commands.length, COMMANDS.length, "so commander can suggest a near name");
});

test("every command that does something (not a group) offers --json for its result", async () => {
  const leaves = allCommands(await createProgram([])).filter(({ command }) => command.commands.length === 0);
  const without = leaves.filter(({ command }) => !command.options.some((o) => o.long === "--json")).map(({ name }) => name.join(" "));
  assert.deepEqual(without, []);
});
