/**
 * SIGKILL the nats-server itself while events flow, start it again on the
 * same store: clients retry what was refused, services reconnect, and still
 * every accepted event is reflected once and no action reaches the channel twice.
 */
import { afterAll, beforeAll, describe, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { Mesh, NatsServer, sleep } from "@kairos/testkit";
import { startChannelEndpoint, type ChannelEndpoint } from "./channel-endpoint.js";
import { expectEachActionOnce, expectOneChangePerEvent, expectProfileVersions } from "./mesh-checks.js";

const config = fileURLToPath(new URL("fixtures/mesh.yaml", import.meta.url));
const auth = `Basic ${Buffer.from("bench-http-write-key:").toString("base64")}`;
const CUSTOMERS = 100;

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
const userOf = (n: number) => `nats-${run}-${n}`;

/** Posts a batch until ingestion says it is stored, as an SDK does: same message ids every time. */
async function sendDurably(batch: unknown[]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(`${mesh.httpUrl}/v1/batch`, {
      method: "POST",
      headers: { authorization: auth, "content-type": "application/json" },
      body: JSON.stringify({ batch }),
      signal: AbortSignal.timeout(10_000),
    }).catch(() => undefined);
    if (res?.status === 200) return;
    if (attempt % 25 === 0 && process.env.KAIROS_DEBUG === "1") {
      process.stderr.write(
        `batch refused (attempt ${attempt}): ${res?.status ?? "no answer"} ${res ? await res.text() : ""}\n`,
      );
    }
    if (attempt > 300) throw new Error(`batch not accepted after ${attempt} attempts (last ${res?.status})`);
    await sleep(200);
  }
}

describe("nats-server SIGKILLed and restarted while events flow", () => {
  it("reflects every accepted event once and delivers no action twice", async () => {
    const all: Record<string, unknown>[] = [];
    for (let step = 0; step < 5; step++) {
      for (let n = 0; n < CUSTOMERS; n++) {
        const userId = userOf(n);
        const call = [
          { type: "identify", userId, traits: { first_name: "Ada", plan: n % 4 === 0 ? "gold" : "basic" } },
          { type: "track", userId, event: "Product Viewed" },
          { type: "page", userId, name: "Cart" },
          { type: "track", userId, event: "Product Viewed" },
          { type: "track", userId, event: "Order Completed", properties: { order_id: `o-${n}` } },
        ][step]!;
        all.push({ ...call, messageId: `${userId}-${step}` });
      }
    }
    const batches: unknown[][] = [];
    for (let i = 0; i < all.length; i += 20) batches.push(all.slice(i, i + 20));
    for (const [i, batch] of batches.entries()) {
      if (i === Math.floor(batches.length / 3)) {
        await nats.kill();
        // The sender keeps retrying its batch while the server is down; bring it back meanwhile.
        setTimeout(() => void nats.restart(), 3000);
      }
      await sendDurably(batch);
      if (process.env.KAIROS_DEBUG === "1") process.stderr.write(`batch ${i} stored\n`);
    }

    // Every event produced exactly one ProfileChanged, each profile applied its five events once,
    // and each action (a thank-you per order, a welcome per gold customer) reached the channel once.
    await expectOneChangePerEvent(nats.url, new Set(all.map((e) => String(e.messageId))));
    await expectProfileVersions(
      mesh.grpcAddress("identity"),
      "bench",
      Array.from({ length: CUSTOMERS }, (_, n) => userOf(n)),
      5,
    );
    await expectEachActionOnce(endpoint, CUSTOMERS + CUSTOMERS / 4);
  }, 300_000);
});
