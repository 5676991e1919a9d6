/**
 * Membership state in JetStream KV: one record per profile (compare-and-set,
 * so segments and journeys of a profile change atomically) and one key per
 * (segment, member) for listing a segment's members.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { emptyState, type MembershipState } from "./plan.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

export class WriteConflict extends Error {}

export class MembershipStore {
  /**
   * Write-through cache of what this process wrote or read last. Writes are
   * compare-and-set on the cached revision, so a stale entry (another replica
   * wrote) fails the write, is dropped, and the caller retries from the bucket.
   */
  private readonly cache = new Map<string, { state: MembershipState; revision: number }>();
  private readonly maxCached = 200_000;

  private remember(key: string, v: { state: MembershipState; revision: number }): void {
    this.cache.delete(key);
    this.cache.set(key, v);
    if (this.cache.size > this.maxCached) this.cache.delete(this.cache.keys().next().value!);
  }

  private constructor(
    private readonly state: KV,
    private readonly members: KV,
  ) {}

  static async open(nc: NatsConnection, replicas = 1): Promise<MembershipStore> {
    const kvm = new Kvm(nc);
    return new MembershipStore(
      await kvm.create("segment-membership", { history: 1, replicas }),
      await kvm.create("segment-members", { history: 1, replicas }),
    );
  }

  /**
   * The profile's record and its revision, from the cache when this process holds it (the
   * resolve path: a stale entry only makes the next write conflict), or with `fresh` from the
   * bucket (what is served to readers). The record is shared: treat it as read-only.
   */
  async get(
    ws: string,
    profileId: string,
    { fresh = false } = {},
  ): Promise<{ state: MembershipState; revision: number }> {
    const key = `${ws}.${profileId}`;
    if (!fresh) {
      const hit = this.cache.get(key);
      if (hit !== undefined) return hit;
    }
    const e = await this.state.get(key);
    if (e === null || e.operation !== "PUT" || e.value.length === 0)
      return { state: emptyState(), revision: 0 };
    const v = { state: JSON.parse(dec.decode(e.value)) as MembershipState, revision: e.revision };
    this.remember(key, v);
    return v;
  }

  /** Compare-and-set write; `revision` 0 creates. A conflict drops the cached record. */
  async put(ws: string, profileId: string, s: MembershipState, revision: number): Promise<void> {
    const key = `${ws}.${profileId}`;
    const data = enc.encode(JSON.stringify(s));
    try {
      const written =
        revision === 0 ? await this.state.create(key, data) : await this.state.update(key, data, revision);
      this.remember(key, { state: s, revision: written });
    } catch (e) {
      this.cache.delete(key);
      if (e instanceof Error && /wrong last sequence|key exists/i.test(e.message))
        throw new WriteConflict(key);
      throw e;
    }
  }

  async setMember(
    ws: string,
    segment: string,
    profileId: string,
    sinceMs: number | undefined,
  ): Promise<void> {
    const key = `${ws}.${segment}.${profileId}`;
    if (sinceMs === undefined) await this.members.delete(key);
    else await this.members.put(key, enc.encode(String(sinceMs)));
  }

  /** Members of a segment in key order, from `after` (exclusive), at most `limit`. */
  async listMembers(
    ws: string,
    segment: string,
    after: string,
    limit: number,
  ): Promise<{ profileId: string; since: number }[]> {
    const prefix = `${ws}.${segment}.`;
    const ids: string[] = [];
    for await (const k of await this.members.keys(`${prefix}*`)) ids.push(k.slice(prefix.length));
    ids.sort();
    const page = ids.filter((id) => id > after).slice(0, limit);
    const out = [];
    for (const id of page) {
      const e = await this.members.get(`${prefix}${id}`);
      if (e !== null && e.operation === "PUT")
        out.push({ profileId: id, since: Number(dec.decode(e.value)) });
    }
    return out;
  }

  async ping(): Promise<boolean> {
    await this.state.status();
    return true;
  }
}
