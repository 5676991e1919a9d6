import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType } from "@kairos/contracts";
import { compileRules } from "./identity-rules.js";
import {
  applyEvent,
  appliedChange,
  appliedVersion,
  mergeInto,
  mergeOf,
  newProfile,
  splitOff,
  tombstone,
  pickSurvivor,
  profileIdFor,
  APPLIED_MEMORY,
} from "./profile-record.js";

const identify = (over: Record<string, unknown> = {}) =>
  create(EventSchema, {
    messageId: "m1",
    workspace: "ws",
    type: EventType.IDENTIFY,
    userId: "u1",
    anonymousId: "a1",
    traits: { email: "  Ada@Example.ORG ", plan: "gold" },
    ...over,
  });

describe("identifiersOf", () => {
  it("takes userId, the normalised email and anonymousId, in the default priority order", () => {
    expect(compileRules().identifiersOf(identify())).toEqual([
      { type: "user_id", value: "u1" },
      { type: "email", value: "ada@example.org" },
      { type: "anonymous_id", value: "a1" },
    ]);
  });

  it("reads traits only from identify calls, and context.traits from any call", () => {
    const track = create(EventSchema, {
      type: EventType.TRACK,
      anonymousId: "a",
      traits: { email: "x@y.z" },
      context: { extra: { traits: { email: "c@d.e" } } },
    });
    expect(compileRules().identifiersOf(track)).toEqual([
      { type: "email", value: "c@d.e" },
      { type: "anonymous_id", value: "a" },
    ]);
  });
});

describe("last writer wins by event time", () => {
  it("keeps a newer value when an older event arrives late, and takes a newer one", () => {
    const p = newProfile("ws", "p", 1);
    const at = (iso: string, traits: Record<string, string>, id: string) =>
      identify({ messageId: id, traits, timestamp: timestampFromMs(Date.parse(iso)) });
    expect(applyEvent(p, at("2026-11-22T10:00:00Z", { plan: "gold" }, "e1"), [], 5)).toEqual({
      plan: "gold",
    });
    // Sent earlier, arrived later: counted (version), but does not overwrite.
    expect(applyEvent(p, at("2026-11-22T09:00:00Z", { plan: "basic", city: "Paris" }, "e2"), [], 6)).toEqual({
      city: "Paris",
    });
    expect(p.traits).toEqual({ plan: "gold", city: "Paris" });
    expect(applyEvent(p, at("2026-11-22T11:00:00Z", { plan: "platinum" }, "e3"), [], 7)).toEqual({
      plan: "platinum",
    });
    expect(p.version).toBe(3);
  });

  it("merges trait by trait, the later event's value winning", () => {
    const a = newProfile("ws", "a", 1);
    const b = newProfile("ws", "b", 2);
    applyEvent(
      a,
      identify({ messageId: "a1", traits: { plan: "gold" }, timestamp: timestampFromMs(200) }),
      [],
      3,
    );
    applyEvent(
      a,
      identify({ messageId: "a2", traits: { city: "Oslo" }, timestamp: timestampFromMs(50) }),
      [],
      3,
    );
    applyEvent(
      b,
      identify({ messageId: "b1", traits: { plan: "basic", city: "Rome" }, timestamp: timestampFromMs(100) }),
      [],
      4,
    );
    mergeInto(a, b);
    expect(a.traits).toEqual({ plan: "gold", city: "Rome" });
  });
});

describe("applying and merging", () => {
  it("applies an event once per id, bumping the version and reporting changed traits", () => {
    const p = newProfile("ws", profileIdFor("ws", { type: "user_id", value: "u1" }), 1);
    const e = identify();
    expect(applyEvent(p, e, compileRules().identifiersOf(e), 2)).toEqual({
      email: "  Ada@Example.ORG ",
      plan: "gold",
    });
    expect(p.version).toBe(1);
    expect(appliedVersion(p, "m1")).toBe(1);
    expect(applyEvent(p, identify({ messageId: "m2" }), [], 3)).toEqual({});
    expect(p.version).toBe(2);
  });

  it("remembers a bounded number of applied events", () => {
    const p = newProfile("ws", "p", 1);
    for (let i = 0; i < APPLIED_MEMORY + 10; i++) applyEvent(p, identify({ messageId: `m${i}` }), [], 1);
    expect(p.applied).toHaveLength(APPLIED_MEMORY);
    expect(appliedVersion(p, "m0")).toBeUndefined();
  });

  it("keeps the older profile, joins identifiers, lets the later-updated profile win a trait, and is idempotent", () => {
    const older = newProfile("ws", "p-old", 100);
    older.traits = { plan: "basic", city: "Paris" };
    older.identifiers = [{ type: "anonymous_id", value: "a" }];
    older.updatedAtMs = 150;
    const newer = newProfile("ws", "p-new", 200);
    newer.traits = { plan: "gold" };
    newer.identifiers = [{ type: "user_id", value: "u" }];
    newer.updatedAtMs = 250;
    applyEvent(newer, identify({ messageId: "on-newer" }), [], 250);
    const [survivor, loser] = pickSurvivor(newer, older);
    expect(survivor.profileId).toBe("p-old");
    mergeInto(survivor, loser);
    mergeInto(survivor, loser);
    expect(survivor.identifiers).toHaveLength(2);
    expect(survivor.traits).toMatchObject({ plan: "gold", city: "Paris" });
    expect(survivor.mergedFrom).toEqual(["p-new"]);
    expect(appliedChange(survivor, "on-newer")).toEqual({ profileId: "p-new", version: 1 });
  });

  it("derives a profile id from the first identifier", () => {
    expect(profileIdFor("ws", { type: "user_id", value: "u" })).toMatch(/^prof_[0-9a-f]{24}$/);
    expect(profileIdFor("ws", { type: "user_id", value: "u" })).toBe(
      profileIdFor("ws", { type: "user_id", value: "u" }),
    );
  });
});

