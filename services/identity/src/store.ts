/**
 * The profile store: profiles by id and an index from identifier to profile id,
 * with compare-and-set writes. `KvProfileStore` keeps both in JetStream KV
 * (design §5); a MongoDB adapter implements the same interface later.
 */
import { createHash } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import type { Ident, ProfileRecord } from "./profile-record.js";

/** A stored value and the revision a compare-and-set must name. */
export interface Versioned<T> {
  value: T;
  revision: number;
}

/** Raised when a compare-and-set lost against a concurrent writer: re-read and retry. */
export class WriteConflict extends Error {
  constructor(what: string) {
    super(`concurrent update of ${what}`);
    this.name = "WriteConflict";
  }
}

/** What an index entry points at. */
export type IndexTarget =
  /** `claimedAt`: when the identifier was pointed here, in ms (a claim whose profile is not written yet ages). */
  | { profileId: string; claimedAt?: number }
  /** `erasing`: the profile a deletion with suppression is erasing (a retry after a crash resumes it). */
  | { suppressed: true; erasing?: string };

export interface ProfileStore {
  getProfile(workspace: string, profileId: string): Promise<Versioned<ProfileRecord> | undefined>;
  /** Writes a profile; `revision` 0 creates it. Throws `WriteConflict` when it changed meanwhile. */
  putProfile(p: ProfileRecord, revision: number): Promise<number>;
  deleteProfile(workspace: string, profileId: string): Promise<void>;
  lookup(workspace: string, id: Ident): Promise<Versioned<IndexTarget> | undefined>;
  /** Points an identifier at a target; `revision` 0 creates the entry. Throws `WriteConflict`. */
  link(workspace: string, id: Ident, target: IndexTarget, revision: number): Promise<number>;
  unlink(workspace: string, id: Ident): Promise<void>;
  /** Answers once the store is reachable. */
  ping(): Promise<boolean>;
  /** Forgets what a cache in front of the store holds for the identifier (no-op without one). */
  forget?(workspace: string, id: Ident): void;
  /** Forgets what a cache in front of the store holds for the profile (no-op without one). */
  forgetProfile?(workspace: string, profileId: string): void;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** KV keys allow `[-/_=.a-zA-Z0-9]`; identifier values (emails, anything) are hashed. */
export function indexKey(workspace: string, id: Ident): string {
  return `${workspace}.${id.type}.${createHash("sha256").update(id.value).digest("base64url")}`;
}

function isConflict(e: unknown): boolean {
  return e instanceof Error && /wrong last sequence|key exists|10071|10164/i.test(e.message);
}

/** A write this process made to the KV store: the key's new JSON text (undefined once deleted). */
export interface StoreWrite {
  bucket: (typeof profileBuckets)[keyof typeof profileBuckets];
  key: string;
  text: string | undefined;
  revision: number;
}

/** The KV buckets of `KvProfileStore`: profiles by id, and the identifier index. */
export const profileBuckets = { profiles: "profiles", index: "identity-index" } as const;

export class KvProfileStore implements ProfileStore {
  /** Told of every successful write (identity's lookup view learns its own writes at once). */
  onWrite: ((w: StoreWrite) => void) | undefined;

  private constructor(
    private readonly profiles: KV,
    private readonly index: KV,
  ) {}

  static async open(nc: NatsConnection, replicas = 1): Promise<KvProfileStore> {
    const kvm = new Kvm(nc);
    const opts = { history: 1, replicas };
    return new KvProfileStore(
      await kvm.create(profileBuckets.profiles, opts),
      await kvm.create(profileBuckets.index, opts),
    );
  }

  async getProfile(workspace: string, profileId: string): Promise<Versioned<ProfileRecord> | undefined> {
    const e = await this.profiles.get(`${workspace}.${profileId}`);
    if (e === null || e.operation !== "PUT" || e.value.length === 0) return undefined;
    return { value: JSON.parse(dec.decode(e.value)) as ProfileRecord, revision: e.revision };
  }

  async putProfile(p: ProfileRecord, revision: number): Promise<number> {
    const key = `${p.workspace}.${p.profileId}`;
    const text = JSON.stringify(p);
    const data = enc.encode(text);
    let rev: number;
    try {
      rev =
        revision === 0
          ? await this.profiles.create(key, data)
          : await this.profiles.update(key, data, revision);
    } catch (e) {
      if (isConflict(e)) throw new WriteConflict(`profile ${p.profileId}`);
      throw e;
    }
    this.onWrite?.({ bucket: profileBuckets.profiles, key, text, revision: rev });
    return rev;
  }

  async deleteProfile(workspace: string, profileId: string): Promise<void> {
    const key = `${workspace}.${profileId}`;
    await this.profiles.delete(key);
    this.onWrite?.({ bucket: profileBuckets.profiles, key, text: undefined, revision: 0 });
  }

