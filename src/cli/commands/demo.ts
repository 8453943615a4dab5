import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { runRecipe } from "../../demo/pipeline.ts";
import { readRecipe } from "../../demo/recipe.ts";
import { formatComparison } from "../../eval/format.ts";
import { stopSignal } from "../../util/interrupt.ts";
import { createOutput } from "../output.ts";

export const DEMO_RECIPE = fileURLToPath(new URL("../../../recipes/demo.yaml", import.meta.url));

const HELP = `
Runs recipes/demo.yaml offline on the CPU: a synthetic bone-fracture X-ray set (10 classes, Kaggle
layout) → import → stats → audit → a tiny random-weight Ministral 3-architecture model → eval
before → LoRA training → eval after → compare → report.html. About two minutes on two cores.
The model is tiny and starts from random weights: it shows the workflow and a measured
improvement, not medical skill. For the real thing:
  splint run recipes/ministral3-14b-bone-fracture.yaml`;

/** `splint demo` (= `npm start`): the whole tutorial, embedded, in minutes. */
export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("The whole tutorial offline on the CPU in a few minutes (synthetic data, tiny model)")
    .option("--out <dir>", "run folder", "runs/demo")
    .option("--fresh", "start over instead of reusing the finished steps of an earlier demo run")
    .option("--json", "print the result as JSON")
    .addHelpText("after", HELP)
    .action(async (flags: { out: string; fresh?: boolean; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const recipe = await readRecipe(DEMO_RECIPE);
      // Ctrl-C stops at a safe point: training saves a checkpoint, other steps end between files.
      const stop = stopSignal();
      const result = await runRecipe({ recipe, runDir: flags.out, from: flags.fresh ? "data" : undefined, output, signal: stop.signal }).finally(stop.release);
      output.result(result, () =>
        [
          formatComparison(result.comparison),
          "",
          `Finished in ${result.seconds.toFixed(0)} s. Open the report: ${result.report}`,
          "(The demo model is tiny and random-initialised; see the README for the real model and dataset.)",
        ].join("\n"),
      );
    });
}
