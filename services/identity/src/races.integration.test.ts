/**
 * Two resolvers on one real KV store, each reading through its own cache (which the other's
 * writes make stale), each resolving its own stream of random events for the same few customers
 * (shared devices, emails, two users, aliases), with a random pause before every read and write
 * so that they interleave differently on every run. Whatever the
 * interleaving: every event is counted once on a live profile; every identifier a live profile
 * holds leads to it, and to no other; and no profile holds two user ids (the default limit),
 * though each replica checks the limits against what it read, and the other may be writing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, type Event } from "@kairos/contracts";
import { computedTraitSchema } from "@kairos/mesh-config";
import { NatsServer } from "@kairos/testkit";
import { Resolver } from "./resolver.js";
import { beforeReads, beforeWrites } from "./test-stores.js";
import { CachingProfileStore, KvProfileStore, WriteConflict, profileBuckets } from "./store.js";
import { compileRules } from "./identity-rules.js";
import { computedValues } from "./computed.js";
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

/** mulberry32: a small seeded generator, so that a failing run can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rules = compileRules(undefined, [
  computedTraitSchema.parse({ name: "events", op: "count", event: "*" }),
]);
const RUNS = 80;
const EVENTS_PER_REPLICA = 6;

describe("two resolvers racing on random events", () => {
  it(`count every event once, keep every identifier on one profile and within the limits (${RUNS} runs)`, async () => {
    const store = await KvProfileStore.open(nc);
    const profilesKv = await new Kvm(nc).open(profileBuckets.profiles);
    let n = 0;
    for (let run = 0; run < RUNS; run++) {
      const seed = 1000 + run;
      const rnd = random(seed);
      const ws = `race${run}`;
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
      const next = (): Event => {
        const e: MessageInitShape<typeof EventSchema> = {
          messageId: `race-${++n}`,
          workspace: ws,
          type: EventType.IDENTIFY,
          receivedAt: timestampFromMs(Date.now()),
          anonymousId: pick(["a1", "a2", "a3"]),
        };
        if (rnd() < 0.15) {
          // A login linking an earlier id (a device, the other user, or one never seen).
          e.type = EventType.ALIAS;
          e.userId = pick(["u1", "u2"]);
          e.previousId = pick(["a1", "a2", "a3", "u1", "u2", `p${n}`]);
          return create(EventSchema, e);
        }
        if (rnd() < 0.5) e.userId = pick(["u1", "u2"]);
        if (rnd() < 0.3) e.traits = { email: pick(["e1@example.org", "e2@example.org"]) };
        return create(EventSchema, e);
      };
      /** The real store with a pause of up to 3 ms before each write, and some reads. */
      const pause = () => new Promise<void>((r) => setTimeout(r, rnd() * 3));
      const slowed = () => beforeReads(beforeWrites(store, pause), () => (rnd() < 0.3 ? pause() : undefined));
      const streams = [0, 1].map(() => Array.from({ length: EVENTS_PER_REPLICA }, next));
      await Promise.all(
        streams.map(async (events) => {
          const resolver = new Resolver(new CachingProfileStore(slowed()), Date.now, () => rules, undefined, {
            fresh: store,
            staleClaimMs: 50,
          });
          for (const e of events) {
            // A resolution that gave up (a claim still being written) is redelivered, as the bus does.
            for (let delivery = 1; ; delivery++) {
              try {
                await resolver.resolve(e);
                break;
              } catch (err) {
                if (!(err instanceof WriteConflict) || delivery >= 20) throw err;
                await new Promise((r) => setTimeout(r, 20));
              }
            }
          }
        }),
      );

      const live: ProfileRecord[] = [];
      for await (const key of await profilesKv.keys(`${ws}.>`)) {
        const p = await store.getProfile(ws, key.slice(ws.length + 1));
        if (p !== undefined && p.value.mergedInto === undefined && p.value.neverWritten !== true)
          live.push(p.value);
      }
      const counted = live.reduce(
        (sum, p) => sum + Number(computedValues(p.computed ?? {}, rules.computed, Date.now()).events ?? 0),
        0,
      );
      expect(counted, `seed ${seed}: events counted on live profiles`).toBe(2 * EVENTS_PER_REPLICA);
      const reader = new Resolver(store, Date.now, () => rules);
      const holders = new Map<string, string[]>();
      for (const p of live) {
        const userIds = p.identifiers.filter((id) => id.type === "user_id").map((id) => id.value);
        expect(
          userIds.length,
          `seed ${seed}: user ids of ${p.profileId}: ${userIds.join(", ")}`,
        ).toBeLessThan(2);
        for (const id of p.identifiers) {
          const key = `${id.type}:${id.value}`;
          holders.set(key, [...(holders.get(key) ?? []), p.profileId]);
          const found = await reader.find(ws, id);
          expect(found?.value.profileId, `seed ${seed}: ${key} leads to its profile`).toBe(p.profileId);
        }
      }
      for (const [key, ps] of holders) expect(ps, `seed ${seed}: profiles holding ${key}`).toHaveLength(1);
    }
  });
});
