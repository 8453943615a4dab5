import cliProgress from "cli-progress";
import { formatDuration } from "../util/duration.ts";
import { type Output, type Progress, silentProgress } from "../util/output.ts";

export type { Output, Progress };

/**
 * Where a command's words go: the machine-readable result on stdout (with --json), everything
 * meant for a person (logs, progress) on stderr so it never mixes into the JSON. Progress is quiet
 * in --json mode and plain (no redraws) when stderr is not a TTY.
 */
export function createOutput(json: boolean): Output {
  return {
    json,
    log(message) {
      process.stderr.write(`${message}\n`);
    },
    result(value, text) {
      if (json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      else process.stdout.write(`${text()}\n`);
    },
    progress(label, total, unit = "") {
      if (json || process.env.SPLINT_NO_PROGRESS === "1") return silentProgress;
      const bar = new cliProgress.SingleBar(
        {
          format: `${label} [{bar}] {percentage}% | {value}/{total}${unit ? ` ${unit}` : ""} | {eta_formatted} left {extra}`,
          stream: process.stderr,
          noTTYOutput: !process.stderr.isTTY,
          notTTYSchedule: 5000,
          // A dumb terminal prints the cursor codes as text.
          hideCursor: process.env.TERM !== "dumb",
          etaBuffer: 50,
          // cli-progress's own formatter rounds the seconds after splitting off the minutes ("2m60s").
          formatTime: (seconds: number, _options: unknown, step: number) => formatDuration(seconds, step),
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { extra: "" });
      return {
        update(done, extra) {
          bar.update(done, { extra: formatExtra(extra) });
        },
        increment(by = 1) {
          bar.increment(by);
        },
        stop() {
          bar.stop();
        },
      };
    },
  };
}

function formatExtra(extra?: Record<string, string | number>): string {
  if (!extra) return "";
  return Object.entries(extra)
    .map(([k, v]) => `${k}=${typeof v === "number" ? Number(v.toPrecision(4)) : v}`)
    .join(" ");
}
