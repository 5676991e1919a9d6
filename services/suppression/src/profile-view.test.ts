import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ProfileChangedSchema, type Profile } from "@kairos/contracts";
import { ProfileView, viewedProfileLookup } from "./profile-view.js";
import type { ProfileLookup } from "@kairos/kit";

const change = (id: string, version: bigint, extra: Record<string, unknown> = {}) =>
  create(ProfileChangedSchema, {
    workspace: "ws",
    profileId: id,
    version,
    profile: { workspace: "ws", profileId: id, version, traits: { v: Number(version) } },
    ...extra,
  });

describe("ProfileView", () => {
  it("answers at or after the asked version, and misses when it has only an older one", () => {
    const view = new ProfileView(10);
    view.apply(change("a", 3n));
    expect(view.get("ws", "a", 3n)).toMatchObject({ hit: true, profile: { traits: { v: 3 } } });
    expect(view.get("ws", "a", 0n).hit).toBe(true);
    expect(view.get("ws", "a", 4n)).toEqual({ hit: false });
    expect(view.get("ws", "b", 0n)).toEqual({ hit: false });
  });

  it("keeps the newest version when changes arrive out of order", () => {
    const view = new ProfileView(10);
    view.apply(change("a", 5n));
    view.apply(change("a", 4n));
    expect(view.get("ws", "a", 0n)).toMatchObject({ hit: true, profile: { version: 5n } });
  });

  it("answers a deleted profile as absent, and sends merged-away ids to identity", () => {
    const view = new ProfileView(10);
    view.apply(change("a", 2n));
    view.apply(change("a", 3n, { deleted: true, profile: undefined }));
    expect(view.get("ws", "a", 3n)).toEqual({ hit: true, profile: undefined });
    view.apply(change("loser", 1n));
    view.apply(change("survivor", 7n, { mergedFrom: ["loser"] }));
    expect(view.get("ws", "loser", 0n)).toEqual({ hit: false });
    expect(view.get("ws", "survivor", 7n).hit).toBe(true);
  });

  it("holds at most its capacity, dropping the least recently changed", () => {
    const view = new ProfileView(2);
    view.apply(change("a", 1n));
    view.apply(change("b", 1n));
    view.apply(change("c", 1n));
    expect(view.size).toBe(2);
    expect(view.get("ws", "a", 0n).hit).toBe(false);
    expect(view.get("ws", "c", 0n).hit).toBe(true);
  });

  it("falls back to identity on a miss", async () => {
    const view = new ProfileView(10);
    const asked: string[] = [];
    const identity: ProfileLookup = {
      get: (_ws, id) => {
        asked.push(id);
        return Promise.resolve({ profileId: id } as Profile);
      },
      close: () => undefined,
    };
    const lookup = viewedProfileLookup(view, identity);
    view.apply(change("a", 2n));
    await lookup.get("ws", "a", 2n);
    await lookup.get("ws", "a", 3n);
    await lookup.get("ws", "z");
    expect(asked).toEqual(["a", "z"]);
  });
});
