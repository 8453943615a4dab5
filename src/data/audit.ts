import { createHash } from "node:crypto";
import sharp from "sharp";
import { hammingDistance, phashOfPixels, phashPixels, phashWords } from "./phash.ts";
import type { DatasetDict, DatasetRow } from "./types.ts";

/**
 * Duplicate and leakage audit of an image-classification DatasetDict: exact copies (same file
 * bytes, or same decoded pixels under another encoding) and near copies (perceptual hashes within
 * a Hamming threshold, confirmed by the correlation of the 32×32 grayscale renditions the hashes
 * were taken of), grouped across all splits; groups whose members disagree on the label;
 * and the evaluation images that also appear in train, which inflate any score measured on them.
 */
export const DEFAULT_PHASH_THRESHOLD = 6;
/**
 * pHash alone over-matches look-alike images (on the synthetic X-rays distinct images of different
 * classes come within 6 bits with thumbnail correlations up to 0.98, while resized, recompressed
 * or noised copies stay above 0.995), so a near pair must also correlate at least this much.
 */
export const DEFAULT_MIN_CORRELATION = 0.99;
const TRAIN = "train";

export interface RowRef {
  readonly split: string;
  readonly index: number;
  readonly path: string | null;
  readonly label: number;
}

export interface ImageFingerprint extends RowRef {
  readonly bytesSha256: string;
  /** SHA-256 of width, height, channels and the decoded pixels; null when the image does not decode. */
  readonly pixelsSha256: string | null;
  /** 64-bit DCT perceptual hash (16 hex digits); null when the image does not decode. */
  readonly phash: string | null;
  readonly decodeError?: string;
}

/** How strongly all members of a group match: identical files, identical pixels, or near. */
export type MatchKind = "bytes" | "pixels" | "near";

export interface DuplicateGroup {
  readonly id: number;
  readonly match: MatchKind;
  readonly members: readonly ImageFingerprint[];
  readonly splits: readonly string[];
  readonly labels: readonly string[];
  readonly crossSplit: boolean;
  readonly conflictingLabels: boolean;
  /** Largest perceptual-hash distance between two members (0 for exact groups). */
  readonly maxDistance: number;
}

export interface Leak extends RowRef {
  readonly group: number;
  readonly match: MatchKind;
  readonly trainMatches: readonly (RowRef & { readonly distance: number })[];
}

export interface AuditReport {
  readonly threshold: number;
  readonly minCorrelation: number;
  readonly classNames: readonly string[];
  readonly images: Record<string, number>;
  readonly undecodable: readonly ImageFingerprint[];
  readonly summary: {
    readonly groups: number;
    readonly exactGroups: number;
    readonly nearGroups: number;
    /** Rows that have at least one duplicate. */
    readonly imagesInGroups: number;
    readonly crossSplitGroups: number;
    readonly conflictingGroups: number;
    /** Per evaluation split: how many of its rows also appear in train. */
    readonly leakedFromTrain: Record<string, number>;
  };
  readonly groups: readonly DuplicateGroup[];
  readonly leaks: readonly Leak[];
}

export interface AuditOptions {
  readonly threshold?: number;
  /** Pearson correlation of the 32×32 grayscale thumbnails a near pair needs; 0 trusts pHash alone. */
  readonly minCorrelation?: number;
  readonly concurrency?: number;
  readonly onImage?: (done: number, total: number) => void;
}

/** A fingerprint with the 32×32 grayscale thumbnail its pHash was taken of (null if undecodable). */
export interface Fingerprinted {
  readonly fingerprint: ImageFingerprint;
  readonly thumbnail: Uint8Array | null;
}

async function fingerprint(row: DatasetRow, ref: RowRef): Promise<Fingerprinted> {
  const bytesSha256 = createHash("sha256").update(row.image.bytes).digest("hex");
  try {
    const { data, info } = await sharp(row.image.bytes).raw().toBuffer({ resolveWithObject: true });
    const pixelsSha256 = createHash("sha256").update(`${info.width}x${info.height}x${info.channels}:`).update(data).digest("hex");
    // Reuse the decoded pixels unless they are 16-bit (the raw path takes 8-bit samples only).
    const eightBit = data.length === info.width * info.height * info.channels;
    const thumbnail = await phashPixels(eightBit ? { data, width: info.width, height: info.height, channels: info.channels } : row.image.bytes);
    return { fingerprint: { ...ref, bytesSha256, pixelsSha256, phash: phashOfPixels(thumbnail) }, thumbnail };
  } catch (error) {
    const decodeError = error instanceof Error ? error.message : String(error);
    return { fingerprint: { ...ref, bytesSha256, pixelsSha256: null, phash: null, decodeError }, thumbnail: null };
  }
}

