import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DeadLetterSchema,
  EventSchema,
  EventType,
  ProfileChangedSchema,
  ProfileService,
  type Event,
} from "@kairos/contracts";
import { createGrpcClient, loadConfig, subjects } from "@kairos/kit";
import { NatsServer, waitFor } from "@kairos/testkit";
import { configSpec, startIdentity, type IdentityHandle } from "./service.js";
import { Resolver } from "./resolver.js";
import { beforeWrites } from "./test-stores.js";
import { KvProfileStore } from "./store.js";
import { splitOff, tombstone } from "./profile-record.js";

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let svc: IdentityHandle;
let n = 0;

beforeAll(async () => {
  server = await NatsServer.start();
  svc = await startIdentity(
    loadConfig(configSpec, { NATS_URL: server.url, GRPC_PORT: "0", OPS_PORT: "0", LOG_LEVEL: "silent" }),
  );
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await svc?.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

function event(over: MessageInitShape<typeof EventSchema>): Event {
  return create(EventSchema, {
    messageId: `m-${++n}`,
    workspace: "ws",
    source: "test",
    type: EventType.TRACK,
    name: "Viewed",
    receivedAt: timestampFromMs(Date.now()),
    ...over,
  });
}

async function send(e: Event, msgID = `${e.workspace}:${e.messageId}`) {
  await jetstream(nc).publish(subjects.events(e.workspace, 0), toBinary(EventSchema, e), { msgID });
}

async function changes() {
  const info = await jsm.streams.info("PROFILES");
  const out = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage("PROFILES", { seq }).catch(() => null);
    if (m !== null) out.push(fromBinary(ProfileChangedSchema, m.data));
  }
  return out;
}

async function get(type: string, value: string) {
  const client = createGrpcClient(ProfileService, svc.grpcAddress);
  try {
    return (await client.getProfile({ workspace: "ws", identifier: { type, value } })).profile;
  } finally {
    client.close();
  }
}

describe("identity", () => {
  it("resolves userId, anonymousId and email to one profile, merging two profiles an identify links", async () => {
    const anon = event({ anonymousId: "anon-1", type: EventType.PAGE, name: "Home" });
    const user = event({ userId: "user-1", name: "Signed Up" });
    await send(anon);
    await send(user);
    await waitFor(
      async () =>
        (await changes()).filter((c) => [anon.messageId, user.messageId].includes(c.eventId)).length === 2,
    );
    const a = await get("anonymous_id", "anon-1");
    const u = await get("user_id", "user-1");
    expect(a?.profileId).not.toBe(u?.profileId);

    const link = event({
      type: EventType.IDENTIFY,
      userId: "user-1",
      anonymousId: "anon-1",
      traits: { email: "Ada@Example.org", plan: "gold" },
    });
    await send(link);
    const merged = await waitFor(async () => (await changes()).find((c) => c.eventId === link.messageId));
    expect(merged.mergedFrom).toHaveLength(1);
    for (const [type, value] of [
      ["user_id", "user-1"],
      ["anonymous_id", "anon-1"],
      ["email", "ada@example.org"],
      ["profile_id", merged.mergedFrom[0]!],
    ] as const) {
      const p = await get(type, value);
      expect(p?.profileId, `${type} ${value}`).toBe(merged.profileId);
      expect(p?.traits).toMatchObject({ plan: "gold", email: "Ada@Example.org" });
    }
    expect(merged.profile?.identifiers).toHaveLength(3);
    expect(merged.eventType).toBe("identify");
  });

  it("publishes one change per event when anonymous browsing and identify race for the same customer", async () => {
    const sent: Event[] = [];
    for (let i = 0; i < 40; i++) {
      const page = event({ anonymousId: `race-a-${i}`, type: EventType.PAGE, name: "Home" });
      const link = event({
        type: EventType.IDENTIFY,
        anonymousId: `race-a-${i}`,
        userId: `race-u-${i}`,
        traits: { email: `race-${i}@example.org` },
      });
      sent.push(page, link);
    }
    await Promise.all(sent.map((e) => send(e)));
    const ids = new Set(sent.map((e) => e.messageId));
    const got = await waitFor(async () => {
      const c = (await changes()).filter((x) => ids.has(x.eventId));
      return new Set(c.map((x) => x.eventId)).size === ids.size ? c : undefined;
    });
    expect(got).toHaveLength(ids.size);
    for (let i = 0; i < 40; i++) {
      const a = await get("anonymous_id", `race-a-${i}`);
      expect((await get("user_id", `race-u-${i}`))?.profileId).toBe(a?.profileId);
      expect(a?.version).toBe(2n);
    }
  });

  it("does not apply a redelivered event twice, and publishes its change once", async () => {
    const e = event({ userId: "user-dup", type: EventType.IDENTIFY, traits: { plan: "basic" } });
    await send(e);
    await waitFor(async () => (await changes()).some((c) => c.eventId === e.messageId));
    // The same event again, past JetStream's duplicate window (different Nats-Msg-Id).
    await send(e, `replay-${e.messageId}`);
    const follow = event({ userId: "user-dup" });
    await send(follow);
    await waitFor(async () => (await changes()).some((c) => c.eventId === follow.messageId));
    const all = (await changes()).filter((c) => c.profile?.identifiers.some((i) => i.value === "user-dup"));
    expect(all.map((c) => c.version)).toEqual([1n, 2n]);
    expect((await get("user_id", "user-dup"))?.version).toBe(2n);
  });

  it("does not merge when the merge would give a profile two user ids (the default limit)", async () => {
    const first = event({
      userId: "limit-u1",
      type: EventType.IDENTIFY,
      traits: { email: "shared@example.org" },
    });
    await send(first);
    await waitFor(async () => (await changes()).some((c) => c.eventId === first.messageId));
    // Another user id with the same email: the email (lower priority) is dropped from this event.
    const second = event({
      userId: "limit-u2",
      type: EventType.IDENTIFY,
      traits: { email: "shared@example.org" },
    });
    await send(second);
    await waitFor(async () => (await changes()).some((c) => c.eventId === second.messageId));
    const u1 = await get("user_id", "limit-u1");
    const u2 = await get("user_id", "limit-u2");
    expect(u2?.profileId).not.toBe(u1?.profileId);
    expect((await get("email", "shared@example.org"))?.profileId).toBe(u1?.profileId);
    expect(u2?.identifiers.map((i) => i.type)).toEqual(["user_id"]);
  });

  it("answers NOT_FOUND for an unknown identifier and INVALID_ARGUMENT for an unknown type", async () => {
    await expect(get("user_id", "nobody")).rejects.toThrow(/NOT_FOUND|no profile/);
    await expect(get("phone", "1")).rejects.toThrow(/identifier.type must be one of/);
  });

  it("dead-letters an event without any identifier, and keeps going", async () => {
    const bad = event({});
    const good = event({ anonymousId: "after-bad" });
    await send(bad);
    await send(good);
    await waitFor(async () => (await changes()).some((c) => c.eventId === good.messageId));
    const dlq = await waitFor(async () => {
      const m = await jsm.streams
        .getMessage("DLQ", { last_by_subj: subjects.dlq("identity") })
        .catch(() => null);
      return m === null ? undefined : fromBinary(DeadLetterSchema, m.data);
    });
    expect(dlq.reason).toBe("permanent");
    expect(dlq.error).toMatch(/no usable identifier \(user_id, email, anonymous_id\)/);
    expect(fromBinary(EventSchema, dlq.data).messageId).toBe(bad.messageId);
  });

  it("looks up a batch: each identifier answered in order, a bad one with its error and the rest all the same", async () => {
    const e = event({
      userId: "user-batch",
      type: EventType.IDENTIFY,
      traits: { email: "batch@example.org" },
    });
    await send(e);
    const change = await waitFor(async () => (await changes()).find((c) => c.eventId === e.messageId));
    const client = createGrpcClient(ProfileService, svc.grpcAddress);
    try {
      const identifiers = [
        { type: "user_id", value: "user-batch" },
        { type: "email", value: " Batch@Example.org " },
        { type: "user_id", value: "nobody-batch" },
        { type: "shoe_size", value: "9" },
        { type: "email", value: "" },
      ];
      const { results } = await client.batchGetProfiles({ workspace: "ws", identifiers });
      expect(results.map((r) => [r.identifier?.value, r.found, r.profile?.profileId])).toEqual([
        ["user-batch", true, change.profileId],
        [" Batch@Example.org ", true, change.profileId],
        ["nobody-batch", false, undefined],
        ["9", false, undefined],
        ["", false, undefined],
      ]);
      expect(results[2]?.error).toBe("");
      expect(results[3]?.error).toMatch(/identifier\.type must be one of profile_id, user_id/);
      expect(results[4]?.error).toMatch(/identifier with a type and a value is required/);

      // A version the caller knows of is read past the view; one per identifier, or none.
      const fresh = await client.batchGetProfiles({
        workspace: "ws",
        identifiers: identifiers.slice(0, 2),
        minVersions: [change.version, 0n],
      });
      expect(fresh.results.map((r) => r.profile?.version)).toEqual([change.version, change.version]);
      await expect(
        client.batchGetProfiles({ workspace: "ws", identifiers, minVersions: [1n] }),
      ).rejects.toThrow(/min_versions has 1 entries for 5 identifiers/);
    } finally {
      client.close();
    }
  });

  it("deletes a profile by any identifier and publishes the deletion", async () => {
    const e = event({ userId: "user-del", type: EventType.IDENTIFY, traits: { email: "del@example.org" } });
    await send(e);
    await waitFor(async () => (await changes()).some((c) => c.eventId === e.messageId));
    const client = createGrpcClient(ProfileService, svc.grpcAddress);
    try {
      const res = await client.deleteProfile({
        workspace: "ws",
        identifier: { type: "email", value: "DEL@example.org" },
      });
      expect(res.identifiersRemoved).toBe(2);
      await waitFor(async () => (await changes()).some((c) => c.profileId === res.profileId && c.deleted));
      await expect(get("user_id", "user-del")).rejects.toThrow(/no profile/);
    } finally {
      client.close();
    }
  });
});

describe("deletion after a merge stopped part-way", () => {
  it("erases all of a customer whose merge stopped before pointing the identifiers at the survivor", async () => {
    // Staged straight in the service's store: the login's merge wrote the survivor (the anonymous
    // profile) and stopped before pointing the identifiers at it; the redelivery has not come yet.
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    let merged = false;
    const crashing = beforeWrites(store, (w) => {
      if (w.op === "put") merged ||= w.profile.mergedFrom.length > 0;
      else if (merged) throw new Error("crashed after writing the survivor");
    });
    await resolver.resolve(
      event({ anonymousId: "anon-half", type: EventType.IDENTIFY, traits: { plan: "basic" } }),
    );
    await resolver.resolve(
      event({
        userId: "user-half",
        type: EventType.IDENTIFY,
        traits: { email: "half@example.org", city: "Paris" },
      }),
    );
    const userProfile = (await resolver.find("ws", { type: "user_id", value: "user-half" }))!.value.profileId;
    await expect(
      new Resolver(crashing).resolve(
        event({ userId: "user-half", anonymousId: "anon-half", type: EventType.IDENTIFY }),
      ),
    ).rejects.toThrow(/crashed/);

    const client = createGrpcClient(ProfileService, svc.grpcAddress);
    try {
      // By the survivor's own identifier: nothing in the index leads from it to the merged profile.
      const res = await client.deleteProfile({
        workspace: "ws",
        identifier: { type: "anonymous_id", value: "anon-half" },
      });
      expect(res.identifiersRemoved).toBe(3);
      await waitFor(async () =>
        (await changes()).some(
          (c) => c.deleted && c.profileId === res.profileId && c.mergedFrom.includes(userProfile),
        ),
      );
    } finally {
      client.close();
    }
    expect(await store.getProfile("ws", userProfile)).toBeUndefined();
    for (const [type, value] of [
      ["user_id", "user-half"],
      ["email", "half@example.org"],
      ["anonymous_id", "anon-half"],
    ] as const) {
      await expect(get(type, value), type).rejects.toThrow(/no profile/);
    }
  });
});

describe("deletion after a merge stopped before writing its survivor", () => {
  it.each(["user_id", "anonymous_id"] as const)(
    "erases the retired profile the survivor does not hold yet, asked by the %s",
    async (via) => {
      const [anon, user, email] = [`anon-ret-${via}`, `user-ret-${via}`, `ret-${via}@example.org`];
      const store = await KvProfileStore.open(nc);
      const resolver = new Resolver(store);
      const crashing = beforeWrites(store, (w) => {
        if (w.op === "put" && w.profile.mergedFrom.length > 0)
          throw new Error("crashed before writing the survivor");
      });
      await resolver.resolve(
        event({ anonymousId: anon, type: EventType.IDENTIFY, traits: { plan: "basic" } }),
      );
      await resolver.resolve(
        event({ userId: user, type: EventType.IDENTIFY, traits: { email, city: "Paris" } }),
      );
      const userProfile = (await resolver.find("ws", { type: "user_id", value: user }))!.value.profileId;
      await expect(
        new Resolver(crashing).resolve(event({ userId: user, anonymousId: anon, type: EventType.IDENTIFY })),
      ).rejects.toThrow(/crashed/);
      // The user's profile is retired into the anonymous one, which does not hold it yet.
      expect((await store.getProfile("ws", userProfile))?.value.mergedInto).toBeDefined();

      const client = createGrpcClient(ProfileService, svc.grpcAddress);
      try {
        await client.deleteProfile({
          workspace: "ws",
          identifier: { type: via, value: via === "user_id" ? user : anon },
        });
        await waitFor(async () => (await changes()).some((c) => c.deleted && c.profileId === userProfile));
      } finally {
        client.close();
      }
      expect(await store.getProfile("ws", userProfile)).toBeUndefined();
      for (const [type, value] of [
        ["user_id", user],
        ["email", email],
        ["anonymous_id", anon],
      ] as const) {
        await expect(get(type, value), type).rejects.toThrow(/no profile/);
      }
    },
  );
});

describe("a deletion stopped part-way", () => {
  it("is finished by asking again: the identifier asked by still names the profile being erased", async () => {
    const e = event({ userId: "user-stop", type: EventType.IDENTIFY, traits: { email: "stop@example.org" } });
    await send(e);
    const change = await waitFor(async () => (await changes()).find((c) => c.eventId === e.messageId));
    // What a deletion with suppression asked by the user id leaves when it stops after its first
    // step: the user id suppressed, naming the profile; the profile and the email untouched.
    const store = await KvProfileStore.open(nc);
    const userId = { type: "user_id", value: "user-stop" };
    await store.link(
      "ws",
      userId,
      { suppressed: true, erasing: change.profileId },
      (await store.lookup("ws", userId))!.revision,
    );

    const client = createGrpcClient(ProfileService, svc.grpcAddress);
    try {
      const res = await client.deleteProfile({ workspace: "ws", identifier: userId, suppress: true });
      expect(res).toMatchObject({ profileId: change.profileId, identifiersRemoved: 2 });
      await waitFor(async () => (await changes()).some((c) => c.deleted && c.profileId === change.profileId));
    } finally {
      client.close();
    }
    expect(await store.getProfile("ws", change.profileId)).toBeUndefined();
    expect((await store.lookup("ws", userId))?.value).toEqual({ suppressed: true });
    expect((await store.lookup("ws", { type: "email", value: "stop@example.org" }))?.value).toEqual({
      suppressed: true,
    });
  });
});

describe("a redelivery that finishes a stopped merge", () => {
  it("publishes the merge as a change of the survivor without the event, which was published already", async () => {
    const anon = event({ anonymousId: "anon-fin", type: EventType.IDENTIFY, traits: { plan: "basic" } });
    const signup = event({ userId: "user-fin", type: EventType.IDENTIFY, traits: { city: "Paris" } });
    // Applied by another replica (this one holds neither in its cache)...
    const store = await KvProfileStore.open(nc);
    const other = new Resolver(store);
    const a = await other.resolve(anon);
    const u = await other.resolve(signup);
    if (a.kind === "suppressed" || u.kind === "suppressed") throw new Error("suppressed");
    // ...whose merge of the user's profile into the anonymous one retired it, then stopped.
    const user = (await store.getProfile("ws", u.profile.profileId))!;
    await store.putProfile(tombstone(user.value, a.profile.profileId, Date.now()), user.revision);

    // The signup is delivered again (as after a lost ack).
    await send(signup, `ws:${signup.messageId}:again`);
    const merge = await waitFor(async () =>
      (await changes()).find(
        (c) =>
          c.profileId === a.profile.profileId &&
          c.eventId === "" &&
          c.mergedFrom.includes(u.profile.profileId),
      ),
    );
    expect(merge.version).toBe(BigInt(a.profile.version + 1));
    expect(merge.profile?.traits).toMatchObject({ plan: "basic", city: "Paris" });
    expect((await changes()).filter((c) => c.eventId === signup.messageId)).toHaveLength(1);
  });
});

describe("unmerge", () => {
  it("finishes a split that stopped after pointing the identifiers back, when asked again", async () => {
    const account = event({
      type: EventType.IDENTIFY,
      userId: "user-halt",
      traits: { plan: "gold" },
      timestamp: timestampFromMs(Date.now() - 60_000),
    });
    await send(account);
    await waitFor(async () => (await get("user_id", "user-halt").catch(() => undefined)) !== undefined);
    await send(event({ type: EventType.IDENTIFY, anonymousId: "anon-halt", traits: { device: "kiosk" } }));
    await waitFor(async () => (await get("anonymous_id", "anon-halt").catch(() => undefined)) !== undefined);
    await send(event({ userId: "user-halt", anonymousId: "anon-halt", name: "Logged In" }));
    await waitFor(
      async () =>
        (await get("anonymous_id", "anon-halt"))?.profileId ===
        (await get("user_id", "user-halt"))?.profileId,
    );

    // Staged straight in the service's store: a split restored the kiosk's profile and pointed its
    // identifier back at it, then stopped before writing the survivor.
    const store = await KvProfileStore.open(nc);
    const survivor = (await new Resolver(store).find("ws", { type: "user_id", value: "user-halt" }))!;
    const kioskId = survivor.value.merges![0]!.profileId;
    const kiosk = (await store.getProfile("ws", kioskId))!;
    const { restored } = splitOff(survivor.value, kiosk.value, Date.now());
    await store.putProfile(restored, kiosk.revision);
    const anon = { type: "anonymous_id", value: "anon-halt" };
    const entry = (await store.lookup("ws", anon))!;
    await store.link("ws", anon, { profileId: kioskId, claimedAt: Date.now() }, entry.revision);

    const client = createGrpcClient(ProfileService, svc.grpcAddress);
    try {
      const res = await client.unmergeProfile({ workspace: "ws", identifier: anon });
      expect(res.restored?.profileId).toBe(kioskId);
      expect(res.survivor?.profileId).toBe(survivor.value.profileId);
      expect(res.survivor?.identifiers.map((i) => i.type)).toEqual(["user_id"]);
      expect(res.survivor?.mergedFrom).toEqual([]);
      expect((await get("anonymous_id", "anon-halt"))?.traits).toMatchObject({ device: "kiosk" });
      expect((await get("user_id", "user-halt"))?.traits?.device).toBeUndefined();
    } finally {
      client.close();
    }
  });

  it("splits a merge back apart by identifier: each profile gets its identifiers and traits back, and later events follow", async () => {
    const shared = event({
      type: EventType.IDENTIFY,
      anonymousId: "anon-split",
      traits: { plan: "free", device: "tablet" },
    });
    const account = event({
      type: EventType.IDENTIFY,
      userId: "user-split",
      traits: { plan: "gold", email: "owner@example.org" },
      timestamp: timestampFromMs(Date.now() - 60_000),
    });
    // The account first: the older profile survives the merge.
    await send(account);
    await waitFor(async () => (await get("user_id", "user-split").catch(() => undefined)) !== undefined);
    await send(shared);
    await waitFor(async () => (await get("anonymous_id", "anon-split").catch(() => undefined)) !== undefined);
    const before = await get("anonymous_id", "anon-split");
    // The shared tablet logs in to the owner's account: one profile.
    const login = event({ userId: "user-split", anonymousId: "anon-split", name: "Logged In" });
    await send(login);
    await waitFor(
      async () =>
        (await get("anonymous_id", "anon-split"))?.profileId ===
        (await get("user_id", "user-split"))?.profileId,
    );
    const merged = await get("user_id", "user-split");
    expect(
      merged?.merges.map((m) => ({
        eventId: m.eventId,
        identifiers: m.identifiers.map((i) => `${i.type}:${i.value}`),
        linkedBy: m.linkedBy.map((i) => `${i.type}:${i.value}`),
      })),
    ).toEqual([
      {
        eventId: login.messageId,
        identifiers: ["anonymous_id:anon-split"],
        linkedBy: ["anonymous_id:anon-split"],
      },
    ]);
    const mergedAway = merged!.merges[0]!.profileId;
    expect(mergedAway).toBe(before?.profileId);

    // It was someone else's tablet: split it back off by its anonymous id.
    const client = createGrpcClient(ProfileService, svc.grpcAddress);
    try {
      const res = await client.unmergeProfile({
        workspace: "ws",
        identifier: { type: "anonymous_id", value: "anon-split" },
      });
      expect(res.restored?.profileId).toBe(mergedAway);
      expect(res.restored?.identifiers.map((i) => `${i.type}:${i.value}`)).toEqual([
        "anonymous_id:anon-split",
      ]);
      expect(res.survivor?.identifiers.map((i) => i.type).sort()).toEqual(["email", "user_id"]);
      expect(res.survivor?.merges).toEqual([]);
      expect(res.survivor?.mergedFrom).toEqual([]);
      // A trait the merge took from the tablet goes back with it; the account keeps its own.
      const survivorTraits = res.survivor?.traits ?? {};
      expect(survivorTraits.device).toBeUndefined();
      expect(res.restored?.traits).toMatchObject({ plan: "free", device: "tablet" });

      // Lookups and later events follow the split.
      expect((await get("anonymous_id", "anon-split"))?.profileId).toBe(mergedAway);
      expect((await get("user_id", "user-split"))?.profileId).toBe(res.survivor?.profileId);
      const later = event({
        anonymousId: "anon-split",
        type: EventType.IDENTIFY,
        traits: { device: "phone" },
      });
      await send(later);
      await waitFor(async () => (await get("anonymous_id", "anon-split"))?.traits?.device === "phone");
      expect((await get("user_id", "user-split"))?.traits?.device).toBeUndefined();

      // The login redelivered (a replay): applied already, its merge split apart since; not made again.
      // (The customer's events are handled in order: once the next one shows, the replay is done.)
      await send(login, `ws:${login.messageId}:replayed`);
      const next = event({ userId: "user-split", type: EventType.IDENTIFY, traits: { replayed: true } });
      await send(next);
      await waitFor(async () => (await get("user_id", "user-split"))?.traits?.replayed === true);
      expect((await get("anonymous_id", "anon-split"))?.profileId).toBe(mergedAway);
      expect((await get("user_id", "user-split"))?.mergedFrom).toEqual([]);

      // The restored profile's change says where it came from, so consumers start it afresh.
      const restoredChange = (await changes()).find(
        (c) => c.profileId === mergedAway && c.unmergedFrom !== "",
      );
      expect(restoredChange?.unmergedFrom).toBe(res.survivor?.profileId);

      // Only a recorded merge can be split.
      await expect(
        client.unmergeProfile({ workspace: "ws", identifier: { type: "anonymous_id", value: "anon-split" } }),
      ).rejects.toThrow(/did not come to profile .* by a recorded merge/);
    } finally {
      client.close();
    }
  });
});
