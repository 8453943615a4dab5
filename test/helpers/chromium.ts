import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Debian's chromium, when installed (CI installs it; see .ci/run); null when there is none. */
export async function findChromium(): Promise<string | null> {
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      await run("sh", ["-c", `command -v ${name}`]);
      return name;
    } catch {
      // not this one
    }
  }
  return null;
}

export interface RenderedImage {
  readonly alt: string;
  /** The id of the report section the image sits in. */
  readonly section: string;
  readonly decoded: boolean;
  readonly width: number;
  readonly height: number;
}

/**
 * Opens an HTML file in headless Chromium and returns every image as laid out after load: a probe
 * script records each image's decode state, size and section into the DOM that --dump-dom prints.
 */
export async function renderedImages(chromium: string, htmlFile: string, workDir: string): Promise<RenderedImage[]> {
  const probe = `<script>window.addEventListener("load", () => {
    const figures = [...document.images].map((img) => { const r = img.getBoundingClientRect(); return { alt: img.alt, section: img.closest("section")?.id ?? "", decoded: img.complete && img.naturalWidth > 0, width: r.width, height: r.height }; });
    const out = document.createElement("pre"); out.id = "probe"; out.textContent = JSON.stringify(figures); document.body.appendChild(out);
  });</script>`;
  const probed = join(workDir, "probed.html");
  await writeFile(probed, (await readFile(htmlFile, "utf8")).replace("</body>", `${probe}</body>`));
  const { stdout } = await run(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", `file://${probed}`], { maxBuffer: 64 << 20, timeout: 60_000 });
  const match = /<pre id="probe">(.*?)<\/pre>/s.exec(stdout);
  if (!match) throw new Error("the probe script did not run in Chromium");
  return JSON.parse(match[1]!.replace(/&quot;/g, '"').replace(/&amp;/g, "&")) as RenderedImage[];
}

/** A full-page screenshot; returns its size in bytes (a blank page compresses to almost nothing). */
export async function screenshotBytes(chromium: string, htmlFile: string, png: string): Promise<number> {
  await run(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,3000", `--screenshot=${png}`, `file://${htmlFile}`], { timeout: 60_000 });
  return (await readFile(png)).byteLength;
}
