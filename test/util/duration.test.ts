import assert from "node:assert/strict";
import { test } from "node:test";
import { formatDuration } from "../../src/util/duration.ts";

test("durations read as a person expects at every scale, with no 60 in a seconds or minutes place", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(9.4), "9s");
  assert.equal(formatDuration(59.4), "59s");
  assert.equal(formatDuration(59.6), "1m00s");
  assert.equal(formatDuration(125), "2m05s");
  // cli-progress's formatter printed these as "2m60s" and "1h60m".
  assert.equal(formatDuration(179.6), "3m00s");
  assert.equal(formatDuration(178, 5), "3m00s");
  assert.equal(formatDuration(3599.7), "1h00m");
  assert.equal(formatDuration(7199, 5), "2h00m");
  assert.equal(formatDuration(3600 + 29 * 60 + 31), "1h30m");
  assert.equal(formatDuration(100 * 3600), "100h00m");
  for (const unknown of [Number.NaN, Number.POSITIVE_INFINITY, -1, "NULL", "INF"]) assert.equal(formatDuration(unknown), "?");
});

test("no duration from 0 s to 50 h has a 60 in a seconds or minutes place, and they never go backwards", () => {
  let previous = -1;
  const value = (text: string): number => {
    const m = text.match(/^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/);
    assert.ok(m, text);
    return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
  };
  for (let t = 0; t < 50 * 3600; t += 0.7) {
    for (const step of [1, 5]) {
      const text = formatDuration(t, step);
      assert.ok(!/(^|[hm])60[ms]/.test(text), `${t} s with step ${step} reads ${text}`);
      if (step === 1) {
        const v = value(text);
        assert.ok(v >= previous, `${t} s reads ${text}, less than before`);
        assert.ok(Math.abs(v - t) <= (t >= 3600 ? 30 : 0.5) + 1e-9, `${t} s reads ${text}`);
        previous = v;
      }
    }
  }
});
