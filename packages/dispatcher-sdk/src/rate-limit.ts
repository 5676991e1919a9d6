/**
 * Token buckets, one per destination key: `rate` tokens a second, up to `burst`
 * saved. Pure: the caller passes the time. `reserve` takes a token now or in the
 * future and says how long to wait for it, so callers queue fairly in arrival order.
 */
export interface RateLimit {
  /** Sustained rate, per second. */
  perSecond: number;
  /** Tokens that may be spent at once after a quiet spell (default: one second's worth). */
  burst?: number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly burst: number;

  constructor(private readonly limit: RateLimit) {
    if (!(limit.perSecond > 0)) throw new Error(`rate limit must be positive, got ${limit.perSecond}`);
    this.burst = Math.max(1, limit.burst ?? limit.perSecond);
  }

  /** Takes one token for `key`; returns how many ms from `nowMs` the caller must wait before using it. */
  reserve(key: string, nowMs: number): number {
    let b = this.buckets.get(key);
    if (b === undefined) {
      b = { tokens: this.burst, atMs: nowMs };
      this.buckets.set(key, b);
    }
    if (nowMs > b.atMs) {
      b.tokens = Math.min(this.burst, b.tokens + ((nowMs - b.atMs) * this.limit.perSecond) / 1000);
      b.atMs = nowMs;
    }
    b.tokens -= 1;
    // A negative balance is a queue of reservations: the last one waits until it refills.
    return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / this.limit.perSecond);
  }

  /** Gives back a token that was reserved and then not used (the action expired while waiting). */
  refund(key: string): void {
    const b = this.buckets.get(key);
    if (b !== undefined) b.tokens = Math.min(this.burst, b.tokens + 1);
  }
}
