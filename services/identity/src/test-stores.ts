/**
 * For tests: a real profile store with a hook ahead of every write, where a test pauses a writer
 * (a slow replica), holds it at a chosen step, or throws (a crash at that point).
 */
import type { Ident, ProfileRecord } from "./profile-record.js";
import type { IndexTarget, ProfileStore } from "./store.js";

/** A write about to be made: a profile (`put`) or an index entry (`link`). */
export type StoreWriteStep =
  | { op: "put"; profile: ProfileRecord; revision: number }
  | { op: "link"; id: Ident; target: IndexTarget; revision: number };

/** The store, with `before` awaited ahead of each profile write and index link. */
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
  return wrapped;
}
