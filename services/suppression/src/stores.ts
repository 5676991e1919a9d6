/**
 * Suppression's state in JetStream KV:
 *   contact            one record per profile (consent, preferences, counted sends,
 *                      cancellations), written by compare-and-set
 *   deferred           actions held until a time (quiet hours, not_before), by action id
 *   decisions          every decision, by profile, channel and action (30 days), for Explain
 *   suppression-lists  identifiers suppressed per channel (unsubscribed, hard bounced, ...)
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import { keyToken } from "@kairos/kit";
import { emptyContact, type ContactState } from "./decide.js";

const enc = new TextEncoder();
const dec = new TextDecoder();
const DAY = 86_400_000;

/** The record changed since it was read: read it again and re-decide. */
export class WriteConflict extends Error {}

function isConflict(e: unknown): boolean {
  return e instanceof Error && /wrong last sequence|key exists/i.test(e.message);
}

export { fromKeyToken, keyToken } from "@kairos/kit";

const live = (e: KvEntry | null): e is KvEntry => e !== null && e.operation === "PUT" && e.value.length > 0;

/** An action held until `untilMs`. */
export interface DeferredEntry {
  workspace: string;
  profileId: string;
  actionId: string;
  untilMs: number;
  reason: string;
  priority: number;
  /** When it was intended (orders equal priorities). */
  intendedAtMs: number;
  cancelKeys: string[];
  /** The intent, protobuf binary, base64. */
  intent: string;
}

/** One decision as recorded for Explain. */
export interface DecisionRecord {
  actionId: string;
  journey: string;
  status: string;
  reason: string;
  detail: string;
  decidedAtMs: number;
  priority: number;
  purpose: string;
}

/** One suppression-list entry. */
export interface ListEntry {
  workspace: string;
  channel: string;
  type: string;
  value: string;
  reason: string;
  source: string;
  atMs: number;
}

export class SuppressionStores {
  private constructor(
    readonly contactKv: KV,
    readonly deferredKv: KV,
    private readonly decisionsKv: KV,
    readonly listsKv: KV,
  ) {}

  /** Opens (creating when absent) the buckets. */
  static async open(nc: NatsConnection, replicas = 1): Promise<SuppressionStores> {
    const kvm = new Kvm(nc);
    return new SuppressionStores(
      await kvm.create("contact", { history: 1, replicas }),
      await kvm.create("deferred", { history: 1, replicas }),
      await kvm.create("decisions", { history: 1, replicas, ttl: 30 * DAY }),
      await kvm.create("suppression-lists", { history: 1, replicas }),
    );
  }

  private contactKey(ws: string, profileId: string): string {
    return `${keyToken(ws)}.${keyToken(profileId)}`;
  }

  /** The profile's contact record and the revision to update it from (0: none yet). */
  async contact(ws: string, profileId: string): Promise<{ state: ContactState; revision: number }> {
    const e = await this.contactKv.get(this.contactKey(ws, profileId));
    if (!live(e)) return { state: emptyContact(), revision: 0 };
    return {
      state: { ...emptyContact(), ...(JSON.parse(dec.decode(e.value)) as ContactState) },
      revision: e.revision,
    };
  }

  /** Writes the record read at `revision`; throws `WriteConflict` if it moved meanwhile. */
  async putContact(ws: string, profileId: string, state: ContactState, revision: number): Promise<void> {
    const key = this.contactKey(ws, profileId);
    const data = enc.encode(JSON.stringify(state));
    try {
      if (revision === 0) await this.contactKv.create(key, data);
      else await this.contactKv.update(key, data, revision);
    } catch (e) {
      if (isConflict(e)) throw new WriteConflict(key);
      throw e;
    }
  }

  /** Read, change and write the record, again on a conflict; returns what was written. */
  async updateContact(
    ws: string,
    profileId: string,
    change: (s: ContactState) => ContactState,
    attempts = 20,
  ): Promise<ContactState> {
    for (let i = 1; ; i++) {
      const { state, revision } = await this.contact(ws, profileId);
      const next = change(state);
      try {
        await this.putContact(ws, profileId, next, revision);
        return next;
      } catch (e) {
        if (!(e instanceof WriteConflict) || i >= attempts) throw e;
      }
    }
  }

  deferredKey(ws: string, actionId: string): string {
    return `${keyToken(ws)}.${keyToken(actionId)}`;
  }

  async putDeferred(d: DeferredEntry): Promise<void> {
    await this.deferredKv.put(this.deferredKey(d.workspace, d.actionId), enc.encode(JSON.stringify(d)));
  }

  async getDeferred(key: string): Promise<{ entry: DeferredEntry; revision: number } | undefined> {
    const e = await this.deferredKv.get(key);
    return live(e)
      ? { entry: JSON.parse(dec.decode(e.value)) as DeferredEntry, revision: e.revision }
      : undefined;
  }

  async deleteDeferred(key: string): Promise<void> {
    await this.deferredKv.delete(key);
  }

  static parseDeferred(e: KvEntry): DeferredEntry | undefined {
    return live(e) ? (JSON.parse(dec.decode(e.value)) as DeferredEntry) : undefined;
  }

  /** Records a decision; the same action and status recorded twice is one record. */
  async recordDecision(ws: string, profileId: string, channel: string, r: DecisionRecord): Promise<void> {
    const key = [ws, profileId, channel, r.actionId, r.status].map(keyToken).join(".");
    await this.decisionsKv.put(key, enc.encode(JSON.stringify(r)));
  }

  /** The recorded decisions about a profile on a channel, newest first. */
  async decisions(ws: string, profileId: string, channel: string, limit: number): Promise<DecisionRecord[]> {
    const filter = `${[ws, profileId, channel].map(keyToken).join(".")}.>`;
    const keys: string[] = [];
    for await (const k of await this.decisionsKv.keys(filter)) keys.push(k);
    const entries = await Promise.all(keys.map((k) => this.decisionsKv.get(k)));
    return entries
      .filter(live)
      .map((e) => JSON.parse(dec.decode(e.value)) as DecisionRecord)
      .sort((a, b) => b.decidedAtMs - a.decidedAtMs)
      .slice(0, limit);
  }

  listKey(ws: string, channel: string, type: string, value: string): string {
    return [ws, channel, type, value].map(keyToken).join(".");
  }

  async addToList(e: ListEntry): Promise<void> {
    await this.listsKv.put(
      this.listKey(e.workspace, e.channel, e.type, e.value),
      enc.encode(JSON.stringify(e)),
    );
  }

  /** Removes an entry; false when there was none. */
  async removeFromList(ws: string, channel: string, type: string, value: string): Promise<boolean> {
    const key = this.listKey(ws, channel, type, value);
    if (!live(await this.listsKv.get(key))) return false;
    await this.listsKv.delete(key);
    return true;
  }

  static parseList(e: KvEntry): ListEntry | undefined {
    return live(e) ? (JSON.parse(dec.decode(e.value)) as ListEntry) : undefined;
  }

  /** Readiness: the store answers. */
  async ping(): Promise<boolean> {
    await this.contactKv.status();
    return true;
  }
}
