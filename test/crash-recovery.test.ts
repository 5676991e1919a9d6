/**
 * SIGKILL the identity service while events flow, restart it, and check the
 * promise of the mesh: every accepted event is reflected in its profile exactly
 * once, and no action reaches the channel twice.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { Mesh, NatsServer, sleep } from "@kairos/testkit";
import { startChannelEndpoint, type ChannelEndpoint } from "./channel-endpoint.js";
import { expectEachActionOnce, expectOneChangePerEvent, expectProfileVersions } from "./mesh-checks.js";

const config = fileURLToPath(new URL("fixtures/mesh.yaml", import.meta.url));
const auth = `Basic ${Buffer.from("bench-http-write-key:").toString("base64")}`;
const CUSTOMERS = 200;
const EVENTS_PER_CUSTOMER = 5;

let nats: NatsServer;
let endpoint: ChannelEndpoint;
let mesh: Mesh;

beforeAll(async () => {
  nats = await NatsServer.start();
  endpoint = await startChannelEndpoint();
  mesh = await Mesh.start({ natsUrl: nats.url, config, webhookUrl: endpoint.url });
}, 120_000);

afterAll(async () => {
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

    // Every event produced exactly one ProfileChanged, each profile applied its five events once,
    // and each action (a thank-you per order, a welcome per gold customer) reached the channel once.
    await expectOneChangePerEvent(nats.url, eventIds);
    await expectProfileVersions(
      mesh.grpcAddress("identity"),
      "bench",
      Array.from({ length: CUSTOMERS }, (_, n) => userOf(n)),
      EVENTS_PER_CUSTOMER,
    );
    await expectEachActionOnce(endpoint, CUSTOMERS + CUSTOMERS / 4);
  }, 240_000);
});
