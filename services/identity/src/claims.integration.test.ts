/**
 * A claim taken over from a writer that was slow, not dead: the split that two
 * replicas made under heavy load. Two resolvers on one real KV store; the first
 * is held between claiming its identifiers and writing its new profile while the
 * second takes the claim over. The customer must end as one profile. And a merge
 * whose writer stops after any of its writes loses nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, type Event } from "@kairos/contracts";
import { NatsServer } from "@kairos/testkit";
import { Resolver } from "./resolver.js";
import { beforeWrites, gate } from "./test-stores.js";
import { KvProfileStore, type ProfileStore } from "./store.js";
import { profileIdFor, tombstone, type ProfileRecord } from "./profile-record.js";
import { compileRules } from "./identity-rules.js";
import { computedValues } from "./computed.js";
import { computedTraitSchema } from "@kairos/mesh-config";

let server: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connect({ servers: server.url });
});

afterAll(async () => {
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

let n = 0;
const event = (over: MessageInitShape<typeof EventSchema>): Event =>
  create(EventSchema, {
    messageId: `claim-${++n}`,
    workspace: "ws",
    type: EventType.IDENTIFY,
    receivedAt: timestampFromMs(Date.now()),
    ...over,
  });

/** The real store, with the creation of one profile held until `release()`. */
function holding(store: ProfileStore): { store: ProfileStore; held: Promise<void>; release: () => void } {
  const g = gate();
  const wrapped = beforeWrites(store, async (w) => {
    if (w.op === "put" && w.revision === 0) await g.wait();
  });
  return { store: wrapped, held: g.held, release: g.release };
}

describe("a claim taken over from a slow writer", () => {
  it("ends as one profile: the slow writer finds its claim gone and merges", async () => {
    const store = await KvProfileStore.open(nc);
    const slow = holding(store);
    const first = new Resolver(slow.store, Date.now, undefined, undefined, { fresh: store, staleClaimMs: 0 });
    const second = new Resolver(store, Date.now, undefined, undefined, { fresh: store, staleClaimMs: 0 });

    // The anonymous browsing profile exists.
    await second.resolve(event({ anonymousId: "anon-c", traits: { plan: "basic" } }));
    // The user's identify starts a new profile: claims user_id and email, then is held.
    const slowOne = first.resolve(
      event({ userId: "user-c", traits: { email: "c@example.org", city: "Paris" } }),
    );
    await slow.held;
    // Meanwhile the login (user id + anonymous id) takes the user id's claim over.
    await second.resolve(event({ userId: "user-c", anonymousId: "anon-c", traits: { first_name: "Ada" } }));
    slow.release();
    await slowOne;

    const byUser = await second.find("ws", { type: "user_id", value: "user-c" });
    const byEmail = await second.find("ws", { type: "email", value: "c@example.org" });
    const byAnon = await second.find("ws", { type: "anonymous_id", value: "anon-c" });
    expect(byEmail?.value.profileId).toBe(byUser?.value.profileId);
    expect(byAnon?.value.profileId).toBe(byUser?.value.profileId);
    expect(byUser?.value.traits).toMatchObject({ plan: "basic", city: "Paris", first_name: "Ada" });
  });

  // The same race with a writer that claimed its only identifier: before, nothing led to its
  // profile once the claim was taken over, and the event it held was lost.
  it("ends as one profile when the slow writer's claim was its only identifier", async () => {
    const store = await KvProfileStore.open(nc);
    const slow = holding(store);
    const first = new Resolver(slow.store, Date.now, undefined, undefined, { fresh: store, staleClaimMs: 0 });
    const second = new Resolver(store, Date.now, undefined, undefined, { fresh: store, staleClaimMs: 0 });

    await second.resolve(event({ anonymousId: "anon-f", traits: { plan: "basic" } }));
    const slowOne = first.resolve(event({ userId: "user-f", traits: { city: "Paris" } }));
    await slow.held;
    await second.resolve(event({ userId: "user-f", anonymousId: "anon-f", traits: { first_name: "Ada" } }));
    slow.release();
    await slowOne;

    const byUser = await second.find("ws", { type: "user_id", value: "user-f" });
    const byAnon = await second.find("ws", { type: "anonymous_id", value: "anon-f" });
    expect(byAnon?.value.profileId).toBe(byUser?.value.profileId);
    expect(byUser?.value.traits).toMatchObject({ plan: "basic", city: "Paris", first_name: "Ada" });
    // The slow writer's profile is not left where nothing leads (with the event applied twice): it
    // was never created (a stand-in took its id), and the event went to the customer's profile.
    const slowProfile = profileIdFor("ws", { type: "user_id", value: "user-f" });
    expect(await second.live("ws", slowProfile)).toBeUndefined();
    expect((await store.getProfile("ws", slowProfile))?.value.neverWritten).toBe(true);
  });
});

