/**
 * Deletion (GDPR) of the profile an identifier leads to: the profile, the profiles merged into it
 * and their tombstones, its identifiers (removed, or with `suppress` marked so later events are
 * dropped) and its computed state; a deletion is published that downstream honours. Safe beside
 * other replicas' writes, and resumable: asking again after a crash finishes it.
 */
import { sameIdent, type Ident, type ProfileRecord } from "./profile-record.js";
import type { Resolver } from "./resolver.js";
import { WriteConflict, type ProfileStore } from "./store.js";

/** No profile for the identifier (or it is already erased). */
export class NoProfile extends Error {
  constructor(id: Ident | { type: "profile_id"; value: string }) {
    super(`no profile for ${id.type} ${JSON.stringify(id.value)}`);
    this.name = "NoProfile";
  }
}

export interface ErasureDeps {
  /** The store itself, past any cache (revisions to compare-and-set on). */
  store: ProfileStore;
  /** Where the writes go: the resolve path's cache, so that this replica forgets at once. */
  writes: ProfileStore;
  /** Finds the profile and what a stopped merge retired into it (reads `store`). */
  reader: Resolver;
  clock: () => number;
  /** Publishes the profile's deletion under `version` (a retry publishes it again, same id). */
  publishDeletion: (p: ProfileRecord, version: number) => Promise<void>;
  /** Drops what else is kept for the profile (its window timer). */
  dropState: (workspace: string, profileId: string) => Promise<void>;
  /** Runs `fn` alone for the customer (this process's events for them wait). */
  exclusive: <T>(key: string, fn: () => Promise<T>) => Promise<T>;
}

const MAX_ATTEMPTS = 10;

export class Erasure {
  constructor(private readonly d: ErasureDeps) {}

  /**
   * Erases the profile `id` leads to. Each profile is first marked as being erased, a new version
   * compare-and-set on what was read: a write that read it before (an event, or a merge on another
   * replica) fails, and the resolver waits until the profile is gone; one that got there first
   * makes this read again, so what it merged in is erased too. The deletion is published under
   * the mark's version, which no other change can have.
   */
  async erase(
    ws: string,
    id: Ident | { type: "profile_id"; value: string },
    suppress: boolean,
  ): Promise<{ profileId: string; identifiersRemoved: number }> {
    const named = id.type === "profile_id" ? undefined : id;
    for (let attempt = 1; ; attempt++) {
      const { profile: found, retired } = await this.d.reader.findForErasure(ws, id);
      const first = (found ?? retired[0])?.value;
      if (first === undefined) throw new NoProfile(id);
      const key = `${ws}|${first.identifiers.find((i) => i.type === "user_id")?.value ?? first.identifiers[0]?.value ?? first.profileId}`;
      try {
        return await this.d.exclusive(key, async () => {
          // The profile, then what a stopped merge retired into it (so nothing brings those back).
          const erasing: ProfileRecord[] = [];
          for (const p of found === undefined ? retired : [found, ...retired]) {
            if (p.value.erasing !== undefined) {
              erasing.push(p.value);
              continue;
            }
            const marked = { ...p.value, version: p.value.version + 1, erasing: this.d.clock() };
            await this.d.writes.putProfile(marked, p.revision);
            erasing.push(marked);
          }
          // With suppression, the identifier asked by is suppressed at once (later events are
          // dropped from now on), naming the profile so that a retry after a crash resumes.
          if (suppress && named !== undefined) {
            const target = { suppressed: true as const, erasing: first.profileId };
            await this.d.writes.link(
              ws,
              named,
              target,
              (await this.d.store.lookup(ws, named))?.revision ?? 0,
            );
          }
          for (const p of erasing) await this.eraseOne(ws, p, suppress, named);
          // The identifier asked by goes last (see `eraseOne`).
          if (named !== undefined) await this.forget(ws, named, suppress);
          return { profileId: first.profileId, identifiersRemoved: first.identifiers.length };
        });
      } catch (e) {
        // Another writer got there between the read and the mark (or changed an identifier under
        // the erasure): read again and go on from what is there.
        if (e instanceof WriteConflict && attempt < MAX_ATTEMPTS) continue;
        throw e;
      }
    }
  }

  /**
   * Erases one profile (marked): the tombstones of the profiles merged into it, its identifiers
   * (or marks them suppressed), its state and itself, and publishes the deletion.
   */
  private async eraseOne(ws: string, p: ProfileRecord, suppress: boolean, last?: Ident): Promise<void> {
    // The profiles merged into it are kept as tombstones holding what they had (for unmerge):
    // erased first. Then its identifiers, but the one the deletion was asked by (`last`): until
    // that one goes, a retry after a crash still finds the profile and finishes. The deletion is
    // published before the profile goes, and a retry publishes it again under the same id.
    const chain = new Set([p.profileId, ...p.mergedFrom]);
    for (const id of p.mergedFrom) {
      const t = await this.d.store.getProfile(ws, id);
      if (t?.value.mergedInto !== undefined && chain.has(t.value.mergedInto))
        await this.d.writes.deleteProfile(ws, id);
    }
    for (const i of p.identifiers) {
      if (last !== undefined && sameIdent(i, last)) continue;
      await this.forget(ws, i, suppress);
    }
    await this.d.publishDeletion(p, p.version); // the mark's version
    await this.d.dropState(ws, p.profileId);
    await this.d.writes.deleteProfile(ws, p.profileId);
  }

  /** Removes an identifier's index entry, or with `suppress` marks it so later events are dropped. */
  private async forget(ws: string, i: Ident, suppress: boolean): Promise<void> {
    if (suppress)
      await this.d.writes.link(
        ws,
        i,
        { suppressed: true },
        (await this.d.store.lookup(ws, i))?.revision ?? 0,
      );
    else await this.d.writes.unlink(ws, i);
  }
}
