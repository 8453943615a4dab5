import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { createApp, listen, type RunningServer } from "../../src/serve/server.ts";
import { artifactDir, chromiumPath, launchChromium } from "../helpers/browser.ts";
import { REPO_ROOT } from "../helpers/cli.ts";
import { TINY_MODEL, tinyDataset } from "../train/tiny-dataset.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

/**
 * The training dashboard in headless Chromium while a tiny `splint train` runs in another
 * process: its loss curve grows as train_log.jsonl does.
 */
const executable = await chromiumPath();
const skip = executable === null ? "chromium is not installed" : false;
let browser: Browser;
before(async () => {
  if (!skip) browser = await launchChromium(executable!);
});
after(() => browser?.close());

async function dashboardServer(runsDir: string): Promise<RunningServer> {
  return listen(createApp({ runsDir, maxBodyBytes: 1 << 20, requestTimeoutMs: 10_000, allowRemoteImages: false, log: () => undefined }), "127.0.0.1", 0);
}

const points = (page: Page, chart: string) => page.locator(`.chart[data-chart="${chart}"] svg`).getAttribute("data-points").then(Number);

async function until(what: string, condition: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("the dashboard's curves grow while a run trains, and end with every logged step", { skip }, async () => {
  await withTempDir("splint-dashboard-", async (root) => {
    const runs = join(root, "runs");
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const out = join(runs, "live", "train");
    await mkdir(out, { recursive: true });
    const server = await dashboardServer(runs);
    // 6 examples, one per step, 4 epochs: 24 steps, each logged.
    const args = ["--r", "4", "--lora-alpha", "8", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "1", "--num-train-epochs", "4", "--learning-rate", "0.005", "--warmup-steps", "3", "--logging-steps", "1", "--save-strategy", "no", "--bf16", "false", "--device", "cpu"];
    const child = spawn(process.execPath, [join(REPO_ROOT, "bin/splint.js"), "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, ...args], { stdio: "ignore", env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });
    const exited = new Promise<number | null>((done) => child.on("exit", done));
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    try {
      const log = join(out, "train_log.jsonl");
      await until("the run's log", async () => existsSync(log) && (await stat(log)).size > 0);
      await page.goto(`${server.url}/dashboard?run=${encodeURIComponent("live/train")}&poll=150`);
      await page.waitForSelector('.chart[data-chart="loss"] svg[data-points]');
      const first = await points(page, "loss");
      await until("the loss curve to grow", async () => (await points(page, "loss")) > first);
      assert.equal(child.exitCode, null, "the curve grew while the run was still training");
      assert.equal(await exited, 0);
      await until("the last step", async () => (await points(page, "loss")) === 24);
      const lines = (await readFile(log, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { lr: number });
      assert.equal(lines.length, 24);
      assert.equal(await points(page, "lr"), 24);
      assert.equal(await points(page, "grad_norm"), 24);
      assert.equal(await page.locator('#runs li[data-run="live/train"]').getAttribute("aria-selected"), "true");
      // The trainer writes both logs; each step's loss is drawn once, not once per file.
      assert.match((await page.locator("#status").textContent()) ?? "", /24 logged steps, last step 24 · metrics\.jsonl, train_log\.jsonl/);
      await page.screenshot({ path: join(await artifactDir(), "serve-dashboard.png"), fullPage: true });
    } finally {
      child.kill();
      await page.close();
      await server.close();
    }
  });
});

test("the dashboard reads metrics.jsonl too (scalar events, eval series) and skips a half-written line", { skip }, async () => {
  await withTempDir("splint-dashboard-", async (runs) => {
    const dir = join(runs, "old", "train");
    await mkdir(dir, { recursive: true });
    const train = Array.from({ length: 5 }, (_, i) => JSON.stringify({ step: i + 1, loss: 2 / (i + 1), lr: 1e-3, grad_norm: 1 }));
    await writeFile(join(dir, "train_log.jsonl"), `${train.join("\n")}\n{"step": 6, "loss"`);
    const events = [{ step: 2, tag: "eval/loss", value: 1.5 }, { step: 4, tag: "eval/accuracy", value: 0.6 }, { step: 4, tag: "eval/loss", value: 1.2 }];
    await writeFile(join(dir, "metrics.jsonl"), `${events.map((e) => JSON.stringify(e)).join("\n")}\nnot json\n`);
    const server = await dashboardServer(runs);
    const page = await browser.newPage();
    try {
      await page.goto(`${server.url}/`);
      assert.match(page.url(), /\/dashboard/, "a server without a model opens on the dashboard");
      await page.waitForSelector('.chart[data-chart="eval"] svg[data-points]');
      assert.equal(await points(page, "loss"), 5 + 2, "five training losses and two eval losses");
      assert.equal(await points(page, "eval"), 1);
      assert.equal(await page.locator('.chart[data-chart="loss"] polyline').count(), 2);
      const traversal = await fetch(`${server.url}/api/runs/metrics?id=${encodeURIComponent("../..")}`);
      assert.equal(traversal.status, 404);
    } finally {
      await page.close();
      await server.close();
    }
  });
});
