/**
 * A circuit breaker per destination key. Closed: every call goes through.
 * After `failureThreshold` transient failures in a row it opens: no call goes
 * through for `cooldownMs`. Then half-open: one probe goes through; its success
 * closes the circuit, its failure opens it again for twice as long (up to
 * `maxCooldownMs`). Pure: the caller passes the time.
 */
export interface BreakerPolicy {
  failureThreshold: number;
  cooldownMs: number;
  maxCooldownMs: number;
}

export const defaultBreakerPolicy: BreakerPolicy = {
  failureThreshold: 5,
  cooldownMs: 2_000,
  maxCooldownMs: 60_000,
};

export type BreakerState = "closed" | "open" | "half-open";

interface Circuit {
  state: BreakerState;
  failures: number;
  openUntilMs: number;
  cooldownMs: number;
  probing: boolean;
}

export type Admission = { allowed: true } | { allowed: false; retryInMs: number };

export class CircuitBreaker {
  private readonly circuits = new Map<string, Circuit>();

  constructor(private readonly policy: BreakerPolicy = defaultBreakerPolicy) {}

  private circuit(key: string): Circuit {
    let c = this.circuits.get(key);
    if (c === undefined) {
      c = {
        state: "closed",
        failures: 0,
        openUntilMs: 0,
        cooldownMs: this.policy.cooldownMs,
        probing: false,
      };
      this.circuits.set(key, c);
    }
    return c;
  }

  state(key: string, nowMs: number): BreakerState {
    const c = this.circuit(key);
    if (c.state === "open" && nowMs >= c.openUntilMs) c.state = "half-open";
    return c.state;
  }

  /** May a call to `key` go out now? In half-open, only one probe at a time. */
  admit(key: string, nowMs: number): Admission {
    const c = this.circuit(key);
    const state = this.state(key, nowMs);
    if (state === "closed") return { allowed: true };
    if (state === "open") return { allowed: false, retryInMs: c.openUntilMs - nowMs };
    if (c.probing) return { allowed: false, retryInMs: Math.min(250, c.cooldownMs) };
    c.probing = true;
    return { allowed: true };
  }

  /** The destination answered (even with a permanent error: it is up). */
  success(key: string): void {
    const c = this.circuit(key);
    c.state = "closed";
    c.failures = 0;
    c.probing = false;
    c.cooldownMs = this.policy.cooldownMs;
  }

  /** A transient failure (5xx, timeout, refused). Returns true when this opened the circuit. */
  failure(key: string, nowMs: number): boolean {
    const c = this.circuit(key);
    if (c.state === "half-open" || (c.state === "open" && nowMs >= c.openUntilMs)) {
      c.probing = false;
      c.cooldownMs = Math.min(this.policy.maxCooldownMs, c.cooldownMs * 2);
      c.state = "open";
      c.openUntilMs = nowMs + c.cooldownMs;
      return true;
    }
    c.failures++;
    if (c.state === "closed" && c.failures >= this.policy.failureThreshold) {
      c.state = "open";
      c.openUntilMs = nowMs + c.cooldownMs;
      return true;
    }
    return false;
  }
}
