// Reconnection delays: exponential (x2 per attempt) from `initialMs`, capped at `capMs`,
// with +-`jitter` random spread (1 s, 10 s, 10 %), inside a total `budgetMs`: attempts go on
// until the budget is spent (the last delay is cut to what is left, so the last attempt
// comes at the budget, not up to a whole cap before it), then the caller gives up.
// The cap is 10 s (the Agora seed's 30 s left a 30 s gap before the last attempt of a
// 60 s budget: a page gave up 31 s into a 30 s gateway restart). Pure: time and randomness are passed in.

export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 1000, capMs: 10000, jitter: 0.1, budgetMs: 60000 });

/** The delay before attempt `attempt` (0-based) for a random number `r` in [0, 1). */
export function backoffDelay(attempt, r, opts = DEFAULT_BACKOFF) {
  const base = Math.min(opts.capMs, opts.initialMs * 2 ** attempt);
  const spread = base * opts.jitter * (2 * r - 1);
  return Math.min(opts.capMs, Math.max(0, base + spread));
}

/** One reconnection episode: `next(nowMs)` gives the next delay, or null once the budget is spent. */
export class Backoff {
  constructor(opts = {}, random = Math.random) {
    this.opts = { ...DEFAULT_BACKOFF, ...opts };
    this.random = random;
    this.reset();
  }

  reset() {
    this.attempt = 0;
    this.startedAt = null;
  }

  next(nowMs) {
    if (this.startedAt === null) this.startedAt = nowMs;
    const left = this.opts.budgetMs - (nowMs - this.startedAt);
    if (left <= 0) return null;
    const delay = Math.min(left, backoffDelay(this.attempt, this.random(), this.opts));
    this.attempt += 1;
    return delay;
  }

  elapsed(nowMs) {
    return this.startedAt === null ? 0 : nowMs - this.startedAt;
  }
}
