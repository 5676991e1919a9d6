/**
 * Deletion racing other writers, on a real KV store: another replica's merge or event lands
 * between the erasure's read and its writes, or while it is under way.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, type Event } from "@kairos/contracts";
import { NatsServer } from "@kairos/testkit";
import { Erasure, NoProfile } from "./erasure.js";
import { Resolver } from "./resolver.js";
import { beforeWrites, gate, type StoreWriteStep } from "./test-stores.js";
import { KvProfileStore, WriteConflict, profileBuckets, type ProfileStore } from "./store.js";
import type { ProfileRecord } from "./profile-record.js";

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
const event = (ws: string, over: MessageInitShape<typeof EventSchema>): Event =>
  create(EventSchema, {
    messageId: `erase-${++n}`,
    workspace: ws,
    type: EventType.IDENTIFY,
    receivedAt: timestampFromMs(Date.now()),
    ...over,
  });

/** An erasure over the store whose writes pass `before` first; the deletions it published. */
function erasure(store: ProfileStore, before: (w: StoreWriteStep) => void | Promise<void>) {
  const published: { profileId: string; version: number; mergedFrom: string[] }[] = [];
  const e = new Erasure({
    store,
    writes: beforeWrites(store, before),
    reader: new Resolver(store),
    clock: Date.now,
    publishDeletion: async (p, version) => {
      published.push({ profileId: p.profileId, version, mergedFrom: p.mergedFrom });
    },
    dropState: async () => undefined,
    exclusive: (_key, fn) => fn(),
  });
  return { erasure: e, published };
}

/** Every profile record in the workspace (live or tombstone). */
async function records(store: ProfileStore, ws: string): Promise<ProfileRecord[]> {
  const kv = await new Kvm(nc).open(profileBuckets.profiles);
  const out: ProfileRecord[] = [];
  for await (const key of await kv.keys(`${ws}.>`)) {
    const p = await store.getProfile(ws, key.slice(ws.length + 1));
    if (p !== undefined) out.push(p.value);
  }
  return out;
}

