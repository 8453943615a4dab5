import { Option, type Command } from "commander";
import { formatComparison } from "../../eval/format.ts";
import { runRecipe, STEPS, type Step } from "../../demo/pipeline.ts";
import { readRecipe } from "../../demo/recipe.ts";
import { InputError } from "../../util/errors.ts";
import { stopSignal } from "../../util/interrupt.ts";
import { createOutput } from "../output.ts";

const HELP = `
Steps, in order: ${STEPS.join(" → ")}.
Each step writes its own folder under the run folder (dataset/, stats/, audit/, eval-before/,
train/, eval-after/, compare/, report.html) and is skipped when that output exists and was made
from the same settings (a hash of each step's resolved inputs, in RUN/.splint/steps/), so an
interrupted run continues where it stopped (training resumes from its newest checkpoint) and an
edited recipe reruns the steps it affects and the ones after them.
--from STEP discards STEP's output and everything after it, and runs them again.

Examples:
  splint run recipes/demo.yaml
  splint run recipes/ministral3-14b-bone-fracture.yaml --out runs/bone-fracture
  splint run recipes/demo.yaml --from train`;

/** `splint run RECIPE.yaml`: the tutorial end to end, resumable. */
export function registerRun(program: Command): void {
  program
    .command("run")
    .description("Run a recipe end to end: data → stats → audit → eval before → train → eval after → compare → report")
    .argument("<recipe>", "recipe file (YAML), e.g. recipes/demo.yaml")
    .option("--out <dir>", "run folder (default: the recipe's run_dir)")
    .addOption(new Option("--from <step>", "redo this step and every later one").choices([...STEPS]))
    .option("--json", "print the result as JSON")
    .addHelpText("after", HELP)
    .action(async (file: string, flags: { out?: string; from?: Step; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const recipe = await readRecipe(file);
      const runDir = flags.out ?? recipe.runDir;
      if (runDir === null) throw new InputError(file, "has no run_dir", "add run_dir: to the recipe or pass --out DIR");
      // Ctrl-C stops at a safe point: training saves a checkpoint, other steps end between files.
      const stop = stopSignal();
      const result = await runRecipe({ recipe, runDir, from: flags.from, output, signal: stop.signal }).finally(stop.release);
      output.result(result, () => [formatComparison(result.comparison), "", `Report: ${result.report}`].join("\n"));
    });
}
