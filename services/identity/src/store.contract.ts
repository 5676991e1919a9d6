/**
 * The contract every profile store adapter keeps, as a test suite: run it
 * against an adapter with `profileStoreContract(name, open)`.
 */
import { describe, expect, it } from "vitest";
import { newProfile, type Ident } from "./profile-record.js";
import { WriteConflict, type ProfileStore } from "./store.js";

let n = 0;
const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${++n}`;

export function profileStoreContract(name: string, open: () => ProfileStore): void {
  describe(`profile store contract: ${name}`, () => {
    it("creates a profile once: a second create is a conflict", async () => {
      const store = open();
      const p = newProfile("ws", unique("p"), 1);
      expect(await store.getProfile("ws", p.profileId)).toBeUndefined();
      const rev = await store.putProfile(p, 0);
      expect(rev).toBeGreaterThan(0);
      await expect(store.putProfile(p, 0)).rejects.toBeInstanceOf(WriteConflict);
      expect(await store.getProfile("ws", p.profileId)).toEqual({ value: p, revision: rev });
    });

    it("updates only at the revision it read (compare-and-set)", async () => {
      const store = open();
      const p = newProfile("ws", unique("p"), 1);
      const r1 = await store.putProfile(p, 0);
      p.traits = { plan: "gold" };
      const r2 = await store.putProfile(p, r1);
      expect(r2).not.toBe(r1);
      p.traits = { plan: "stale" };
      await expect(store.putProfile(p, r1)).rejects.toBeInstanceOf(WriteConflict);
      expect((await store.getProfile("ws", p.profileId))?.value.traits).toEqual({ plan: "gold" });
    });

    it("keeps traits whatever their names ($-prefixed, dotted, empty), on create and update", async () => {
      const store = open();
      const p = newProfile("ws", unique("p"), 1);
      p.traits = { $where: "x", "a.b": 1, "": "empty", nested: { $gt: 2, "c.d": [{ $x: true }] } };
      const r1 = await store.putProfile(p, 0);
      expect((await store.getProfile("ws", p.profileId))?.value.traits).toEqual(p.traits);
      p.traits = { ...p.traits, $set: { plan: "gold" } };
      await store.putProfile(p, r1);
      expect((await store.getProfile("ws", p.profileId))?.value).toEqual(p);
    });

    it("deletes, then creates again with a revision the old one never matches", async () => {
      const store = open();
      const p = newProfile("ws", unique("p"), 1);
      const old = await store.putProfile(p, 0);
      await store.deleteProfile("ws", p.profileId);
      expect(await store.getProfile("ws", p.profileId)).toBeUndefined();
      const fresh = await store.putProfile(p, 0);
      expect(fresh).not.toBe(old);
      await expect(store.putProfile(p, old)).rejects.toBeInstanceOf(WriteConflict);
    });

    it("keeps workspaces apart", async () => {
      const store = open();
      const p = newProfile("ws-a", unique("p"), 1);
      await store.putProfile(p, 0);
      expect(await store.getProfile("ws-b", p.profileId)).toBeUndefined();
    });

    it("links identifiers with the same compare-and-set rules, and unlinks them", async () => {
      const store = open();
      const id: Ident = { type: "email", value: `${unique("ada")}@example.org` };
      expect(await store.lookup("ws", id)).toBeUndefined();
      const r1 = await store.link("ws", id, { profileId: "p1" }, 0);
      await expect(store.link("ws", id, { profileId: "p2" }, 0)).rejects.toBeInstanceOf(WriteConflict);
      const r2 = await store.link("ws", id, { profileId: "p2" }, r1);
      await expect(store.link("ws", id, { profileId: "p3" }, r1)).rejects.toBeInstanceOf(WriteConflict);
      expect(await store.lookup("ws", id)).toEqual({ value: { profileId: "p2" }, revision: r2 });
      await store.link("ws", id, { suppressed: true }, r2);
      expect((await store.lookup("ws", id))?.value).toEqual({ suppressed: true });
      await store.unlink("ws", id);
      expect(await store.lookup("ws", id)).toBeUndefined();
      expect(await store.lookup("other", id)).toBeUndefined();
    });

    it("answers a ping", async () => {
      expect(await open().ping()).toBe(true);
    });
  });
}
