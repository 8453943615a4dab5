import assert from "node:assert/strict";
import { stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser } from "playwright-core";
import { artifactDir, chromiumPath, launchChromium } from "../helpers/browser.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { startTestServer, xrayDataUrl, type TestServer } from "./serve-fixture.ts";

/** The web UI in headless Chromium: pick an X-ray, see classes and probabilities; chat, streamed. */
const executable = await chromiumPath();
const skip = executable === null ? "chromium is not installed" : false;
let server: TestServer;
let browser: Browser;

before(async () => {
  if (skip) return;
  server = await startTestServer();
  browser = await launchChromium(executable!);
});
after(async () => {
  await browser?.close();
  await server?.close();
});

interface Bar {
  name: string;
  p: number;
  width: number;
}

test("picking an X-ray shows the class and probability bars of the base and the adapter, as the API gives them", { skip }, async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
  // A loaded CI machine (2 cores, other suites beside) can take far longer than the 30 s default.
  page.setDefaultTimeout(120_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(server.url);
  await page.waitForSelector('#model-controls select[data-role="after"]');
  const url = await xrayDataUrl(4, 96);
  await withTempDir("splint-ui-", async (dir) => {
    const file = join(dir, "xray.png");
    await writeFile(file, Buffer.from(url.slice(url.indexOf(",") + 1), "base64"));
    await page.setInputFiles("#file", file);
  });
  await page.waitForSelector('#results[data-done="true"]');
  for (const [role, model] of [["before", "tiny"], ["after", "tuned"]] as const) {
    const column = page.locator(`.result[data-role="${role}"]`);
    assert.equal(await column.getAttribute("data-model"), model);
    const bars: Bar[] = await column.locator(".bar").evaluateAll((rows) =>
      rows.map((r) => ({ name: r.getAttribute("data-class") ?? "", p: Number(r.getAttribute("data-p")), width: r.querySelector(".fill")?.getBoundingClientRect().width ?? 0 })),
    );
    assert.equal(bars.length, 10);
    assert.ok(Math.abs(bars.reduce((s, b) => s + b.p, 0) - 1) < 1e-6);
    const api = (await (await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ model, image: url }) })).json()) as { class: string; probabilities: Record<string, number> };
    assert.equal(await column.locator(".predicted").textContent(), api.class);
    for (const b of bars) assert.ok(Math.abs(b.p - api.probabilities[b.name]!) < 1e-12, `${role} ${b.name}`);
    // Bars are drawn to scale: the most probable class has the widest bar.
    assert.equal(bars[0]!.name, api.class);
    assert.ok(bars[0]!.width > bars[bars.length - 1]!.width);
  }
  assert.ok(await page.locator("#preview.shown").isVisible());
  const png = join(await artifactDir(), "serve-ui.png");
  await page.screenshot({ path: png, fullPage: true });
  assert.ok((await stat(png)).size > 20_000, "a non-blank screenshot");
  assert.deepEqual(errors, []);
  await page.close();
});

test("the chat box streams the model's answer, the same text the API gives", { skip }, async () => {
  const page = await browser.newPage();
  // A loaded CI machine (2 cores, other suites beside) can take far longer than the 30 s default.
  page.setDefaultTimeout(120_000);
  await page.goto(server.url);
  await page.waitForSelector("#chat-model option", { state: "attached" });
  await page.uncheck("#chat-image");
  await page.fill("#chat-max", "12");
  await page.fill("#chat-input", "Say something");
  await page.click("#chat-send");
  await page.waitForSelector('#chat-output[data-done="true"]');
  const shown = await page.locator("#chat-output").textContent();
  const api = (await (
    await fetch(`${server.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "tuned", messages: [{ role: "user", content: [{ type: "text", text: "Say something" }] }], max_tokens: 12 }) })
  ).json()) as { choices: { message: { content: string } }[] };
  assert.ok(shown && shown.length > 0);
  assert.equal(shown, api.choices[0]!.message.content);
  assert.equal(await page.locator("#error").textContent(), "");
  await page.close();
});

test("dropping an X-ray onto the page classifies it too", { skip }, async () => {
  const page = await browser.newPage();
  // A loaded CI machine (2 cores, other suites beside) can take far longer than the 30 s default.
  page.setDefaultTimeout(120_000);
  await page.goto(server.url);
  await page.waitForSelector('#model-controls select[data-role="after"]');
  const url = await xrayDataUrl(6);
  // What a drag from the file manager delivers: a drop event whose DataTransfer holds the file.
  // (Browser code as a string: the tests type-check against Node's globals, which lack DataTransfer.)
  const transfer = await page.evaluateHandle(`(async () => {
    const blob = await (await fetch(${JSON.stringify(url)})).blob();
    const dt = new DataTransfer();
    dt.items.add(new File([blob], "xray.png", { type: "image/png" }));
    return dt;
  })()`);
  await page.dispatchEvent("#drop", "drop", { dataTransfer: transfer });
  await page.waitForSelector('#results[data-done="true"]');
  const api = (await (await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ model: "tuned", image: url }) })).json()) as { class: string };
  assert.equal(await page.locator('.result[data-role="after"] .predicted').textContent(), api.class);
  await page.close();
});
