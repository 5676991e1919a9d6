/**
 * Suppression's state in JetStream KV: consent records, and the daily cap
 * ledgers (the action ids counted per profile, channel and local day), both
 * written with compare-and-set.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";

const enc = new TextEncoder();
const dec = new TextDecoder();

export class WriteConflict extends Error {}

export interface ConsentRecord {
  granted: boolean;
  source: string;
  recordedAtMs: number;
}

/** Consent for every purpose is stored under this purpose token. */
export const ALL_PURPOSES = "_all";

function isConflict(e: unknown): boolean {
  return e instanceof Error && /wrong last sequence|key exists/i.test(e.message);
}

/** KV keys allow `[-/_=.a-zA-Z0-9]`; tokens with anything else are hex-encoded. */
function token(s: string): string {
  return /^[-_=a-zA-Z0-9]+$/.test(s) ? s : `x${Buffer.from(s).toString("hex")}`;
}

export class SuppressionStores {
  private constructor(
    private readonly consent: KV,
    private readonly caps: KV,
  ) {}

  static async open(nc: NatsConnection, replicas = 1): Promise<SuppressionStores> {
    const kvm = new Kvm(nc);
    return new SuppressionStores(
      await kvm.create("consent", { history: 5, replicas }),
      // Ledgers are only needed for the day they count; two days covers every time zone.
      await kvm.create("frequency-caps", { history: 1, replicas, ttl: 2 * 86_400_000 }),
    );
  }

  private consentKey(ws: string, profileId: string, channel: string, purpose: string): string {
    return `${token(ws)}.${token(profileId)}.${token(channel)}.${token(purpose === "" ? ALL_PURPOSES : purpose)}`;
  }

  async setConsent(
    ws: string,
    profileId: string,
    channel: string,
    purpose: string,
    r: ConsentRecord,
  ): Promise<void> {
    await this.consent.put(this.consentKey(ws, profileId, channel, purpose), enc.encode(JSON.stringify(r)));
  }

  /** True when consent for the channel was withdrawn for this purpose or for every purpose. */
  async consentWithdrawn(ws: string, profileId: string, channel: string, purpose: string): Promise<boolean> {
    const keys = [
      this.consentKey(ws, profileId, channel, purpose),
      this.consentKey(ws, profileId, channel, ""),
    ];
    const entries = await Promise.all(keys.map((k) => this.consent.get(k)));
    // The purpose-specific record wins over the all-purposes one.
    for (const e of entries) {
      if (e !== null && e.operation === "PUT" && e.value.length > 0) {
        return !(JSON.parse(dec.decode(e.value)) as ConsentRecord).granted;
      }
    }
    return false;
  }

  capKey(ws: string, channel: string, profileId: string, day: string): string {
    return `${token(ws)}.${token(channel)}.${token(profileId)}.${day}`;
  }

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

  async ping(): Promise<boolean> {
    await this.caps.status();
    return true;
  }
}
