import type { Command } from "commander";
import { DEFAULT_SYNTH_SIZE, writeSyntheticDataset, type SynthSummary } from "../../data/synth.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";

interface SynthFlags {
  perClass: string;
  testPerClass?: string;
  seed: string;
  size: string;
  json?: boolean;
}

const EXAMPLES = `
Writes OUT/Bone Break Classification/Bone Break Classification/<Class>/{Train,Test}/*.png, the
layout of the Kaggle archive, for the tutorial's ten fracture classes. Same seed, same bytes.

Examples:
  splint data synth data/synth-raw --per-class 40 --seed 0
  splint data import --dir data/synth-raw --out data/synth
  splint data synth data/synth-big --per-class 100 --test-per-class 20 --size 224 --seed 7`;

/** `splint data synth OUT`: the procedural radiograph-like stand-in for the bone-break set. */
export function registerDataSynth(data: Command): void {
  data
    .command("synth")
    .description("Generate a synthetic bone-fracture X-ray set (10 classes, Kaggle layout, seeded)")
    .argument("<out>", "output folder (must not exist or be empty)")
    .requiredOption("--per-class <n>", "training images per class")
    .option("--test-per-class <m>", "test images per class (default: a quarter of --per-class, at least 1)")
    .option("--seed <s>", "random seed", "0")
    .option("--size <px>", "image side in pixels", String(DEFAULT_SYNTH_SIZE))
    .option("--json", "print the result as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (out: string, flags: SynthFlags) => {
      const output = createOutput(Boolean(flags.json));
      const perClass = parseInteger("--per-class", flags.perClass);
      const testPerClass = flags.testPerClass === undefined ? Math.max(1, Math.round(perClass / 4)) : parseInteger("--test-per-class", flags.testPerClass);
      const options = { perClass, testPerClass, seed: parseInteger("--seed", flags.seed), size: parseInteger("--size", flags.size) };
      const progress = output.progress("synth", 10 * (perClass + testPerClass), "images");
      let summary: SynthSummary;
      try {
        summary = await writeSyntheticDataset(out, options, (done) => progress.update(done));
      } finally {
        progress.stop();
      }
      output.result(summary, () =>
        [
          `Wrote ${summary.counts.Train} train + ${summary.counts.Test} test images (${summary.size}×${summary.size}, seed ${summary.seed}) for ${summary.classes.length} classes`,
          `under ${summary.root}`,
          `Next: splint data import --dir ${out} --out <dataset>`,
        ].join("\n"),
      );
    });
}

function parseInteger(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isInteger(value)) throw new InputError(flag, `${JSON.stringify(text)} is not an integer`);
  return value;
}