describe("a deletion racing other writers", () => {
  // The erasure read the user's profile; another replica's login then merged it into the device's
  // profile before the erasure wrote anything. The erasure went on with what it had read: it
  // erased the merged-away tombstone, and the survivor kept the user's data.
  it("erases what a merge that landed between its read and its writes brought in", async () => {
    const ws = "erase-merge";
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event(ws, { anonymousId: "anon-1", traits: { device: "phone" } }));
    await resolver.resolve(
      event(ws, { userId: "user-1", traits: { email: "ada@example.org", name: "Ada" } }),
    );

    const g = gate();
    let first = true;
    const { erasure: e, published } = erasure(store, async () => {
      if (first) {
        first = false;
        await g.wait();
      }
    });
    const erasing = e.erase(ws, { type: "user_id", value: "user-1" }, false);
    await g.held;
    // Another replica: the user logs in on the device; the user's profile is merged into it.
    const login = await resolver.resolve(event(ws, { userId: "user-1", anonymousId: "anon-1" }));
    expect(login.kind === "applied" && login.merged).toHaveLength(1);
    g.release();
    await erasing;

    expect(await records(store, ws)).toEqual([]);
    for (const [type, value] of [
      ["user_id", "user-1"],
      ["anonymous_id", "anon-1"],
      ["email", "ada@example.org"],
    ] as const)
      expect(await store.lookup(ws, { type, value }), type).toBeUndefined();
    const device = login.kind === "applied" ? login.profile : undefined;
    expect(published).toEqual([
      { profileId: device?.profileId, version: device!.version + 1, mergedFrom: device?.mergedFrom },
    ]);
  });

  // An event for the profile while it is being erased: it used to be written onto it, under the
  // version the deletion is then published with (dropped downstream as a duplicate id).
  it("makes an event wait while the profile is erased, then start a new profile", async () => {
    const ws = "erase-event";
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(
      event(ws, { userId: "user-2", traits: { email: "grace@example.org", name: "Grace" } }),
    );
    const before = (await resolver.find(ws, { type: "user_id", value: "user-2" }))!.value;

    const g = gate();
    let writes = 0;
    const { erasure: e, published } = erasure(store, async () => {
      if (++writes === 2) await g.wait(); // after the mark
    });
    const erasing = e.erase(ws, { type: "user_id", value: "user-2" }, false);
    await g.held;
    const late = event(ws, { userId: "user-2", traits: { city: "Paris" } });
    await expect(resolver.resolve(late)).rejects.toThrow(WriteConflict);
    g.release();
    await erasing;
    expect(published).toEqual([{ profileId: before.profileId, version: before.version + 1, mergedFrom: [] }]);

    // Redelivered: the user starts afresh, without what was erased.
    const again = await resolver.resolve(late);
    expect(again.kind).toBe("applied");
    const after = (await resolver.find(ws, { type: "user_id", value: "user-2" }))!.value;
    expect(after.traits).toEqual({ city: "Paris" });
    expect(after.identifiers).toEqual([{ type: "user_id", value: "user-2" }]);
  });

  // A deletion that stopped after marking the profile (a crash): events wait; asking again finishes
  // it, publishing under the mark's version.
  it("is finished by asking again after it stopped with the profile marked", async () => {
    const ws = "erase-resume";
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    await resolver.resolve(event(ws, { userId: "user-3", traits: { email: "h@example.org", name: "Hedy" } }));
    const before = (await resolver.find(ws, { type: "user_id", value: "user-3" }))!.value;

    let writes = 0;
    const crashing = erasure(store, () => {
      if (++writes === 2) throw new Error("crashed");
    });
    await expect(crashing.erasure.erase(ws, { type: "email", value: "h@example.org" }, true)).rejects.toThrow(
      "crashed",
    );
    await expect(resolver.resolve(event(ws, { userId: "user-3", traits: { x: 1 } }))).rejects.toThrow(
      WriteConflict,
    );

    const { erasure: e, published } = erasure(store, () => undefined);
    await e.erase(ws, { type: "email", value: "h@example.org" }, true);
    expect(published).toEqual([{ profileId: before.profileId, version: before.version + 1, mergedFrom: [] }]);
    expect(await records(store, ws)).toEqual([]);
    expect((await store.lookup(ws, { type: "email", value: "h@example.org" }))?.value).toEqual({
      suppressed: true,
    });
    expect(
      await resolver.resolve(event(ws, { userId: "user-3", traits: { email: "h@example.org" } })),
    ).toEqual({
      kind: "suppressed",
      profileIds: [],
    });
  });
  // A writer adding a device id to the profile claimed it and stopped before writing; the profile
  // was then erased. The claim, still naming the erased profile's id, was taken over by another
  // customer's login, which put a stand-in there leading to that customer: asking again for the
  // erased profile by its id then found them, and erased them.
  it("keeps an erased profile's id leading nowhere after a claim naming it is taken over", async () => {
    const ws = "erase-claimed";
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store, Date.now, undefined, undefined, { staleClaimMs: 0 });
    const first = await resolver.resolve(event(ws, { userId: "user-4", anonymousId: "anon-4" }));
    if (first.kind === "suppressed") throw new Error("suppressed");
    const erased = first.profile.profileId;
    await store.link(ws, { type: "anonymous_id", value: "device-4" }, { profileId: erased, claimedAt: 1 }, 0);
    const other = await resolver.resolve(event(ws, { userId: "user-5" }));
    if (other.kind === "suppressed") throw new Error("suppressed");
    const { erasure: e } = erasure(store, () => undefined);
    await e.erase(ws, { type: "user_id", value: "user-4" }, false);
    // The other customer logs in on the device.
    await resolver.resolve(event(ws, { userId: "user-5", anonymousId: "device-4" }));
    expect((await resolver.find(ws, { type: "anonymous_id", value: "device-4" }))?.value.profileId).toBe(
      other.profile.profileId,
    );
    expect(await resolver.find(ws, { type: "profile_id", value: erased })).toBeUndefined();
    await expect(e.erase(ws, { type: "profile_id", value: erased }, false)).rejects.toThrow(NoProfile);
    expect((await resolver.find(ws, { type: "user_id", value: "user-5" }))?.value.profileId).toBe(
      other.profile.profileId,
    );
  });
});
