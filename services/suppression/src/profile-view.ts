/**
 * Suppression's local view of recent profiles, fed by the PROFILES stream, so
 * that most decisions need no call to identity. Bounded (least recently
 * changed or read first out). A lookup that asks for a version the view has
 * not seen yet, or for a profile it does not hold, goes to identity.
 *
 * Deletions and merges are remembered as tombstones: a deleted profile is
 * answered as absent from its deletion's version on; a merged-away id always
 * goes to identity, which answers with the survivor.
 */
import type { Profile, ProfileChanged } from "@kairos/contracts";
import type { ProfileLookup } from "@kairos/kit";

type Entry =
  | { kind: "profile"; version: bigint; profile: Profile }
  | { kind: "deleted"; version: bigint }
  | { kind: "merged" };

export type ViewAnswer = { hit: true; profile: Profile | undefined } | { hit: false };

const key = (workspace: string, profileId: string) => `${workspace}\u0000${profileId}`;

export class ProfileView {
  private readonly entries = new Map<string, Entry>();
  hits = 0;
  misses = 0;

  constructor(private readonly capacity: number) {}

  private set(k: string, e: Entry): void {
    this.entries.delete(k);
    this.entries.set(k, e);
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  /** Applies one change from PROFILES; older versions than the one held are ignored. */
  apply(change: ProfileChanged): void {
    const k = key(change.workspace, change.profileId);
    const held = this.entries.get(k);
    for (const loser of change.mergedFrom) this.set(key(change.workspace, loser), { kind: "merged" });
    if (held !== undefined && held.kind !== "merged" && held.version >= change.version) return;
    if (change.deleted) this.set(k, { kind: "deleted", version: change.version });
    else if (change.profile !== undefined)
      this.set(k, { kind: "profile", version: change.version, profile: change.profile });
  }

  /** The profile at `minVersion` or later, when the view holds it. */
  get(workspace: string, profileId: string, minVersion: bigint): ViewAnswer {
    const e = this.entries.get(key(workspace, profileId));
    if (e === undefined || e.kind === "merged" || e.version < minVersion) {
      this.misses++;
      return { hit: false };
    }
    this.hits++;
    return { hit: true, profile: e.kind === "profile" ? e.profile : undefined };
  }

  get size(): number {
    return this.entries.size;
  }
}

/** A lookup that answers from the view when it can and from `fallback` (identity) otherwise. */
export function viewedProfileLookup(view: ProfileView, fallback: ProfileLookup): ProfileLookup {
  return {
    get: async (workspace, profileId, minVersion = 0n) => {
      const answer = view.get(workspace, profileId, minVersion);
      return answer.hit ? answer.profile : fallback.get(workspace, profileId, minVersion);
    },
    close: () => fallback.close(),
  };
}