/** Fingerprints every row of every split (decodes run `concurrency` at a time on sharp's pool). */
export async function fingerprintDataset(dataset: DatasetDict, options: AuditOptions = {}): Promise<Fingerprinted[]> {
  const jobs: { row: DatasetRow; ref: RowRef }[] = [];
  for (const [split, rows] of dataset.splits) {
    rows.forEach((row, index) => jobs.push({ row, ref: { split, index, path: row.image.path, label: row.label } }));
  }
  const results = new Array<Fingerprinted>(jobs.length);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = next++;
      const { row, ref } = jobs[job] as { row: DatasetRow; ref: RowRef };
      results[job] = await fingerprint(row, ref);
      options.onImage?.(++done, jobs.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));
  return results;
}

class DisjointSets {
  private readonly parent: number[];
  constructor(size: number) {
    this.parent = Array.from({ length: size }, (_, i) => i);
  }
  find(i: number): number {
    let root = i;
    while (this.parent[root] !== root) root = this.parent[root] ?? root;
    while (this.parent[i] !== root) {
      const up = this.parent[i] ?? root;
      this.parent[i] = root;
      i = up;
    }
    return root;
  }
  join(a: number, b: number): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb);
  }
}

function distance(a: ImageFingerprint, b: ImageFingerprint): number {
  if (a.pixelsSha256 !== null && a.pixelsSha256 === b.pixelsSha256) return 0;
  if (a.bytesSha256 === b.bytesSha256) return 0;
  if (a.phash === null || b.phash === null) return 64;
  return hammingDistance(phashWords(a.phash), phashWords(b.phash));
}

/** Pearson correlation of two equally long pixel arrays (1 for two flat images). */
export function correlation(a: Uint8Array, b: Uint8Array): number {
  const n = a.length;
  let meanA = 0;
  let meanB = 0;
  for (let i = 0; i < n; i++) {
    meanA += a[i] ?? 0;
    meanB += b[i] ?? 0;
  }
  meanA /= n;
  meanB /= n;
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < n; i++) {
    const x = (a[i] ?? 0) - meanA;
    const y = (b[i] ?? 0) - meanB;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  if (aa === 0 || bb === 0) return aa === bb ? 1 : 0;
  return ab / Math.sqrt(aa * bb);
}

function ref(f: RowRef): RowRef {
  return { split: f.split, index: f.index, path: f.path, label: f.label };
}

/**
 * Groups fingerprints into duplicate groups (connected components of "same bytes", "same pixels"
 * and "pHash distance ≤ threshold with thumbnail correlation ≥ minCorrelation") and derives
 * conflicts and train→evaluation leaks. All pairs are compared: O(n²) 64-bit popcounts, about a
 * second for tens of thousands of images; only the few pHash candidates pay for a correlation.
 */