describe("a merge stopped part-way", () => {
  // A merge writes the survivor, points the identifiers at it and retires the merged profile.
  // It used to point the identifiers first: a writer stopped before writing the survivor (a crash,
  // or with two replicas each of two merges stopped half-way by the other) left the identifiers
  // leading to a survivor without the merged profile, which nothing led to any more.
  it("loses nothing wherever the writer stops: the next events and the redelivery finish it", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    // The login's writes: the survivor's merge intent, the tombstone, the survivor, two identifiers.
    for (let stopAfter = 0; stopAfter <= 5; stopAfter++) {
      const [anon, user, email] = [`anon-s${stopAfter}`, `user-s${stopAfter}`, `s${stopAfter}@example.org`];
      await resolver.resolve(event({ anonymousId: anon, traits: { plan: "basic" } }));
      await resolver.resolve(event({ userId: user, traits: { email, city: "Paris" } }));
      const userProfile = (await resolver.find("ws", { type: "user_id", value: user }))!.value.profileId;

      // The login merges the two; its writer stops after `stopAfter` of its writes.
      let writes = 0;
      const stopping = beforeWrites(store, () => {
        if (++writes > stopAfter) throw new Error(`stopped after ${stopAfter} writes`);
      });
      const login = event({ userId: user, anonymousId: anon, traits: { first_name: "Ada" } });
      const stopped = await new Resolver(stopping).resolve(login).then(
        () => false,
        () => true,
      );
      expect(stopped, `stop after ${stopAfter}`).toBe(stopAfter < 5);

      // Before the login is redelivered, the customer acts through the user id, then the email.
      await resolver.resolve(event({ userId: user, traits: { country: "FR" } }));
      await resolver.resolve(event({ anonymousId: anon, traits: { email, newsletter: true } }));
      await resolver.resolve(login);

      const profiles = new Set<string>();
      for (const id of [
        { type: "user_id", value: user },
        { type: "email", value: email },
        { type: "anonymous_id", value: anon },
      ]) {
        const p = await resolver.find("ws", id);
        profiles.add(p!.value.profileId);
        expect(p?.value.traits, `stop after ${stopAfter}: ${id.type}`).toMatchObject({
          plan: "basic",
          city: "Paris",
          first_name: "Ada",
          country: "FR",
          newsletter: true,
        });
      }
      expect(profiles.size, `stop after ${stopAfter}`).toBe(1);
      expect((await resolver.live("ws", userProfile))?.value.profileId).toBe([...profiles][0]);
    }
  });

  // Two merges racing for one profile: each read it live; the first retired it into its survivor,
  // the second then wrote its own survivor with it too. It was counted on both, then twice once
  // the two survivors joined. Retiring it (compare-and-set) before writing the survivor lets one win.
  it("merges a profile into one survivor only, when two merges race for it", async () => {
    const store = await KvProfileStore.open(nc);
    const rules = compileRules(undefined, [
      computedTraitSchema.parse({ name: "events", op: "count", event: "*" }),
    ]);
    const resolver = new Resolver(store, Date.now, () => rules);
    const at = Date.now();
    const step = (ms: number) => timestampFromMs(at + ms);
    await resolver.resolve(
      event({ anonymousId: "anon-t", traits: { email: "t@example.org" }, timestamp: step(0) }),
    );
    await resolver.resolve(event({ userId: "user-t", traits: { s: 1 }, timestamp: step(1) }));
    await resolver.resolve(event({ anonymousId: "anon-l", traits: { l: 1 }, timestamp: step(2) }));

    // The first merge (user + anon-l) reads both profiles, then waits before its first write.
    const g = gate();
    let first = true;
    const holding = beforeWrites(store, async () => {
      if (!first) return;
      first = false;
      await g.wait();
    });
    const slow = new Resolver(holding, Date.now, () => rules).resolve(
      event({ userId: "user-t", anonymousId: "anon-l", timestamp: step(3) }),
    );
    await g.held;
    // Meanwhile the same device identifies with the email: anon-l joins the email's profile.
    await resolver.resolve(
      event({ anonymousId: "anon-l", traits: { email: "t@example.org" }, timestamp: step(4) }),
    );
    g.release();
    await slow;

    const p = await resolver.find("ws", { type: "user_id", value: "user-t" });
    for (const [type, value] of [
      ["anonymous_id", "anon-t"],
      ["anonymous_id", "anon-l"],
      ["email", "t@example.org"],
    ] as const)
      expect((await resolver.find("ws", { type, value }))?.value.profileId, type).toBe(p?.value.profileId);
    expect(computedValues(p!.value.computed!, rules.computed, Date.now())).toEqual({ events: 5 });
  });

  // Two logins on one device by two users, racing: each merge wants the device's profile as its
  // survivor. The one that loses it must not fold its retired user profile into a survivor that
  // now holds the other user (one user id per profile, the default limit): it is brought back.
  it("keeps two users apart when their logins on one device race", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ anonymousId: "anon-k", traits: { device: "kiosk" } }));
    const device = (await resolver.find("ws", { type: "anonymous_id", value: "anon-k" }))!.value.profileId;
    await resolver.resolve(event({ userId: "user-k1", traits: { name: "Ada" } }));
    await resolver.resolve(event({ userId: "user-k2", traits: { name: "Grace" } }));

    // Both reach their first write of the device's profile, then go on together.
    let waiting = 0;
    let both!: () => void;
    const together = new Promise<void>((r) => (both = r));
    const racing = (): ProfileStore => {
      let first = true;
      return beforeWrites(store, async (w) => {
        if (first && w.op === "put" && w.profile.profileId === device && w.profile.mergedInto === undefined) {
          first = false;
          if (++waiting === 2) both();
          await together;
        }
      });
    };
    await Promise.all([
      new Resolver(racing()).resolve(event({ userId: "user-k1", anonymousId: "anon-k" })),
      new Resolver(racing()).resolve(event({ userId: "user-k2", anonymousId: "anon-k" })),
    ]);

    const ada = await resolver.find("ws", { type: "user_id", value: "user-k1" });
    const grace = await resolver.find("ws", { type: "user_id", value: "user-k2" });
    expect(ada?.value.profileId).not.toBe(grace?.value.profileId);
    expect(ada?.value.traits.name).toBe("Ada");
    expect(grace?.value.traits.name).toBe("Grace");
    for (const p of [ada, grace])
      expect(p?.value.identifiers.filter((i) => i.type === "user_id")).toHaveLength(1);
  });

  // A merge that retired a profile and stopped is finished by whichever event comes through the
  // retired profile next, even one already applied (a redelivery): its change is re-published as
  // it was, and the merge is a new version of the survivor, published on its own.
  it("a redelivery that finishes a stopped merge reports it as a new version", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ anonymousId: "anon-r", traits: { plan: "basic" } }));
    const signup = event({ userId: "user-r", traits: { city: "Paris" } });
    const first = await resolver.resolve(signup);
    if (first.kind === "suppressed") throw new Error("suppressed");
    const survivor = (await resolver.find("ws", { type: "anonymous_id", value: "anon-r" }))!;
    // A merge of the user's profile into the anonymous one retired it, then stopped.
    const user = (await store.getProfile("ws", first.profile.profileId))!;
    await store.putProfile(tombstone(user.value, survivor.value.profileId, Date.now()), user.revision);

    const again = await resolver.resolve(signup);
    if (again.kind === "suppressed") throw new Error("suppressed");
    expect(again.kind).toBe("duplicate");
    expect(again.changeId).toEqual(first.changeId);
    expect(again.merged).toEqual([user.value.profileId]);
    expect(again.mergedAs).toEqual({
      profileId: survivor.value.profileId,
      version: survivor.value.version + 1,
    });
    const after = (await resolver.find("ws", { type: "user_id", value: "user-r" }))!.value;
    expect(after.version).toBe(survivor.value.version + 1);
    expect(after.traits).toMatchObject({ plan: "basic", city: "Paris" });
  });
});

