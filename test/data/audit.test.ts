import { test } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";
import { auditDataset, dedupeDataset, type AuditReport } from "../../src/data/audit.ts";
import { synthesizeDatasetDict } from "../../src/data/synth.ts";
import type { DatasetDict, DatasetRow } from "../../src/data/types.ts";

async function noisy(png: Uint8Array): Promise<Buffer> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  const out = Buffer.from(data);
  for (let k = 0; k < out.length; k++) out[k] = Math.max(0, Math.min(255, (out[k] ?? 0) + ((k * 7919) % 5) - 2));
  return sharp(out, { raw: { width: info.width, height: info.height, channels: info.channels } }).png().toBuffer();
}

function row(bytes: Uint8Array, label: number, path: string): DatasetRow {
  return { image: { bytes, path }, label };
}

/**
 * A synthetic set with planted copies:
 *  test[+0]       byte-identical copy of train[0]           (leak, "bytes")
 *  test[+1]       same pixels, other PNG encoding of train[3] (leak, "pixels")
 *  test[+2]       train[6] upscaled to 150 px                 (leak, near)
 *  test[+3]       train[9] with ±2 noise                      (leak, near)
 *  validation[0]  train[12] as JPEG q90                       (leak, near)
 *  train[+0]      train[15] again with another label          (conflict inside train)
 *  test[+4], validation[1]  a copy of test[2] in validation   (evaluation-only group)
 */
async function plantedDataset(): Promise<{ dataset: DatasetDict; trainSize: number; testSize: number }> {
  const base = await synthesizeDatasetDict({ perClass: 3, testPerClass: 1, seed: 99, size: 96 });
  const train = [...(base.splits.get("train") ?? [])];
  const testRows = [...(base.splits.get("test") ?? [])];
  const trainSize = train.length;
  const testSize = testRows.length;
  const at = (i: number): DatasetRow => train[i] as DatasetRow;
  const reencoded = await sharp(at(3).image.bytes).png({ compressionLevel: 1, adaptiveFiltering: true }).toBuffer();
  assert.notDeepEqual(reencoded, Buffer.from(at(3).image.bytes));
  testRows.push(
    row(at(0).image.bytes, at(0).label, "leak-bytes.png"),
    row(reencoded, at(3).label, "leak-pixels.png"),
    row(await sharp(at(6).image.bytes).resize(150, 150).png().toBuffer(), at(6).label, "leak-resized.png"),
    row(await noisy(at(9).image.bytes), at(9).label, "leak-noisy.png"),
  );
  const validation = [
    row(await sharp(at(12).image.bytes).jpeg({ quality: 90 }).toBuffer(), at(12).label, "leak-jpeg.jpg"),
    row((testRows[2] as DatasetRow).image.bytes, (testRows[2] as DatasetRow).label, "val-copy-of-test.png"),
  ];
  train.push(row(at(15).image.bytes, (at(15).label + 1) % 10, "conflict.png"));
  const dataset = { classNames: base.classNames, splits: new Map([["train", train], ["test", testRows], ["validation", validation]]) };
  return { dataset, trainSize, testSize };
}

function groupOf(report: AuditReport, split: string, index: number) {
  return report.groups.find((g) => g.members.some((m) => m.split === split && m.index === index));
}

