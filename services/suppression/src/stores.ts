/**
 * Suppression's state in JetStream KV: consent records, and the daily cap
 * ledgers (the action ids counted per profile, channel and local day), both
 * written with compare-and-set.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import type { ConsentRecord } from "./decide.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The cap ledger changed since it was read: read it again and re-decide. */
export class WriteConflict extends Error {}

/** A consent record as stored (its purpose is in the key). */
export interface StoredConsent {
  granted: boolean;
  source: string;
  recordedAtMs: number;
}

function isConflict(e: unknown): boolean {
  return e instanceof Error && /wrong last sequence|key exists/i.test(e.message);
}

/**
 * One key token. KV keys allow `[-/_=.a-zA-Z0-9]` and `.` separates tokens, so
 * anything else (an empty string, `@`, `.`) is `=` + base64url: a plain token
 * never starts with `=`, so the two forms cannot collide.
 */
export function keyToken(s: string): string {
  return /^[-_a-zA-Z0-9][-_=a-zA-Z0-9]*$/.test(s) ? s : `=${Buffer.from(s).toString("base64url")}`;
}

/** Suppression's KV buckets: `consent` and `frequency-caps`. */
export class SuppressionStores {
  private constructor(
    private readonly consent: KV,
    private readonly caps: KV,
  ) {}

  /** Opens (creating when absent) both buckets. */
  static async open(nc: NatsConnection, replicas = 1): Promise<SuppressionStores> {
    const kvm = new Kvm(nc);
    return new SuppressionStores(
      await kvm.create("consent", { history: 5, replicas }),
      // Ledgers are only needed for the day they count; two days covers every time zone.
      await kvm.create("frequency-caps", { history: 1, replicas, ttl: 2 * 86_400_000 }),
    );
  }

  private consentKey(ws: string, profileId: string, channel: string, purpose: string): string {
    // The empty purpose (every purpose) encodes as `=`.
    return [ws, profileId, channel, purpose].map(keyToken).join(".");
  }

  /** Records the customer's latest word for the channel and purpose (`""` = every purpose). */
  async setConsent(
    ws: string,
    profileId: string,
    channel: string,
    purpose: string,
    r: StoredConsent,
  ): Promise<void> {
    await this.consent.put(this.consentKey(ws, profileId, channel, purpose), enc.encode(JSON.stringify(r)));
  }

  /** The profile's consent records for the channel that bear on `purpose`: its own and the all-purposes one. */
  async consentFor(
    ws: string,
    profileId: string,
    channel: string,
    purpose: string,
  ): Promise<ConsentRecord[]> {
    const purposes = purpose === "" ? [""] : [purpose, ""];
    const entries = await Promise.all(
      purposes.map((p) => this.consent.get(this.consentKey(ws, profileId, channel, p))),
    );
    const out: ConsentRecord[] = [];
    entries.forEach((e, i) => {
      if (e === null || e.operation !== "PUT" || e.value.length === 0) return;
      const r = JSON.parse(dec.decode(e.value)) as StoredConsent;
      out.push({ purpose: purposes[i] ?? "", granted: r.granted, source: r.source });
    });
    return out;
  }

  /** The key of one profile's ledger for a channel and local day. */
  capKey(ws: string, channel: string, profileId: string, day: string): string {
    return [ws, channel, profileId, day].map(keyToken).join(".");
  }

  /** The action ids counted in a ledger, and the revision to update it from (0: no ledger yet). */
  async counted(key: string): Promise<{ ids: string[]; revision: number }> {
    const e = await this.caps.get(key);
    if (e === null || e.operation !== "PUT" || e.value.length === 0) return { ids: [], revision: 0 };
    return { ids: JSON.parse(dec.decode(e.value)) as string[], revision: e.revision };
  }

  /** Records `actionId` in the ledger read at `revision`; throws `WriteConflict` if it moved. */
  async count(key: string, ids: readonly string[], actionId: string, revision: number): Promise<void> {
    const data = enc.encode(JSON.stringify([...ids, actionId]));
    try {
      if (revision === 0) await this.caps.create(key, data);
      else await this.caps.update(key, data, revision);
    } catch (e) {
      if (isConflict(e)) throw new WriteConflict(key);
      throw e;
    }
  }

  /** Readiness: the store answers. */
  async ping(): Promise<boolean> {
    await this.caps.status();
    return true;
  }
}
