/**
 * In-memory views of two KV buckets, kept current by watching them, so that a
 * decision never waits on them: the deferred actions ordered by due time
 * (a min-heap with lazy deletion, so millions pending cost O(log n) each), and
 * the suppression lists by identifier.
 */
import { MinHeap } from "@kairos/kit";
import type { DeferredEntry, ListEntry } from "./stores.js";

/** What the index keeps of a deferred action (the intent itself stays in KV). */
export interface DeferredRef {
  key: string;
  workspace: string;
  profileId: string;
  untilMs: number;
  priority: number;
  intendedAtMs: number;
  cancelKeys: string[];
}

interface HeapNode {
  untilMs: number;
  key: string;
  ref: DeferredRef;
}

export class DeferredIndex {
  private readonly byKey = new Map<string, DeferredRef>();
  private readonly byProfile = new Map<string, Set<string>>();
  private readonly heap = new MinHeap<HeapNode>((n) => n.untilMs);

  get size(): number {
    return this.byKey.size;
  }

  /** Adds or replaces the entry under `key`; `undefined` removes it. */
  apply(key: string, entry: DeferredEntry | undefined): void {
    this.remove(key);
    if (entry === undefined) return;
    const ref: DeferredRef = {
      key,
      workspace: entry.workspace,
      profileId: entry.profileId,
      untilMs: entry.untilMs,
      priority: entry.priority,
      intendedAtMs: entry.intendedAtMs,
      cancelKeys: entry.cancelKeys,
    };
    this.byKey.set(key, ref);
    const pk = profileKey(ref.workspace, ref.profileId);
    let set = this.byProfile.get(pk);
    if (set === undefined) this.byProfile.set(pk, (set = new Set()));
    set.add(key);
    this.heap.push({ untilMs: ref.untilMs, key, ref });
  }

  private remove(key: string): void {
    const old = this.byKey.get(key);
    if (old === undefined) return;
    this.byKey.delete(key);
    const pk = profileKey(old.workspace, old.profileId);
    const set = this.byProfile.get(pk);
    set?.delete(key);
    if (set?.size === 0) this.byProfile.delete(pk);
  }

  /** The entries due at `nowMs` (at most `max`), earliest first; they stay until removed. */
  due(nowMs: number, max = 1000): DeferredRef[] {
    const out: DeferredRef[] = [];
    const keep: HeapNode[] = [];
    for (let top = this.heap.peek(); top !== undefined && top.untilMs <= nowMs && out.length < max;) {
      this.heap.pop();
      // A stale heap node: the entry was removed or replaced since.
      if (this.byKey.get(top.key) === top.ref) {
        out.push(top.ref);
        keep.push(top);
      }
      top = this.heap.peek();
    }
    // Due entries stay in the heap until their key is deleted, so a failed release is retried.
    for (const n of keep) this.heap.push(n);
    return out;
  }

  /** The profile's deferred actions that carry any of `keys`. */
  /** Every deferred action of the profile. */
  ofProfile(workspace: string, profileId: string): DeferredRef[] {
    const set = this.byProfile.get(profileKey(workspace, profileId));
    return [...(set ?? [])].map((k) => this.byKey.get(k)).filter((r): r is DeferredRef => r !== undefined);
  }

  withCancelKeys(workspace: string, profileId: string, keys: readonly string[]): DeferredRef[] {
    const set = this.byProfile.get(profileKey(workspace, profileId));
    if (set === undefined) return [];
    const wanted = new Set(keys);
    return [...set]
      .map((k) => this.byKey.get(k))
      .filter((r): r is DeferredRef => r !== undefined && r.cancelKeys.some((k) => wanted.has(k)));
  }

  /** Drops heap nodes of removed entries when they outnumber the live ones. */
  compact(): void {
    if (this.heap.size > 2 * this.byKey.size + 1024) {
      this.heap.clear();
      for (const ref of this.byKey.values()) this.heap.push({ untilMs: ref.untilMs, key: ref.key, ref });
    }
  }
}

const profileKey = (ws: string, profileId: string) => `${ws}\u0000${profileId}`;

/** Suppression lists by workspace, channel and identifier. */
export class ListIndex {
  private readonly entries = new Map<string, ListEntry>();

  get size(): number {
    return this.entries.size;
  }

  apply(key: string, entry: ListEntry | undefined): void {
    if (entry === undefined) this.entries.delete(key);
    else this.entries.set(key, entry);
  }

  /** The entries that match any of the identifiers on `channel` or on every channel (`*`). */
  matching(
    workspace: string,
    channel: string,
    identifiers: readonly { type: string; value: string }[],
    keyOf: (ws: string, channel: string, type: string, value: string) => string,
  ): ListEntry[] {
    const out: ListEntry[] = [];
    for (const id of identifiers) {
      for (const ch of [channel, "*"]) {
        const e = this.entries.get(keyOf(workspace, ch, id.type, id.value));
        if (e !== undefined) out.push(e);
      }
    }
    return out;
  }
}
