// Defects 1 (wrapper folder → one class), 8 (zip bomb), 10 (1×3000 PNG), and bad input of the
// image-folder importer: each case asserts the status or error, that the message names the
// problem, and that nothing earlier was lost.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { importImageFolder } from "../../src/data/import.ts";
import { detectLayout } from "../../src/data/layout.ts";
import { extractZip } from "../../src/data/zip.ts";
import { checkImageBytes } from "../../src/data/image-check.ts";
import { collate } from "../../src/train/collator.ts";
import { loadTokenizer } from "../../src/text/tokenizer.ts";
import { resolveChatTemplate } from "../../src/text/chat-template.ts";
import { buildPrompt } from "../../src/text/prompt.ts";
import { loadImageProcessorConfig } from "../../src/vision/image-processor.ts";
import { InputError } from "../../src/util/errors.ts";
import { buildZip, pngBytes, writeTree } from "../data/import-fixtures.ts";
import { quiet } from "../train/quiet-output.ts";
import { TINY_MODEL } from "../train/tiny-dataset.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

const options = (out: string) => ({ out, format: "arrow" as const, valFraction: 0, seed: 0, output: quiet });

test("defect 1: classes under one extra wrapper folder ({train,test}/<Class> inside it) import as their classes", async () => {
  await withTempDir("splint-faults-data-", async (dir) => {
    const files: Record<string, Uint8Array> = {};
    let seed = 1;
    for (const split of ["train", "test"]) for (const c of ["Broken", "Healthy", "Sprain"]) files[`data/wrapper/${split}/${c}/${seed}.png`] = await pngBytes(seed++);
    await writeTree(dir, files);
    const layout = await detectLayout(join(dir, "data"));
    assert.equal(layout.kind, "split-class");
    assert.deepEqual(layout.classNames, ["Broken", "Healthy", "Sprain"]);
    const summary = await importImageFolder(join(dir, "data"), options(join(dir, "ds")));
    assert.deepEqual(summary.classNames, ["Broken", "Healthy", "Sprain"], "not one class named after the wrapper");
    // The Kaggle shape (<Class>/{Train,Test}) under the same kind of wrapper still reads as before.
    const kaggle: Record<string, Uint8Array> = {};
    for (const c of ["A", "B"]) for (const split of ["Train", "Test"]) kaggle[`k/wrap/${c}/${split}/${seed}.png`] = await pngBytes(seed++);
    await writeTree(dir, kaggle);
    const k = await detectLayout(join(dir, "k"));
    assert.equal(k.kind, "class-split");
    assert.deepEqual(k.classNames, ["A", "B"]);
  });
});

test("defect 8: a zip whose entries declare more than the bound is refused before anything is written", async () => {
  await withTempDir("splint-faults-data-", async (dir) => {
    const zip = join(dir, "bomb.zip");
    // 4 MiB of zeros deflates to a few KB: 1000:1 and beyond, the zip-bomb signature.
    await writeFile(zip, buildZip([{ name: "a/zeros.png", data: new Uint8Array(4 * 1024 * 1024) }]));
    await assert.rejects(extractZip(zip, join(dir, "out")), (e) => e instanceof InputError && /inflates \d+:1/.test(e.message) && e.message.startsWith(zip));
    assert.ok(!existsSync(join(dir, "out", "a", "zeros.png")));
    // Total size and entry count bounds.
    const many = join(dir, "many.zip");
    await writeFile(many, buildZip(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}.txt`, data: "x".repeat(100) }))));
    await assert.rejects(extractZip(many, join(dir, "o2"), undefined, { maxEntries: 10, maxBytes: 1e9, maxRatio: 1000 }), /has 20 entries, more than the 10/);
    await assert.rejects(extractZip(many, join(dir, "o3"), undefined, { maxEntries: 100, maxBytes: 1000, maxRatio: 1000 }), /inflates to more than 1000 bytes/);
    const fine = await extractZip(many, join(dir, "o4"));
    assert.equal(fine.files, 20);
  });
});

test("defect 10: a 1×3000 PNG is skipped at import with its reason; in training it is refused naming the file", async () => {
  await withTempDir("splint-faults-data-", async (dir) => {
    const thin = await sharp({ create: { width: 1, height: 3000, channels: 3, background: { r: 90, g: 90, b: 90 } } }).png().toBuffer();
    const check = await checkImageBytes(thin);
    assert.equal(check.ok, false);
    assert.match(check.ok ? "" : check.reason, /extreme aspect ratio 1×3000/);
    const files: Record<string, Uint8Array> = { "src/train/A/thin.png": thin };
    let seed = 1;
    for (const c of ["A", "B"]) for (const split of ["train", "test"]) files[`src/${split}/${c}/ok${seed}.png`] = await pngBytes(seed++);
    await writeTree(dir, files);
    const summary = await importImageFolder(join(dir, "src"), options(join(dir, "ds")));
    assert.ok(summary.skipped.some((s) => s.file === "train/A/thin.png" && /aspect ratio/.test(s.reason)), JSON.stringify(summary.skipped));
    const report = JSON.parse(await readFile(summary.report, "utf8")) as { skipped: { file: string }[] };
    assert.ok(report.skipped.some((s) => s.file === "train/A/thin.png"), "the report lists it");

    // A dataset made elsewhere can still carry one: the collator names it instead of failing later.
    const tokenizer = await loadTokenizer(TINY_MODEL);
    const settings = {
      tokenizer,
      template: resolveChatTemplate("short", TINY_MODEL),
      processor: loadImageProcessorConfig(TINY_MODEL),
      prompt: buildPrompt(["A", "B"]),
      lossOn: "completion" as const,
      maxSeqLen: 2048,
    };
    await assert.rejects(collate([{ image: new Uint8Array(thin), answer: "A", name: "train/A/thin.png" }], settings), (e) => e instanceof InputError && e.message.startsWith("train/A/thin.png: image is 1×3000 pixels"));
  });
});

test("bad image files: empty, truncated, not an image, bomb header: each skipped with a reason, the rest imported", async () => {
  await withTempDir("splint-faults-data-", async (dir) => {
    const good = await pngBytes(7, 32, 32);
    const files: Record<string, Uint8Array | string> = {
      "src/train/A/empty.png": new Uint8Array(0),
      "src/train/A/truncated.png": good.subarray(0, Math.floor(good.length / 2)),
      "src/train/A/text.png": "not an image",
      "src/train/A/good.png": good,
      "src/train/B/good.png": await pngBytes(8),
      "src/test/A/good.png": await pngBytes(9),
      "src/test/B/good.png": await pngBytes(10),
    };
    await writeTree(dir, files);
    const summary = await importImageFolder(join(dir, "src"), options(join(dir, "ds")));
    const reasons = Object.fromEntries(summary.skipped.map((s) => [s.file, s.reason]));
    assert.match(reasons["train/A/empty.png"] ?? "", /empty file/);
    assert.match(reasons["train/A/truncated.png"] ?? "", /truncated|corrupt/);
    assert.match(reasons["train/A/text.png"] ?? "", /not an image/);
    assert.deepEqual(summary.splits.map((s) => [s.name, s.total]), [["train", 2], ["test", 2]]);
  });
});