describe("the limits across writers", () => {
  /** Both writers reach their first write, then go on together. */
  function meeting(store: ProfileStore): () => ProfileStore {
    let waiting = 0;
    let both!: () => void;
    const together = new Promise<void>((r) => (both = r));
    return () => {
      let first = true;
      return beforeWrites(store, async () => {
        if (!first) return;
        first = false;
        if (++waiting === 2) both();
        await together;
      });
    };
  }

  // A claim released by a writer whose profile write failed is free for any writer to take.
  // Two writers took it at once, each for its own profile, and both wrote it onto theirs: one
  // identifier on two live profiles. Each now claims it again (compare-and-set) before writing.
  it("gives one released claim to one writer when two take it over at once", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ anonymousId: "anon-w1", traits: { device: "phone" } }));
    await resolver.resolve(event({ anonymousId: "anon-w2", traits: { device: "laptop" } }));
    const phone = (await resolver.find("ws", { type: "anonymous_id", value: "anon-w1" }))!.value.profileId;
    const user = { type: "user_id", value: "user-w" };
    await store.link("ws", user, { profileId: phone, claimedAt: 0 }, 0);

    const racing = meeting(store);
    await Promise.all([
      new Resolver(racing()).resolve(event({ userId: "user-w", anonymousId: "anon-w1" })),
      new Resolver(racing()).resolve(event({ userId: "user-w", anonymousId: "anon-w2" })),
    ]);

    const p = await resolver.find("ws", user);
    for (const value of ["anon-w1", "anon-w2"]) {
      const q = await resolver.find("ws", { type: "anonymous_id", value });
      expect(q?.value.profileId, value).toBe(p?.value.profileId);
    }
    expect(p?.value.traits).toMatchObject({ device: "laptop" });
    expect(p?.value.identifiers.filter((i) => i.type === "user_id")).toEqual([user]);
  });

  // A claim for a profile that was merged away since leads through its tombstone to the survivor,
  // which does not hold the identifier. It was taken for membership: the next event with it joined
  // the survivor, whatever the limits, and the survivor ended with two user ids.
  it("does not take a claim leading through a tombstone for membership", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ userId: "user-m2", anonymousId: "anon-m1" }));
    await resolver.resolve(event({ anonymousId: "anon-m3", traits: { email: "m@example.org" } }));
    const browsing = (await resolver.find("ws", { type: "anonymous_id", value: "anon-m3" }))!.value.profileId;
    // A writer claimed user-m1 for the browsing profile, then lost its write and released the claim.
    await store.link("ws", { type: "user_id", value: "user-m1" }, { profileId: browsing, claimedAt: 0 }, 0);
    // user-m2 logs in on the browsing device: the browsing profile is merged into theirs (the older).
    await resolver.resolve(event({ userId: "user-m2", anonymousId: "anon-m3" }));
    const second = (await resolver.find("ws", { type: "user_id", value: "user-m2" }))!.value;
    expect(second.profileId).not.toBe(browsing);
    expect((await resolver.live("ws", browsing))?.value.profileId).toBe(second.profileId);

    // user-m1 on the other user's device: not within the limits, so the device stays with user-m2.
    await resolver.resolve(event({ userId: "user-m1", anonymousId: "anon-m1", traits: { name: "Ada" } }));
    const first = (await resolver.find("ws", { type: "user_id", value: "user-m1" }))!.value;
    expect(first.profileId).not.toBe(second.profileId);
    expect(first.traits).toMatchObject({ name: "Ada" });
    const after = (await resolver.find("ws", { type: "user_id", value: "user-m2" }))!.value;
    expect(after.identifiers.filter((i) => i.type === "user_id")).toEqual([
      { type: "user_id", value: "user-m2" },
    ]);
    expect((await resolver.find("ws", { type: "anonymous_id", value: "anon-m1" }))?.value.profileId).toBe(
      second.profileId,
    );
  });

  // A new profile's id comes from its first identifier, so that a redelivery finds the profile it
  // created. Another customer's event may have taken that id: it adopted a claim the first writer
  // left, and the limits then kept the first writer's user id from it. The event joined it anyway.
  it("gives a new profile an id of its own when its id is another customer's profile", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    const taken = profileIdFor("ws", { type: "user_id", value: "user-d2" });
    // A writer for user-d2 claimed the email for its new profile, then lost its write and released it.
    await store.link("ws", { type: "email", value: "d@example.org" }, { profileId: taken, claimedAt: 0 }, 0);
    // user-d1's event with that email adopts the claim: its profile gets user-d2's id.
    await resolver.resolve(event({ userId: "user-d1", traits: { email: "d@example.org", name: "Ada" } }));
    expect((await resolver.find("ws", { type: "user_id", value: "user-d1" }))?.value.profileId).toBe(taken);

    const login = event({ userId: "user-d2", traits: { name: "Grace" } });
    await resolver.resolve(login);
    const d1 = (await resolver.find("ws", { type: "user_id", value: "user-d1" }))!.value;
    const d2 = (await resolver.find("ws", { type: "user_id", value: "user-d2" }))!.value;
    expect(d2.profileId).not.toBe(d1.profileId);
    expect(d1.identifiers.filter((i) => i.type === "user_id")).toHaveLength(1);
    expect([d1.traits.name, d2.traits.name]).toEqual(["Ada", "Grace"]);
    // A redelivery finds the profile the event created.
    const again = await resolver.resolve(login);
    expect(again.kind === "duplicate" && again.profile.profileId).toBe(d2.profileId);
  });

  // An alias whose previous id is another user's: the two users' profiles were merged, past the
  // limit of one user id (the previous id's profile was not held to the limits).
  it("keeps an alias to another user's id within the limits", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ userId: "user-a1", anonymousId: "anon-a1" }));
    await resolver.resolve(event({ userId: "user-a2", anonymousId: "anon-a2" }));
    await resolver.resolve(event({ type: EventType.ALIAS, userId: "user-a2", previousId: "user-a1" }));
    const a1 = (await resolver.find("ws", { type: "user_id", value: "user-a1" }))!.value;
    const a2 = (await resolver.find("ws", { type: "user_id", value: "user-a2" }))!.value;
    expect(a1.profileId).not.toBe(a2.profileId);
    for (const p of [a1, a2]) expect(p.identifiers.filter((i) => i.type === "user_id")).toHaveLength(1);

    // An alias to an id never seen links it to the user.
    await resolver.resolve(event({ type: EventType.ALIAS, userId: "user-a2", previousId: "visitor-a9" }));
    const visitor = await resolver.find("ws", { type: "anonymous_id", value: "visitor-a9" });
    expect(visitor?.value.profileId).toBe(a2.profileId);
  });

  // A claim released by a writer whose retry then dropped the identifier (the limits) stays on the
  // profile it was made for, which does not hold it: lookups and deletions by it answered that
  // profile (a deletion by the device's id would have erased the user's profile).
  it("does not answer lookups or deletions by a claim the profile does not hold", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ userId: "user-l2", traits: { name: "Grace" } }));
    const user = (await resolver.find("ws", { type: "user_id", value: "user-l2" }))!.value;
    const device = { type: "anonymous_id", value: "anon-l2" };
    await store.link("ws", device, { profileId: user.profileId, claimedAt: 0 }, 0);

    expect(await resolver.find("ws", device)).toBeUndefined();
    const erasing = await resolver.findForErasure("ws", device);
    expect(erasing.profile).toBeUndefined();
    expect(erasing.retired).toEqual([]);
    // The next event through it takes the claim over.
    await resolver.resolve(event({ anonymousId: "anon-l2", traits: { device: "kiosk" } }));
    expect((await resolver.find("ws", device))?.value.traits).toEqual({ device: "kiosk" });
    expect((await resolver.find("ws", { type: "user_id", value: "user-l2" }))?.value.traits).toEqual({
      name: "Grace",
    });
  });

  // A writer adding an email to an existing profile claimed it, then stalled past the takeover
  // time; another writer took the claim over for another profile. The stalled writer's write of
  // its profile (unchanged since it read it) still went through: the email on two profiles.
  it("makes a writer that stalled after its claim was taken over try again", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ anonymousId: "anon-s1", traits: { device: "phone" } }));
    // Held before its first profile write (after claiming the email).
    const g = gate();
    let first = true;
    const slow = beforeWrites(store, async (w) => {
      if (w.op !== "put" || !first) return;
      first = false;
      await g.wait();
    });
    // (A claim is taken over at once here: the writer is as good as stalled past the takeover time.)
    const stalled = new Resolver(slow, Date.now, undefined, undefined, { staleClaimMs: 0 });
    const taker = new Resolver(store, Date.now, undefined, undefined, { staleClaimMs: 0 });
    const stalledOne = stalled.resolve(event({ anonymousId: "anon-s1", traits: { email: "s@example.org" } }));
    await g.held;
    await taker.resolve(event({ anonymousId: "anon-s9", traits: { email: "s@example.org" } }));
    g.release();
    await stalledOne;

    const holders = [];
    for (const value of ["anon-s1", "anon-s9"]) {
      const p = (await resolver.find("ws", { type: "anonymous_id", value }))!.value;
      if (p.identifiers.some((i) => i.type === "email")) holders.push(p.profileId);
    }
    expect(new Set(holders).size).toBe(1);
    const byEmail = await resolver.find("ws", { type: "email", value: "s@example.org" });
    expect(byEmail?.value.profileId).toBe(holders[0]);
  });
});

