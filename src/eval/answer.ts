import { INVALID } from "./metrics.ts";

export type MatchKind = "exact" | "normalized" | "invalid";

/**
 * Maps a free-text answer to a class the way a strict grader would: the answer with surrounding
 * whitespace and the end-of-sequence marker removed must equal a class name exactly; failing that,
 * equal it after case folding and collapsing spaces and punctuation. Anything else is invalid —
 * a model that rambles is not given credit for a class name buried in prose.
 */
export function parseAnswer(answer: string, classNames: readonly string[]): { label: number; match: MatchKind } {
  const trimmed = answer.replace(/<\/s>\s*$/u, "").trim();
  const exact = classNames.indexOf(trimmed);
  if (exact >= 0) return { label: exact, match: "exact" };
  const key = normalize(trimmed);
  const normalized = classNames.findIndex((name) => normalize(name) === key);
  if (normalized >= 0 && key.length > 0) return { label: normalized, match: "normalized" };
  return { label: INVALID, match: "invalid" };
}

function normalize(text: string): string {
  return text
    .toLowerCase()
    .replace(/[\p{P}\p{S}]+/gu, " ")
    .replace(/\s+/gu, " ")
    .trim();
}