test("finds planted exact and near duplicates, conflicts and train→test leaks, and nothing else", async () => {
  const { dataset, trainSize, testSize } = await plantedDataset();
  const report = await auditDataset(dataset, { threshold: 6 });

  assert.equal(groupOf(report, "test", testSize)?.match, "bytes");
  assert.equal(groupOf(report, "test", testSize + 1)?.match, "pixels");
  assert.equal(groupOf(report, "test", testSize + 2)?.match, "near");
  assert.equal(groupOf(report, "test", testSize + 3)?.match, "near");
  assert.equal(groupOf(report, "validation", 0)?.match, "near");

  const leakedTest = report.leaks.filter((l) => l.split === "test").map((l) => l.index).sort((a, b) => a - b);
  assert.deepEqual(leakedTest, [testSize, testSize + 1, testSize + 2, testSize + 3]);
  const trainSources = report.leaks.filter((l) => l.split === "test").map((l) => l.trainMatches.map((m) => m.index));
  assert.deepEqual(trainSources, [[0], [3], [6], [9]]);
  assert.deepEqual(report.leaks.filter((l) => l.split === "validation").map((l) => l.index), [0]);
  assert.deepEqual(report.summary.leakedFromTrain, { test: 4, validation: 1 });

  const conflict = groupOf(report, "train", trainSize);
  assert.ok(conflict?.conflictingLabels);
  assert.deepEqual(conflict.members.map((m) => m.index).sort((a, b) => a - b), [15, trainSize]);
  assert.equal(report.summary.conflictingGroups, 1);

  const evaluationOnly = groupOf(report, "validation", 1);
  assert.deepEqual(evaluationOnly?.splits, ["test", "validation"]);

  // Exactly the planted groups: the untouched synthetic images are not flagged.
  assert.equal(report.summary.groups, 7);
  assert.equal(report.undecodable.length, 0);
});

test("a looser threshold only adds links; an undecodable row is reported and matched by bytes", async () => {
  const { dataset } = await plantedDataset();
  const strict = await auditDataset(dataset, { threshold: 0 });
  const loose = await auditDataset(dataset, { threshold: 6 });
  assert.ok(strict.summary.imagesInGroups <= loose.summary.imagesInGroups);
  // At threshold 0 the exact copies are still found.
  assert.equal(groupOf(strict, "train", 0)?.match, "bytes");

  const junk = new Uint8Array([1, 2, 3, 4]);
  const withJunk: DatasetDict = {
    classNames: dataset.classNames,
    splits: new Map([
      ["train", [row(junk, 0, "a.png")]],
      ["test", [row(junk, 0, "b.png")]],
    ]),
  };
  const report = await auditDataset(withJunk);
  assert.equal(report.undecodable.length, 2);
  assert.equal(report.groups[0]?.match, "bytes");
  assert.equal(report.leaks.length, 1);
});

test("dedupe drops leaks, extra copies and conflicting groups, and the result audits clean", async () => {
  const { dataset, trainSize, testSize } = await plantedDataset();
  const report = await auditDataset(dataset, { threshold: 6 });
  const { dataset: clean, dropped } = dedupeDataset(dataset, report);

  const reasons = (reason: string) => dropped.filter((d) => d.reason === reason).map((d) => `${d.split}:${d.index}`).sort();
  assert.deepEqual(reasons("conflicting-labels"), [`train:${trainSize}`, "train:15"].sort());
  assert.deepEqual(reasons("leaks-from-train"), [`test:${testSize}`, `test:${testSize + 1}`, `test:${testSize + 2}`, `test:${testSize + 3}`, "validation:0"].sort());
  assert.deepEqual(reasons("duplicate"), ["validation:1"]);

  assert.equal(clean.splits.get("train")?.length, trainSize - 1);
  assert.equal(clean.splits.get("test")?.length, testSize);
  assert.equal(clean.splits.get("validation")?.length, 0);
  // The kept train rows of leak groups are still there.
  assert.ok(clean.splits.get("train")?.includes(dataset.splits.get("train")?.[0] as DatasetRow));

  const again = await auditDataset(clean, { threshold: 6 });
  assert.equal(again.summary.groups, 0);
});

test("the thumbnail correlation check removes pHash look-alikes that are not copies", async () => {
  // Distinct synthetic X-rays share their low-frequency layout: pHash alone links some of them.
  const dataset = await synthesizeDatasetDict({ perClass: 15, testPerClass: 5, seed: 1, size: 64 });
  const hashOnly = await auditDataset(dataset, { threshold: 6, minCorrelation: 0 });
  const confirmed = await auditDataset(dataset, { threshold: 6 });
  assert.ok(hashOnly.summary.groups > 0, "expected pHash-only look-alikes in this set");
  assert.equal(confirmed.summary.groups, 0);
  assert.equal(confirmed.minCorrelation, 0.99);
});
