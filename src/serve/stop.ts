/**
 * Stop strings over streamed text. A stop string can arrive split across tokens, so text is held
 * back while its tail could still be the start of one; the client never sees a stop string, nor
 * text after it (as the OpenAI API promises).
 */
export class StopFilter {
  private pending = "";
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** The text that is now safe to send. After a stop string it sets `stopped` and returns the text before it. */
  push(piece: string): string {
    if (this.stopped) return "";
    this.pending += piece;
    let cut = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      const out = this.pending.slice(0, cut);
      this.pending = "";
      return out;
    }
    const hold = this.heldBack();
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return out;
  }

  /** What is left when generation ends without a stop string. */
  flush(): string {
    const out = this.stopped ? "" : this.pending;
    this.pending = "";
    return out;
  }

  /** Length of the longest tail of the pending text that is a proper prefix of some stop string. */
  private heldBack(): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > best; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
