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
}
