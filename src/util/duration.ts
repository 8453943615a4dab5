/**
 * A duration for a person: "45s", "2m05s", "1h03m". The seconds are rounded (to `step`, default 1)
 * before they are split into units, so 179.6 s reads "3m00s", never "2m60s" (the glitch of rounding
 * the remainder after the split, as cli-progress's own formatter does). Unknown (NaN, Infinity,
 * negative, or cli-progress's "NULL"/"INF" placeholders) reads "?".
 */
export function formatDuration(seconds: number | string, step = 1): string {
  const t = typeof seconds === "number" ? seconds : Number.NaN;
  if (!Number.isFinite(t) || t < 0) return "?";
  const unit = step > 0 ? step : 1;
  const total = Math.round(t / unit) * unit;
  if (total < 60) return `${Math.round(total)}s`;
  if (total < 3600) {
    const whole = Math.round(total);
    return `${Math.floor(whole / 60)}m${pad(whole % 60)}s`;
  }
  // Past an hour the seconds are noise: round the raw value to whole minutes (not the already
  // rounded one, which would round twice), then split.
  const minutes = Math.max(60, Math.round(t / 60));
  return `${Math.floor(minutes / 60)}h${pad(minutes % 60)}m`;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}