export function analyseFingerprints(
  classNames: readonly string[],
  rows: readonly Fingerprinted[],
  threshold: number,
  minCorrelation = DEFAULT_MIN_CORRELATION,
): AuditReport {
  const fingerprints = rows.map((r) => r.fingerprint);
  const sets = new DisjointSets(fingerprints.length);
  const byKey = new Map<string, number>();
  fingerprints.forEach((f, i) => {
    for (const key of [`b:${f.bytesSha256}`, f.pixelsSha256 === null ? null : `p:${f.pixelsSha256}`]) {
      if (key === null) continue;
      const first = byKey.get(key);
      if (first === undefined) byKey.set(key, i);
      else sets.join(first, i);
    }
  });
  const words = fingerprints.map((f) => (f.phash === null ? null : phashWords(f.phash)));
  for (let i = 0; i < words.length; i++) {
    const wi = words[i];
    if (!wi) continue;
    for (let j = i + 1; j < words.length; j++) {
      const wj = words[j];
      if (!wj || hammingDistance(wi, wj) > threshold) continue;
      const a = rows[i]?.thumbnail;
      const b = rows[j]?.thumbnail;
      if (minCorrelation <= 0 || (a && b && correlation(a, b) >= minCorrelation)) sets.join(i, j);
    }
  }

  const components = new Map<number, ImageFingerprint[]>();
  fingerprints.forEach((f, i) => {
    const root = sets.find(i);
    const members = components.get(root) ?? [];
    members.push(f);
    components.set(root, members);
  });

  const groups: DuplicateGroup[] = [];
  const leaks: Leak[] = [];
  for (const members of components.values()) {
    if (members.length < 2) continue;
    const first = members[0] as ImageFingerprint;
    const match: MatchKind = members.every((m) => m.bytesSha256 === first.bytesSha256)
      ? "bytes"
      : first.pixelsSha256 !== null && members.every((m) => m.pixelsSha256 === first.pixelsSha256)
        ? "pixels"
        : "near";
    let maxDistance = 0;
    for (let a = 0; a < members.length; a++) {
      for (let b = a + 1; b < members.length; b++) maxDistance = Math.max(maxDistance, distance(members[a] as ImageFingerprint, members[b] as ImageFingerprint));
    }
    const splits = [...new Set(members.map((m) => m.split))];
    const labelIds = [...new Set(members.map((m) => m.label))].sort((a, b) => a - b);
    const group: DuplicateGroup = {
      id: groups.length,
      match,
      members,
      splits,
      labels: labelIds.map((l) => classNames[l] ?? String(l)),
      crossSplit: splits.length > 1,
      conflictingLabels: labelIds.length > 1,
      maxDistance,
    };
    groups.push(group);
    const train = members.filter((m) => m.split === TRAIN);
    if (train.length === 0) continue;
    for (const member of members) {
      if (member.split === TRAIN) continue;
      leaks.push({
        ...ref(member),
        group: group.id,
        match,
        trainMatches: train.map((t) => ({ ...ref(t), distance: distance(member, t) })),
      });
    }
  }

  const images: Record<string, number> = {};
  for (const f of fingerprints) images[f.split] = (images[f.split] ?? 0) + 1;
  const leakedFromTrain: Record<string, number> = {};
  for (const split of Object.keys(images)) if (split !== TRAIN) leakedFromTrain[split] = 0;
  for (const leak of leaks) leakedFromTrain[leak.split] = (leakedFromTrain[leak.split] ?? 0) + 1;
  return {
    threshold,
    minCorrelation,
    classNames,
    images,
    undecodable: fingerprints.filter((f) => f.decodeError !== undefined),
    summary: {
      groups: groups.length,
      exactGroups: groups.filter((g) => g.match !== "near").length,
      nearGroups: groups.filter((g) => g.match === "near").length,
      imagesInGroups: groups.reduce((s, g) => s + g.members.length, 0),
      crossSplitGroups: groups.filter((g) => g.crossSplit).length,
      conflictingGroups: groups.filter((g) => g.conflictingLabels).length,
      leakedFromTrain,
    },
    groups,
    leaks,
  };
}

export async function auditDataset(dataset: DatasetDict, options: AuditOptions = {}): Promise<AuditReport> {
  const threshold = options.threshold ?? DEFAULT_PHASH_THRESHOLD;
  return analyseFingerprints(dataset.classNames, await fingerprintDataset(dataset, options), threshold, options.minCorrelation ?? DEFAULT_MIN_CORRELATION);
}

export type DropReason = "conflicting-labels" | "leaks-from-train" | "duplicate";

export interface DedupeResult {
  readonly dataset: DatasetDict;
  readonly dropped: readonly (RowRef & { readonly reason: DropReason; readonly group: number })[];
}

/**
 * The cleaned data set: groups with conflicting labels are dropped whole (no way to tell which
 * label is right); a group that touches train keeps one train row and loses the rest (so no
 * evaluation row repeats a training image); any other group keeps its first row in split order.
 */
export function dedupeDataset(dataset: DatasetDict, report: AuditReport): DedupeResult {
  const splitOrder = [...dataset.splits.keys()];
  const rank = (f: RowRef): number => (f.split === TRAIN ? -1 : splitOrder.indexOf(f.split));
  const drop = new Map<string, { reason: DropReason; group: number; ref: RowRef }>();
  const key = (f: RowRef): string => `${f.split}\u0000${f.index}`;
  for (const group of report.groups) {
    if (group.conflictingLabels) {
      for (const m of group.members) drop.set(key(m), { reason: "conflicting-labels", group: group.id, ref: ref(m) });
      continue;
    }
    const ordered = [...group.members].sort((a, b) => rank(a) - rank(b) || a.index - b.index);
    const keeper = ordered[0] as ImageFingerprint;
    for (const m of ordered.slice(1)) {
      const reason: DropReason = keeper.split === TRAIN && m.split !== TRAIN ? "leaks-from-train" : "duplicate";
      drop.set(key(m), { reason, group: group.id, ref: ref(m) });
    }
  }
  const splits = new Map<string, readonly DatasetRow[]>();
  for (const [split, rows] of dataset.splits) {
    splits.set(split, rows.filter((_, index) => !drop.has(key({ split, index, path: null, label: 0 }))));
  }
  return {
    dataset: { classNames: dataset.classNames, splits },
    dropped: [...drop.values()].map(({ reason, group, ref: r }) => ({ ...r, reason, group })),
  };
}