  async lookup(workspace: string, id: Ident): Promise<Versioned<IndexTarget> | undefined> {
    const e = await this.index.get(indexKey(workspace, id));
    if (e === null || e.operation !== "PUT" || e.value.length === 0) return undefined;
    return { value: JSON.parse(dec.decode(e.value)) as IndexTarget, revision: e.revision };
  }

  async link(workspace: string, id: Ident, target: IndexTarget, revision: number): Promise<number> {
    const key = indexKey(workspace, id);
    const text = JSON.stringify(target);
    const data = enc.encode(text);
    let rev: number;
    try {
      rev =
        revision === 0 ? await this.index.create(key, data) : await this.index.update(key, data, revision);
    } catch (e) {
      if (isConflict(e)) throw new WriteConflict(`identifier ${id.type}`);
      throw e;
    }
    this.onWrite?.({ bucket: profileBuckets.index, key, text, revision: rev });
    return rev;
  }

  async unlink(workspace: string, id: Ident): Promise<void> {
    const key = indexKey(workspace, id);
    await this.index.delete(key);
    this.onWrite?.({ bucket: profileBuckets.index, key, text: undefined, revision: 0 });
  }

  async ping(): Promise<boolean> {
    await this.profiles.status();
    return true;
  }
}

/** A bounded map that forgets the least recently written entries first. */
class Bounded<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(k: string): V | undefined {
    return this.map.get(k);
  }
  set(k: string, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }
  delete(k: string): void {
    this.map.delete(k);
  }
}

/**
 * A write-through cache in front of a store, for the resolve path: what this
 * process wrote last is read back without a round trip. Safe beside other
 * replicas because every write is compare-and-set on the cached revision: a
 * stale entry makes the write fail, the entry is dropped, and the resolver
 * retries from the store. A decision taken from a cached profile that is not
 * then written (an identifier it does not hold is a claim to take over) is
 * checked against the store first. Absent keys are never cached.
 */
export class CachingProfileStore implements ProfileStore {
  /** Profiles as their JSON text: each read is a fresh copy for the caller to change (the store's own form). */
  private readonly profiles: Bounded<{ text: string; revision: number }>;
  private readonly index: Bounded<Versioned<IndexTarget>>;

  constructor(
    private readonly inner: ProfileStore,
    maxEntries = 200_000,
  ) {
    this.profiles = new Bounded(maxEntries);
    this.index = new Bounded(maxEntries);
  }

  async getProfile(workspace: string, profileId: string): Promise<Versioned<ProfileRecord> | undefined> {
    const key = `${workspace}.${profileId}`;
    const hit = this.profiles.get(key);
    if (hit !== undefined) return { value: JSON.parse(hit.text) as ProfileRecord, revision: hit.revision };
    const v = await this.inner.getProfile(workspace, profileId);
    if (v !== undefined) this.profiles.set(key, { text: JSON.stringify(v.value), revision: v.revision });
    return v;
  }

  async putProfile(p: ProfileRecord, revision: number): Promise<number> {
    const key = `${p.workspace}.${p.profileId}`;
    try {
      const text = JSON.stringify(p);
      const rev = await this.inner.putProfile(p, revision);
      this.profiles.set(key, { text, revision: rev });
      return rev;
    } catch (e) {
      this.profiles.delete(key);
      throw e;
    }
  }

  async deleteProfile(workspace: string, profileId: string): Promise<void> {
    this.profiles.delete(`${workspace}.${profileId}`);
    await this.inner.deleteProfile(workspace, profileId);
  }

  async lookup(workspace: string, id: Ident): Promise<Versioned<IndexTarget> | undefined> {
    const key = indexKey(workspace, id);
    const hit = this.index.get(key);
    if (hit !== undefined) return hit;
    const v = await this.inner.lookup(workspace, id);
    if (v !== undefined) this.index.set(key, v);
    return v;
  }

  async link(workspace: string, id: Ident, target: IndexTarget, revision: number): Promise<number> {
    const key = indexKey(workspace, id);
    try {
      const rev = await this.inner.link(workspace, id, target, revision);
      this.index.set(key, { value: target, revision: rev });
      return rev;
    } catch (e) {
      this.index.delete(key);
      throw e;
    }
  }

  async unlink(workspace: string, id: Ident): Promise<void> {
    this.index.delete(indexKey(workspace, id));
    await this.inner.unlink(workspace, id);
  }

  forget(workspace: string, id: Ident): void {
    this.index.delete(indexKey(workspace, id));
  }

  forgetProfile(workspace: string, profileId: string): void {
    this.profiles.delete(`${workspace}.${profileId}`);
  }

  ping(): Promise<boolean> {
    return this.inner.ping();
  }
}