describe("splitOff (unmerge)", () => {
  it("gives back what the merge brought, keeps what was set since, and restores the merged profile", () => {
    const owner = newProfile("ws", "p-owner", 1000);
    applyEvent(
      owner,
      identify({ messageId: "o1", anonymousId: "", traits: { plan: "gold" } }),
      [{ type: "user_id", value: "u1" }],
      1000,
    );
    const tablet = newProfile("ws", "p-tablet", 2000);
    applyEvent(
      tablet,
      identify({ messageId: "t1", userId: "", traits: { plan: "free", device: "tablet", city: "Leeds" } }),
      [{ type: "anonymous_id", value: "a1" }],
      2000,
    );
    tablet.computed = { orders: { days: { all: { n: 2, sum: 0 } } } };
    owner.computed = { orders: { days: { all: { n: 1, sum: 0 } } } };
    const s = structuredClone(owner);
    mergeInto(s, tablet, { atMs: 3000, eventId: "login" });
    mergeInto(s, tablet, { atMs: 3000, eventId: "login" }); // idempotent
    expect(s.merges).toEqual([
      {
        profileId: "p-tablet",
        atMs: 3000,
        eventId: "login",
        added: [{ type: "anonymous_id", value: "a1" }],
        replaced: { plan: { value: "gold", at: 1000 }, device: {}, city: {} },
      },
    ]);
    expect(s.traits).toMatchObject({ plan: "free", device: "tablet" });
    expect(mergeOf(s, { type: "anonymous_id", value: "a1" })?.profileId).toBe("p-tablet");
    expect(mergeOf(s, { type: "profile_id", value: "p-tablet" })?.profileId).toBe("p-tablet");
    expect(mergeOf(s, { type: "user_id", value: "u1" })).toBeUndefined();
    // Later, the owner moves city: that stays theirs.
    applyEvent(
      s,
      identify({ messageId: "o2", anonymousId: "", traits: { city: "York" } }),
      [{ type: "user_id", value: "u1" }],
      4000,
    );

    const split = splitOff(s, tombstone(tablet, "p-owner", 3000), 5000);
    expect(split.survivor.identifiers).toEqual([{ type: "user_id", value: "u1" }]);
    expect(split.survivor.traits).toEqual({ plan: "gold", city: "York" });
    expect(split.survivor.traitTimes?.plan).toBe(1000);
    expect(split.survivor.mergedFrom).toEqual([]);
    expect(split.survivor.merges).toEqual([]);
    expect(split.survivor.computed?.orders?.days.all?.n).toBe(1);
    expect(split.survivor.version).toBe(s.version + 1);
    expect(split.restored.mergedInto).toBeUndefined();
    expect(split.restored.traits).toEqual({ plan: "free", device: "tablet", city: "Leeds" });
    expect(split.restored.version).toBe(tablet.version + 1);
    expect(() => splitOff(split.survivor, tablet, 6000)).toThrow(/not merged into p-owner/);
    // The split is remembered (a redelivered login does not merge again), also once the owner's
    // profile is itself merged away.
    expect(split.survivor.unmerged).toEqual([{ profileId: "p-tablet", eventId: "login" }]);
    const later = newProfile("ws", "p-later", 500);
    mergeInto(later, split.survivor, { atMs: 7000, eventId: "other" });
    mergeInto(later, split.survivor, { atMs: 7000, eventId: "other" });
    expect(later.unmerged).toEqual([{ profileId: "p-tablet", eventId: "login" }]);
  });
});
