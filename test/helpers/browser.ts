import { execFile } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { chromium, type Browser } from "playwright-core";

const run = promisify(execFile);

/**
 * Debian's chromium driven by playwright-core (which downloads no browser of its own): the path
 * of the system binary, or null when it is not installed (CI installs it; see .ci/run).
 */
export async function chromiumPath(): Promise<string | null> {
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      const { stdout } = await run("sh", ["-c", `command -v ${name}`]);
      if (stdout.trim()) return stdout.trim();
    } catch {
      // not this one
    }
  }
  return null;
}

export async function launchChromium(executablePath: string): Promise<Browser> {
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
}

/** Where screenshots go: $SPLINT_ARTIFACTS (CI keeps that folder), else a temp folder. */
export async function artifactDir(): Promise<string> {
  const dir = process.env.SPLINT_ARTIFACTS ?? join(tmpdir(), "splint-artifacts");
  await mkdir(dir, { recursive: true });
  return dir;
}
