/**
 * SIGKILL the identity service while events flow, restart it, and check the
 * promise of the mesh: every accepted event is reflected in its profile exactly
 * once, and no action reaches the channel twice.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { fromBinary } from "@bufbuild/protobuf";
import { ProfileChangedSchema, ProfileService } from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";
import { Mesh, NatsServer, sleep, waitFor } from "@kairos/testkit";
import { startChannelEndpoint, type ChannelEndpoint } from "./channel-endpoint.js";

const config = fileURLToPath(new URL("fixtures/mesh.yaml", import.meta.url));
const auth = `Basic ${Buffer.from("bench-http-write-key:").toString("base64")}`;
const CUSTOMERS = 200;
const EVENTS_PER_CUSTOMER = 5;

let nats: NatsServer;
let endpoint: ChannelEndpoint;
let mesh: Mesh;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await NatsServer.start();
  endpoint = await startChannelEndpoint();
  mesh = await Mesh.start({ natsUrl: nats.url, config, webhookUrl: endpoint.url });
  nc = await connect({ servers: nats.url });
}, 120_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await endpoint?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();
});

const run = randomUUID().slice(0, 8);
const userOf = (n: number) => `crash-${run}-${n}`;

function calls(n: number): Record<string, unknown>[] {
  const userId = userOf(n);
  return [
    { type: "identify", userId, traits: { first_name: "Ada", plan: n % 4 === 0 ? "gold" : "basic" } },
    { type: "track", userId, event: "Product Viewed", properties: { sku: "a" } },
    { type: "page", userId, name: "Cart" },
    { type: "track", userId, event: "Product Viewed", properties: { sku: "b" } },
    { type: "track", userId, event: "Order Completed", properties: { order_id: `o-${n}` } },
  ].map((c) => ({ ...c, messageId: `${userId}-${String(c.type)}-${randomUUID()}` }));
}

describe("identity SIGKILLed and restarted while events flow", () => {
  it("reflects every accepted event once and delivers no action twice", async () => {
    // Interleave customers so each batch carries many of them.
    const all: Record<string, unknown>[] = [];
    const perCustomer = Array.from({ length: CUSTOMERS }, (_, n) => calls(n));
    for (let step = 0; step < EVENTS_PER_CUSTOMER; step++) for (const c of perCustomer) all.push(c[step]!);
    const eventIds = new Set(all.map((e) => String(e.messageId)));

    let accepted = 0;
    const batches = [];
    for (let i = 0; i < all.length; i += 20) batches.push(all.slice(i, i + 20));
    for (const [i, batch] of batches.entries()) {
      if (i === Math.floor(batches.length / 3)) await mesh.kill("identity");
      if (i === Math.floor((batches.length * 2) / 3)) await mesh.startService("identity");
      const res = await fetch(`${mesh.httpUrl}/v1/batch`, {
        method: "POST",
        headers: { authorization: auth, "content-type": "application/json" },
        body: JSON.stringify({ batch }),
      });
      expect(res.status).toBe(200);
      accepted += ((await res.json()) as { accepted: number }).accepted;
      await sleep(10);
    }
    expect(accepted).toBe(all.length);

    // Every event produced exactly one ProfileChanged...
    const jsm = await jetstreamManager(nc);
    const seen = new Map<string, number>();
    await waitFor(
      async () => {
        const info = await jsm.streams.info("PROFILES");
        seen.clear();
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const m = await jsm.streams.getMessage("PROFILES", { seq }).catch(() => null);
          if (m === null) continue;
          const id = fromBinary(ProfileChangedSchema, m.data).eventId;
          if (eventIds.has(id)) seen.set(id, (seen.get(id) ?? 0) + 1);
        }
        return seen.size === eventIds.size;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: `a ProfileChanged for each of ${eventIds.size} events` },
    );
    expect([...seen.values()].every((n) => n === 1)).toBe(true);

    // ...and each profile applied its five events once.
    const profiles = createGrpcClient(ProfileService, mesh.grpcAddress("identity"));
    try {
      for (let n = 0; n < CUSTOMERS; n++) {
        const { profile } = await profiles.getProfile({
          workspace: "bench",
          identifier: { type: "user_id", value: userOf(n) },
        });
        expect(profile?.version, userOf(n)).toBe(BigInt(EVENTS_PER_CUSTOMER));
        expect(profile?.traits?.first_name).toBe("Ada");
      }
    } finally {
      profiles.close();
    }

    // One order thank-you per customer and one gold welcome per gold customer, each POSTed once.
    const expected = CUSTOMERS + CUSTOMERS / 4;
    await waitFor(() => endpoint.byKey().size >= expected, {
      timeoutMs: 90_000,
      intervalMs: 200,
      what: `${expected} distinct actions at the channel`,
    });
    await sleep(1500); // a double send would arrive now
    const keys = endpoint.byKey();
    expect(keys.size).toBe(expected);
    const twice = [...keys].filter(([, posts]) => posts.length > 1).map(([k]) => k);
    expect(twice).toEqual([]);
  }, 240_000);
});
