/**
 * Cancelled keys, shared between suppression (which records them) and the
 * dispatchers (which check them just before delivering, so that an action
 * already handed to a channel is still withdrawn when it is cancelled).
 * KV bucket `cancellations`, key `<ws>.<profileId>.<cancelKey>`, kept 8 days.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";

/**
 * One KV key token. KV keys allow `[-/_=.a-zA-Z0-9]` and `.` separates tokens, so
 * anything else (an empty string, `@`, `.`) is `=` + base64url: a plain token
 * never starts with `=`, so the two forms cannot collide.
 */
export function keyToken(s: string): string {
  return /^[-_a-zA-Z0-9][-_=a-zA-Z0-9]*$/.test(s) ? s : `=${Buffer.from(s).toString("base64url")}`;
}

/** The inverse of `keyToken`. */
export function fromKeyToken(t: string): string {
  return t.startsWith("=") ? Buffer.from(t.slice(1), "base64url").toString() : t;
}

/**
 * The key marked when a profile is deleted (GDPR): every action intended for it
 * before then is withdrawn by the dispatchers, whatever its own cancel keys.
 */
export const PROFILE_DELETED_KEY = "profile:deleted";

/** When a key was cancelled, and why. */
export interface CancellationMark {
  atMs: number;
  reason: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class Cancellations {
  private constructor(private readonly kv: KV) {}

  /** Opens (creating when absent) the bucket. */
  static async open(nc: NatsConnection, replicas = 1): Promise<Cancellations> {
    return new Cancellations(
      await new Kvm(nc).create("cancellations", { history: 1, replicas, ttl: 8 * 86_400_000 }),
    );
  }

  private key(ws: string, profileId: string, cancelKey: string): string {
    return [ws, profileId, cancelKey].map(keyToken).join(".");
  }

  /** Records that `cancelKeys` of the profile were cancelled at `mark.atMs`. */
  async mark(
    ws: string,
    profileId: string,
    cancelKeys: readonly string[],
    mark: CancellationMark,
  ): Promise<void> {
    await Promise.all(
      cancelKeys.map((k) => this.kv.put(this.key(ws, profileId, k), enc.encode(JSON.stringify(mark)))),
    );
  }

  /**
   * The first of `cancelKeys` cancelled at or after `intendedAtMs` (a
   * cancellation before an action was intended does not touch it), if any.
   */
  async cancelling(
    ws: string,
    profileId: string,
    cancelKeys: readonly string[],
    intendedAtMs: number,
  ): Promise<{ key: string; mark: CancellationMark } | undefined> {
    const entries = await Promise.all(cancelKeys.map((k) => this.kv.get(this.key(ws, profileId, k))));
    for (const [i, e] of entries.entries()) {
      if (e === null || e.operation !== "PUT" || e.value.length === 0) continue;
      const mark = JSON.parse(dec.decode(e.value)) as CancellationMark;
      if (mark.atMs >= intendedAtMs) return { key: cancelKeys[i] ?? "", mark };
    }
    return undefined;
  }
}
