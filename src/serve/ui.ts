import { readFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * The web UI's static files (src/serve/static/): plain HTML, CSS and JavaScript modules with no
 * build step and no framework, so the page works from a clone and its whole source is a few
 * hundred readable lines. Only the files listed here are served, so no request path ever reaches
 * the file system.
 */
const STATIC_DIR = join(import.meta.dirname, "static");

const ASSETS: Readonly<Record<string, { file: string; type: string }>> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/dashboard": { file: "dashboard.html", type: "text/html; charset=utf-8" },
  "/static/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
  "/static/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/static/dashboard.js": { file: "dashboard.js", type: "text/javascript; charset=utf-8" },
  "/static/chart.js": { file: "chart.js", type: "text/javascript; charset=utf-8" },
  "/static/api.js": { file: "api.js", type: "text/javascript; charset=utf-8" },
};

export const UI_PATHS: readonly string[] = Object.keys(ASSETS);

const cache = new Map<string, string>();

/** The asset at a URL path, or null when there is none. */
export async function staticAsset(path: string): Promise<{ body: string; type: string } | null> {
  const asset = ASSETS[path];
  if (!asset) return null;
  let body = cache.get(asset.file);
  if (body === undefined) {
    body = await readFile(join(STATIC_DIR, asset.file), "utf8");
    cache.set(asset.file, body);
  }
  return { body, type: asset.type };
}
