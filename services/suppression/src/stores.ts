/**
 * Suppression's state in JetStream KV:
 *   contact            one record per profile (consent, preferences, counted sends,
 *                      cancellations), written by compare-and-set
 *   deferred           actions held until a time (quiet hours, not_before), by action id
 *   decisions          every decision, by profile, channel and action (30 days), for Explain
 *   suppression-lists  identifiers suppressed per channel (unsubscribed, hard bounced, ...)
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, KvWatchInclude, type KV, type KvEntry } from "@nats-io/kv";
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

/**
 * Recently read or written contact records, kept current by a watch on the
 * bucket. A record read from here may trail another replica's write by the
 * watch's delay; a write from it then fails compare-and-set, the entry is
 * dropped and the record is read from the bucket again.
 */
class ContactCache {
  private readonly entries = new Map<string, { text: string; revision: number }>();
  constructor(private readonly capacity: number) {}

  get(key: string) {
    const e = this.entries.get(key);
    if (e !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, e);
    }
    return e;
  }

  set(key: string, text: string, revision: number): void {
    const held = this.entries.get(key);
    if (held !== undefined && held.revision >= revision) return;
    this.entries.delete(key);
    this.entries.set(key, { text, revision });
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  drop(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

export class SuppressionStores {
  private readonly cache: ContactCache | undefined;
  private stopWatch: (() => void) | undefined;

  private constructor(
    readonly contactKv: KV,
    readonly deferredKv: KV,
    private readonly decisionsKv: KV,
    readonly listsKv: KV,
    cacheSize: number,
  ) {
    this.cache = cacheSize > 0 ? new ContactCache(cacheSize) : undefined;
  }

  /** Opens (creating when absent) the buckets; with `cacheSize`, contact records are cached and watched. */
  static async open(nc: NatsConnection, replicas = 1, cacheSize = 0): Promise<SuppressionStores> {
    const kvm = new Kvm(nc);
    const stores = new SuppressionStores(
      await kvm.create("contact", { history: 1, replicas }),
      await kvm.create("deferred", { history: 1, replicas }),
      await kvm.create("decisions", { history: 1, replicas, ttl: 30 * DAY }),
      await kvm.create("suppression-lists", { history: 1, replicas }),
      cacheSize,
    );
    if (stores.cache !== undefined) await stores.watchContacts(stores.cache);
    return stores;
  }

  /** Other replicas' writes reach the cache through a watch (updates only, from now on). */
  private async watchContacts(cache: ContactCache): Promise<void> {
    const watch = await this.contactKv.watch({ include: KvWatchInclude.UpdatesOnly });
    this.stopWatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) {
        if (e.operation === "PUT" && e.value.length > 0) cache.set(e.key, dec.decode(e.value), e.revision);
        else cache.drop(e.key);
      }
    })();
  }

  /** Stops the contact watch. */
  close(): void {
    this.stopWatch?.();
  }

  /** Contact records held in memory. */
  get cachedContacts(): number {
    return this.cache?.size ?? 0;
  }

  private contactKey(ws: string, profileId: string): string {
    return `${keyToken(ws)}.${keyToken(profileId)}`;
  }

  /** The profile's contact record and the revision to update it from (0: none yet). */
  async contact(
    ws: string,
    profileId: string,
    opts: { fresh?: boolean } = {},
  ): Promise<{ state: ContactState; revision: number }> {
    const key = this.contactKey(ws, profileId);
    const cached = opts.fresh === true ? undefined : this.cache?.get(key);
    if (cached !== undefined) {
      return {
        state: { ...emptyContact(), ...(JSON.parse(cached.text) as ContactState) },
        revision: cached.revision,
      };
    }
    const e = await this.contactKv.get(key);
    if (!live(e)) return { state: emptyContact(), revision: 0 };
    const text = dec.decode(e.value);
    this.cache?.set(key, text, e.revision);
    return { state: { ...emptyContact(), ...(JSON.parse(text) as ContactState) }, revision: e.revision };
  }

  /** The record as this process's cache holds it, without reading the bucket; undefined if not held. */
  cachedContact(ws: string, profileId: string): ContactState | undefined {
    const cached = this.cache?.get(this.contactKey(ws, profileId));
    return cached === undefined
      ? undefined
      : { ...emptyContact(), ...(JSON.parse(cached.text) as ContactState) };
  }

  /** Writes the record read at `revision`; throws `WriteConflict` if it moved meanwhile. */
  async putContact(ws: string, profileId: string, state: ContactState, revision: number): Promise<void> {
    const key = this.contactKey(ws, profileId);
    const text = JSON.stringify(state);
    const data = enc.encode(text);
    try {
      const written =
        revision === 0
          ? await this.contactKv.create(key, data)
          : await this.contactKv.update(key, data, revision);
      this.cache?.set(key, text, written);
    } catch (e) {
      if (isConflict(e)) {
        this.cache?.drop(key);
        throw new WriteConflict(key);
      }
      throw e;
    }
  }

  /**
   * Erases the profile's contact record (a deleted customer): consent, preferences, counted sends.
   * With `revision`, only if the record is still at it (else `WriteConflict`).
   */
  async deleteContact(ws: string, profileId: string, revision?: number): Promise<void> {
    const key = this.contactKey(ws, profileId);
    this.cache?.drop(key);
    if (revision === undefined || revision === 0) {
      await this.contactKv.purge(key);
      return;
    }
    try {
      await this.contactKv.purge(key, { previousSeq: revision });
    } catch (e) {
      if (isConflict(e)) throw new WriteConflict(key);
      throw e;
    }
  }

  /**
   * Read, change and write the record, again on a conflict; returns what was written (`change`
   * returning the record it was given writes nothing).
   */
  async updateContact(
    ws: string,
    profileId: string,
    change: (s: ContactState) => ContactState,
    attempts = 20,
  ): Promise<ContactState> {
    for (let i = 1; ; i++) {
      const { state, revision } = await this.contact(ws, profileId);
      const next = change(state);
      if (next === state) return state;
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

  /**
   * Erases the recorded decisions about a profile on every channel (a deleted customer), but those
   * `keep` accepts; returns how many were erased.
   */
  async purgeDecisions(
    ws: string,
    profileId: string,
    keep: (r: DecisionRecord) => boolean = () => false,
  ): Promise<number> {
    const keys: string[] = [];
    for await (const k of await this.decisionsKv.keys(`${[ws, profileId].map(keyToken).join(".")}.>`))
      keys.push(k);
    const purged = await Promise.all(
      keys.map(async (k) => {
        const e = await this.decisionsKv.get(k);
        if (live(e) && keep(JSON.parse(dec.decode(e.value)) as DecisionRecord)) return false;
        await this.decisionsKv.purge(k);
        return true;
      }),
    );
    return purged.filter(Boolean).length;
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
