/**
 * For tests: a real profile store with a hook ahead of every write, where a test pauses a writer
 * (a slow replica), holds it at a chosen step, or throws (a crash at that point).
 */
import type { Ident, ProfileRecord } from "./profile-record.js";
import type { IndexTarget, ProfileStore } from "./store.js";

/** A write about to be made: a profile (`put`, `delete`) or an index entry (`link`, `unlink`). */
export type StoreWriteStep =
  | { op: "put"; profile: ProfileRecord; revision: number }
  | { op: "link"; id: Ident; target: IndexTarget; revision: number }
  | { op: "delete"; profileId: string }
  | { op: "unlink"; id: Ident };

/** The store, with `before` awaited ahead of each write. */
export function beforeWrites(
  store: ProfileStore,
  before: (step: StoreWriteStep) => void | Promise<void>,
): ProfileStore {
  const wrapped = Object.create(store) as ProfileStore;
  wrapped.putProfile = async (profile, revision) => {
    await before({ op: "put", profile, revision });
    return store.putProfile(profile, revision);
  };
  wrapped.link = async (workspace, id, target, revision) => {
    await before({ op: "link", id, target, revision });
    return store.link(workspace, id, target, revision);
  };
  wrapped.deleteProfile = async (workspace, profileId) => {
    await before({ op: "delete", profileId });
    return store.deleteProfile(workspace, profileId);
  };
  wrapped.unlink = async (workspace, id) => {
    await before({ op: "unlink", id });
    return store.unlink(workspace, id);
  };
  return wrapped;
}

/** The store, with `before` awaited ahead of each read (a profile or an index entry). */
export function beforeReads(store: ProfileStore, before: () => void | Promise<void>): ProfileStore {
  const wrapped = Object.create(store) as ProfileStore;
  wrapped.getProfile = async (workspace, profileId) => {
    await before();
    return store.getProfile(workspace, profileId);
  };
  wrapped.lookup = async (workspace, id) => {
    await before();
    return store.lookup(workspace, id);
  };
  return wrapped;
}

/** A gate a writer waits at: `held` once it is there (`wait()`), `release()` lets it on. */
export function gate(): { held: Promise<void>; release: () => void; wait: () => Promise<void> } {
  let release!: () => void;
  const open = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const held = new Promise<void>((r) => (reached = r));
  return {
    held,
    release,
    wait: async () => {
      reached();
      await open;
    },
  };
}
