/**
 * Identity's read view: the profile store's two KV buckets (`profiles`,
 * `identity-index`) held in this process's memory, fed by an ordered consumer on each, so a
 * `GetProfile` is answered without a round trip to nats-server (two KV reads in
 * a row cost more than a 2 ms p99 on their own).
 *
 * What it answers may lag the store by the feed's delay (milliseconds): a
 * caller that needs at least a version it knows of asks with `min_version`, and
 * an older entry is read from the store instead. A key the view does not hold
 * is always read from the store (it may have been written a moment ago), so a
 * lagging view is never the reason a profile is reported missing. This process's own writes
 * reach the view as they succeed (before the change is published), so with one replica a
 * lookup never answers older than the last `ProfileChanged`. The view is
 * bounded, by entries and by estimated memory: past either bound new keys are left to the store
 * (and logged once).
 * Entries are kept as the stored JSON text (compact one-byte strings) and
 * parsed per read.
 */
import { Kvm } from "@nats-io/kv";
import { DeliverPolicy, jetstream, type JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "@kairos/kit";
import type { Ident, ProfileRecord } from "./profile-record.js";
import {
  indexKey,
  profileBuckets,
  type IndexTarget,
  type KvProfileStore,
  type ProfileStore,
  type StoreWrite,
  type Versioned,
} from "./store.js";

interface Held {
  /** The stored JSON; undefined for a key this process deleted (read from the store meanwhile). */
  text: string | undefined;
  revision: number;
}

/**
 * What an entry costs besides its key and JSON text (map slot, entry object, string headers), for
 * the memory bound. An estimate: with 1,000,000 benchmark profiles (3,000,000 entries, estimated
 * 971 MiB) identity's RSS was 1,348 MiB.
 */
const ENTRY_OVERHEAD_BYTES = 120;

const dec = new TextDecoder();

export interface ViewStats {
  profiles: number;
  identifiers: number;
  /** Estimated memory held (keys, JSON text, per-entry overhead). */
  bytes: number;
  /** Feeds that failed and are not running again yet (the view is not used meanwhile). */
  feedsFailing: number;
  /** Both buckets replayed up to where they stood when the view started. */
  ready: boolean;
  /** Store time to arrival in the view of the last entry seen, in ms. */
  lagMs: number;
  hits: number;
  misses: number;
}

export class ProfileReadView implements ProfileStore {
  private readonly profiles = new Map<string, Held>();
  private readonly index = new Map<string, Held>();
  /** The feeds running now, one per bucket, by bucket. */
  private readonly feeds = new Map<string, { stop(): unknown }>();
  private loaded = 0;
  private full = false;
  private stopped = false;
  /** Buckets whose feed failed and is not running again yet: reads go to the store meanwhile. */
  private readonly failing = new Set<string>();
  lagMs = 0;
  /** Estimated memory held: keys, texts and per-entry overhead. */
  bytes = 0;
  hits = 0;
  misses = 0;

  private constructor(
    /** Where reads the view cannot answer go, and every write. */
    private readonly store: ProfileStore,
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Starts following both buckets; the view answers from memory once both have been replayed.
   * Each is read by an ordered pull consumer (the last value of every key, then every change),
   * a batch at a time: replaying millions of keys must not swamp nats-server and time out the
   * requests of everything else (a push watch did, at 3,000,000 keys).
   */
  static async start(
    nc: NatsConnection,
    store: KvProfileStore,
    opts: { maxEntries: number; maxBytes?: number; logger: Logger },
  ): Promise<ProfileReadView> {
    const view = new ProfileReadView(
      store,
      opts.maxEntries,
      opts.maxBytes ?? Number.POSITIVE_INFINITY,
      opts.logger,
    );
    store.onWrite = (w) => view.noteWrite(w);
    // The store created both buckets; they are measured before either is replayed.
    const kvm = new Kvm(nc);
    const buckets = [
      { name: profileBuckets.profiles, into: view.profiles, kv: await kvm.open(profileBuckets.profiles) },
      { name: profileBuckets.index, into: view.index, kv: await kvm.open(profileBuckets.index) },
    ];
    const sizes = await Promise.all(buckets.map((b) => b.kv.status().then((s) => s.values)));
    // Creating a consumer that starts at the last value of every key takes nats-server a while
    // with millions of keys (well over the default 5 s at 2,000,000 on a small machine).
    const js = jetstream(nc, { timeout: 120_000 });
    for (const [i, b] of buckets.entries()) view.follow(js, b.name, b.into, sizes[i] === 0);
    return view;
  }

  private follow(js: JetStreamClient, bucket: string, into: Map<string, Held>, empty: boolean): void {
    const prefix = `$KV.${bucket}.`;
    let loaded = empty;
    if (empty) this.loaded++;
    /** The last stream sequence (revision) applied: a feed that fails resumes after it. */
    let last = 0;
    void (async () => {
      while (!this.stopped) {
        try {
          const consumer = await js.consumers.get(
            `KV_${bucket}`,
            last === 0
              ? { filter_subjects: `${prefix}>`, deliver_policy: DeliverPolicy.LastPerSubject }
              : {
                  filter_subjects: `${prefix}>`,
                  deliver_policy: DeliverPolicy.StartSequence,
                  opt_start_seq: last + 1,
                },
          );
          const messages = await consumer.consume({ max_messages: 1000 });
          this.feeds.set(bucket, messages);
          this.failing.delete(bucket);
          for await (const m of messages) {
            last = m.info.streamSequence;
            this.lagMs = Date.now() - m.info.timestampNanos / 1e6;
            const op = m.headers?.get("KV-Operation") ?? "";
            this.apply(
              into,
              m.subject.slice(prefix.length),
              op === "" || op === "PUT" ? m.data : undefined,
              last,
            );
            // The replay's end: nothing pending behind this message.
            if (!loaded && m.info.pending === 0) {
              loaded = true;
              this.loaded++;
            }
          }
          if (this.stopped) return;
          throw new Error("feed ended");
        } catch (err) {
          if (this.stopped) return;
          // Until the feed runs again the view may miss others' writes and deletions: not used.
          this.failing.add(bucket);
          // nats-server busy or restarted: go on after the last revision applied (deletions included).
          this.logger.warn({ err, bucket, after: last }, "lookup view's feed failed; resuming");
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    })();
  }

  /** A key's new value (undefined: deleted) from the feed. */
  private apply(into: Map<string, Held>, key: string, value: Uint8Array | undefined, revision: number): void {
    if (value === undefined || value.length === 0) {
      this.remove(into, key); // nothing older follows a deletion on the feed
      return;
    }
    const held = into.get(key);
    // A deletion of this process that the feed has not brought yet: what it brings up to the
    // revision deleted is older (the feed's own deletion marker, which follows, removes the entry).
    if (held !== undefined && held.text === undefined && revision <= held.revision) return;
    this.hold(into, key, () => dec.decode(value), revision);
  }

  /** A write of this process, known before the feed brings it. */
  private noteWrite(w: StoreWrite): void {
    const into = w.bucket === profileBuckets.profiles ? this.profiles : this.index;
    const text = w.text;
    if (text === undefined) {
      // Until the feed brings the deletion, the key is read from the store (when the feed has
      // brought it already, nothing is held any more).
      const held = into.get(w.key);
      if (held !== undefined) {
        this.bytes -= held.text?.length ?? 0;
        held.text = undefined; // keeps its revision: nothing up to it is taken from the feed again
      }
      return;
    }
    if (into.get(w.key)?.text === undefined) this.remove(into, w.key);
    this.hold(into, w.key, () => text, w.revision);
  }

  private hold(into: Map<string, Held>, key: string, text: () => string, revision: number): void {
    const held = into.get(key);
    if (held !== undefined) {
      if (held.text !== undefined && held.revision >= revision) return;
      const t = text();
      this.bytes += t.length - (held.text?.length ?? 0);
      held.text = t;
      held.revision = revision;
      return;
    }
    const t = text();
    const size = key.length + t.length + ENTRY_OVERHEAD_BYTES;
    if (this.profiles.size + this.index.size >= this.maxEntries || this.bytes + size > this.maxBytes) {
      if (!this.full)
        this.logger.warn(
          { maxEntries: this.maxEntries, maxBytes: this.maxBytes, bytes: this.bytes },
          "identity's read view is full: lookups of profiles beyond it read the store",
        );
      this.full = true;
      return;
    }
    this.bytes += size;
    into.set(key, { text: t, revision });
  }

  private remove(into: Map<string, Held>, key: string): void {
    const held = into.get(key);
    if (held === undefined) return;
    this.bytes -= key.length + (held.text?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
    into.delete(key);
  }

  get ready(): boolean {
    return this.loaded >= 2;
  }

  stats(): ViewStats {
    return {
      profiles: this.profiles.size,
      identifiers: this.index.size,
      bytes: this.bytes,
      ready: this.ready,
      feedsFailing: this.failing.size,
      lagMs: this.lagMs,
      hits: this.hits,
      misses: this.misses,
    };
  }

  stop(): void {
    this.stopped = true;
    for (const f of this.feeds.values()) f.stop();
    this.feeds.clear();
  }

  /** The JSON held for a key, or undefined when the store must answer. */
  private held(map: Map<string, Held>, key: string): (Held & { text: string }) | undefined {
    const h = this.ready && this.failing.size === 0 ? map.get(key) : undefined;
    if (h?.text === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    return h as Held & { text: string };
  }

  async getProfile(workspace: string, profileId: string): Promise<Versioned<ProfileRecord> | undefined> {
    const h = this.held(this.profiles, `${workspace}.${profileId}`);
    if (h === undefined) return this.store.getProfile(workspace, profileId);
    return { value: JSON.parse(h.text) as ProfileRecord, revision: h.revision };
  }

  async lookup(workspace: string, id: Ident): Promise<Versioned<IndexTarget> | undefined> {
    const h = this.held(this.index, indexKey(workspace, id));
    if (h === undefined) return this.store.lookup(workspace, id);
    return { value: JSON.parse(h.text) as IndexTarget, revision: h.revision };
  }

  putProfile(p: ProfileRecord, revision: number): Promise<number> {
    return this.store.putProfile(p, revision);
  }

  deleteProfile(workspace: string, profileId: string): Promise<void> {
    return this.store.deleteProfile(workspace, profileId);
  }

  link(workspace: string, id: Ident, target: IndexTarget, revision: number): Promise<number> {
    return this.store.link(workspace, id, target, revision);
  }

  unlink(workspace: string, id: Ident): Promise<void> {
    return this.store.unlink(workspace, id);
  }

  ping(): Promise<boolean> {
    return this.store.ping();
  }
}
