/**
 * Two identity replicas on the same durable consumer, racing on the same
 * customers through different identifiers: no lost update, no second profile
 * for one person, every event applied and published once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, ProfileChangedSchema, ProfileService, type Event } from "@kairos/contracts";
import { createGrpcClient, loadConfig, partitionOf, subjects } from "@kairos/kit";
import { NatsServer, waitFor } from "@kairos/testkit";
import { configSpec, startIdentity, type IdentityHandle } from "./service.js";

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const replicas: IdentityHandle[] = [];

beforeAll(async () => {
  server = await NatsServer.start();
  for (let i = 0; i < 2; i++) {
    replicas.push(
      await startIdentity(
        loadConfig(configSpec, {
          NATS_URL: server.url,
          GRPC_PORT: "0",
          OPS_PORT: "0",
          LOG_LEVEL: "silent",
          // Claims are taken over after 20 ms instead of 5 s: a slow writer (not a dead one) has
          // its claim taken, the race that split customers under heavy load, made to happen often.
          CLAIM_TAKEOVER: process.env.KAIROS_CLAIM_TAKEOVER ?? "20ms",
        }),
      ),
    );
  }
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  for (const r of replicas) await r.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

let n = 0;
function event(over: MessageInitShape<typeof EventSchema>): Event {
  return create(EventSchema, {
    messageId: `rep-${++n}`,
    workspace: "ws",
    type: EventType.TRACK,
    name: "Viewed",
    receivedAt: timestampFromMs(Date.now()),
    ...over,
  });
}

describe("two identity replicas", () => {
  // This split a customer about 1 run in 25 under heavy load: a writer slow between claiming an
  // identifier and writing its new profile had the claim taken over as stale, then wrote the profile
  // anyway. A writer now checks its claims after writing and merges when one was taken
  // (claims.integration.test.ts reproduces it step by step); here takeovers happen often.
  it("never lose an update or split a customer, whichever replica and identifier an event lands on", async () => {
    const CUSTOMERS = 30;
    const sent: Event[] = [];
    for (let c = 0; c < CUSTOMERS; c++) {
      const anon = `rep-anon-${c}`;
      const user = `rep-user-${c}`;
      const email = `rep-${c}@example.org`;
      sent.push(
        event({ anonymousId: anon, type: EventType.PAGE, name: "Home" }),
        event({ userId: user, name: "Opened App" }),
        event({ anonymousId: anon, type: EventType.IDENTIFY, traits: { email, plan: "basic" } }),
        event({ userId: user, type: EventType.IDENTIFY, traits: { email, city: "Paris" } }),
        event({ anonymousId: anon, name: "Added to Cart" }),
        event({ userId: user, anonymousId: anon, type: EventType.IDENTIFY, traits: { first_name: "Ada" } }),
      );
    }
    // Each event on its own identifier's partition, as ingestion does: different subjects, any replica.
    const js = jetstream(nc);
    await Promise.all(
      sent.map((e) =>
        js.publish(
          subjects.events("ws", partitionOf(e.userId !== "" ? e.userId : e.anonymousId, 16)),
          toBinary(EventSchema, e),
          { msgID: `ws:${e.messageId}` },
        ),
      ),
    );
    const ids = new Set(sent.map((e) => e.messageId));
    const changes = await waitFor(
      async () => {
        const info = await jsm.streams.info("PROFILES");
        const out = [];
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const m = await jsm.streams.getMessage("PROFILES", { seq }).catch(() => null);
          if (m !== null) out.push(fromBinary(ProfileChangedSchema, m.data));
        }
        const mine = out.filter((c) => ids.has(c.eventId));
        return new Set(mine.map((c) => c.eventId)).size === ids.size ? mine : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "a change per event" },
    );
    expect(changes).toHaveLength(ids.size);

    const client = createGrpcClient(ProfileService, replicas[0]!.grpcAddress);
    try {
      for (let c = 0; c < CUSTOMERS; c++) {
        const found = [];
        for (const [type, value] of [
          ["anonymous_id", `rep-anon-${c}`],
          ["user_id", `rep-user-${c}`],
          ["email", `rep-${c}@example.org`],
        ] as const) {
          found.push((await client.getProfile({ workspace: "ws", identifier: { type, value } })).profile);
        }
        const [p] = found;
        if (process.env.KAIROS_DEBUG === "1" && p?.traits?.city === undefined) {
          const mine = sent
            .filter((e) => e.userId === `rep-user-${c}` || e.anonymousId === `rep-anon-${c}`)
            .map((e) => e.messageId);
          for (const ch of changes.filter((x) => mine.includes(x.eventId)))
            process.stderr.write(
              `${ch.eventId} -> ${ch.profileId} v${ch.version} merged=${ch.mergedFrom.join(",")} traits=${JSON.stringify(ch.profile?.traits)}\n`,
            );
          process.stderr.write(
            `final ${p?.profileId} v${p?.version} mergedFrom=${p?.mergedFrom.join(",")}\n`,
          );
        }
        expect(new Set(found.map((x) => x?.profileId)).size, `customer ${c}`).toBe(1);
        // Every event applied exactly once to the one profile (merges carry the other profile's events).
        expect(p?.traits).toMatchObject({
          email: `rep-${c}@example.org`,
          plan: "basic",
          city: "Paris",
          first_name: "Ada",
        });
        expect(p?.identifiers).toHaveLength(3);
      }
    } finally {
      client.close();
    }
  });
});