describe("a new profile's writer stalled past the takeover time", () => {
  // A writer claimed a user id and an email for a new profile, then stalled before writing it;
  // meanwhile two other writers took the claims over onto two existing profiles. The stalled writer
  // then created its profile all the same: both identifiers on two live profiles, and its retry
  // applied the event a second time. The first taker now puts a stand-in at the unwritten id.
  it("cannot create its profile once its claims were taken over, and applies the event once", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event({ userId: "nw-u1" }));
    await resolver.resolve(event({ anonymousId: "nw-a5" }));
    const { store: slow, held, release } = holding(store);
    const stalled = new Resolver(slow, Date.now, undefined, undefined, { staleClaimMs: 0 });
    const taker = new Resolver(store, Date.now, undefined, undefined, { staleClaimMs: 0 });
    const e = event({ userId: "nw-u2", traits: { email: "nw@example.org" } });
    const stalledOne = stalled.resolve(e);
    await held;
    await taker.resolve(event({ userId: "nw-u1", traits: { email: "nw@example.org" } }));
    await taker.resolve(event({ userId: "nw-u2", anonymousId: "nw-a5" }));
    release();
    const r = await stalledOne;
    expect(r.kind).toBe("applied");

    // Each identifier on one live profile, and the event on one.
    const holders = new Map<string, string>();
    for (const [type, value] of [
      ["user_id", "nw-u1"],
      ["user_id", "nw-u2"],
      ["email", "nw@example.org"],
      ["anonymous_id", "nw-a5"],
    ] as const) {
      const p = (await resolver.find("ws", { type, value }))!.value;
      holders.set(p.profileId, JSON.stringify(p));
    }
    // Where the stalled writer's profile would have been: no live profile (no index entry leads
    // there), but the stand-in, holding nothing.
    const unwritten = await store.getProfile("ws", profileIdFor("ws", { type: "user_id", value: "nw-u2" }));
    if (unwritten !== undefined && unwritten.value.mergedInto === undefined && !unwritten.value.neverWritten)
      holders.set(unwritten.value.profileId, JSON.stringify(unwritten.value));
    const live = [...holders.values()].map((j) => JSON.parse(j) as ProfileRecord);
    for (const id of ["nw-u1", "nw-u2", "nw@example.org", "nw-a5"])
      expect(live.filter((p) => p.identifiers.some((i) => i.value === id))).toHaveLength(1);
    expect(live.filter((p) => p.applied.some((a) => a.eventId === e.messageId))).toHaveLength(1);
    expect(unwritten?.value).toMatchObject({ neverWritten: true, identifiers: [], applied: [] });
  });
});

describe("an alias whose previous id is its own anonymous id", () => {
  // The user's profile exists, and the anonymous id's entry is a claim left on it (released by a
  // write that lost): the alias claimed that identifier twice at once for the profile, conflicted
  // with itself, and did so on every attempt until the event was given up.
  it("claims it once and is applied", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    const user = await resolver.resolve(event({ userId: "al-user" }));
    if (user.kind === "suppressed") throw new Error("suppressed");
    await store.link(
      "ws",
      { type: "anonymous_id", value: "al-a1" },
      { profileId: user.profile.profileId, claimedAt: 0 },
      0,
    );
    const r = await resolver.resolve(
      event({ type: EventType.ALIAS, userId: "al-user", anonymousId: "al-a1", previousId: "al-a1" }),
    );
    expect(r.kind).toBe("applied");
    const p = await resolver.find("ws", { type: "anonymous_id", value: "al-a1" });
    expect(p?.value.identifiers).toEqual(
      expect.arrayContaining([
        { type: "user_id", value: "al-user" },
        { type: "anonymous_id", value: "al-a1" },
      ]),
    );
  });
});
