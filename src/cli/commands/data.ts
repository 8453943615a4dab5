import { Command } from "commander";
// data subcommand imports (one line each)
import { registerDataImport } from "./data-import.ts";
import { registerDataSynth } from "./data-synth.ts";
import { registerDataStats } from "./data-stats.ts";
import { registerDataAudit } from "./data-audit.ts";

/** `splint data …`: import, explore, audit and synthesise image-classification datasets. */
export function registerData(program: Command): void {
  const data = program.command("data").description("Import, explore, audit and synthesise image-classification datasets");
  const subcommands: ((data: Command) => void)[] = [
    // one entry per line
    registerDataImport,
    registerDataSynth,
    registerDataStats,
    registerDataAudit,
  ];
  for (const register of subcommands) register(data);
  data.addHelpText(
    "after",
    `
Examples:
  splint data synth data/synth-raw --per-class 40 --seed 0
  splint data import --dir data/synth-raw --out data/synth --val-fraction 0.1
  splint data stats data/synth --out runs/synth-stats
  splint data audit data/synth`,
  );
}
