/**
 * A claim taken over from a writer that was slow, not dead: the split that two
 * replicas made under heavy load. Two resolvers on one real KV store; the first
 * is held between claiming its identifiers and writing its new profile while the
 * second takes the claim over. The customer must end as one profile. And a merge
 * stopped half-way (a crash between repointing identifiers and writing the survivor)
 * is finished by the next reader.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, type Event } from "@kairos/contracts";
import { NatsServer } from "@kairos/testkit";
import { Resolver } from "./resolver.js";
import { KvProfileStore, type ProfileStore } from "./store.js";
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
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const held = new Promise<void>((r) => (reached = r));
  const wrapped: ProfileStore = Object.create(store) as ProfileStore;
  wrapped.putProfile = async (p: ProfileRecord, revision: number) => {
    if (revision === 0) {
      reached();
      await gate;
    }
    return store.putProfile(p, revision);
  };
  return { store: wrapped, held, release };
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

  // A merge repoints the identifiers first, then writes the survivor, then retires the merged
  // profile. A writer stopped between the first two (a crash, or, with two replicas, each of two
  // writers stopped by the other half-way through) left every identifier pointing at the survivor
  // and the merged profile, with what only it held, where nothing led any more.
  it("a merge stopped after repointing the identifiers is finished by the next reader, nothing lost", async () => {
    const store = await KvProfileStore.open(nc);
    const resolver = new Resolver(store);
    const crashing: ProfileStore = Object.create(store) as ProfileStore;
    crashing.putProfile = async (p: ProfileRecord, revision: number) => {
      if (p.mergedFrom.length > 0) throw new Error("crashed before writing the survivor");
      return store.putProfile(p, revision);
    };

    await resolver.resolve(event({ anonymousId: "anon-e", traits: { plan: "basic" } }));
    await resolver.resolve(event({ userId: "user-e", traits: { email: "e@example.org", city: "Paris" } }));
    const userProfile = (await resolver.find("ws", { type: "user_id", value: "user-e" }))!.value.profileId;
    const login = event({ userId: "user-e", anonymousId: "anon-e", traits: { first_name: "Ada" } });
    await expect(new Resolver(crashing).resolve(login)).rejects.toThrow(/crashed/);

    // The redelivered login: every identifier already points at the anonymous profile.
    const r = await resolver.resolve(login);
    expect(r.kind).toBe("applied");
    if (r.kind === "suppressed") return;
    expect(r.merged).toEqual([userProfile]);
    for (const id of [
      { type: "user_id", value: "user-e" },
      { type: "email", value: "e@example.org" },
      { type: "anonymous_id", value: "anon-e" },
    ]) {
      const p = await resolver.find("ws", id);
      expect(p?.value.profileId, id.type).toBe(r.profile.profileId);
      expect(p?.value.traits).toMatchObject({ plan: "basic", city: "Paris", first_name: "Ada" });
    }
    expect((await store.getProfile("ws", userProfile))?.value.mergedInto).toBe(r.profile.profileId);

    // Once the merged profile leads to the survivor, the next event through an identifier forgets it.
    await resolver.resolve(event({ userId: "user-e", anonymousId: "anon-e", traits: { plan: "pro" } }));
    for (const type of ["user_id", "anonymous_id"] as const) {
      const e = await store.lookup("ws", { type, value: type === "user_id" ? "user-e" : "anon-e" });
      expect(e?.value, type).not.toHaveProperty("from");
    }
  });
});
