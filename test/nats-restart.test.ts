/**
 * SIGKILL the nats-server itself while events flow, start it again on the
 * same store: clients retry what was refused, services reconnect, and still
 * every accepted event is reflected once and no action reaches the channel twice.
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

    const nc: NatsConnection = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const ids = new Set(all.map((e) => String(e.messageId)));
      const seen = new Map<string, number>();
      await waitFor(
        async () => {
          const info = await jsm.streams.info("PROFILES");
          seen.clear();
          for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
            const m = await jsm.streams.getMessage("PROFILES", { seq }).catch(() => null);
            if (m === null) continue;
            const id = fromBinary(ProfileChangedSchema, m.data).eventId;
            if (ids.has(id)) seen.set(id, (seen.get(id) ?? 0) + 1);
          }
          return seen.size === ids.size;
        },
        { timeoutMs: 120_000, intervalMs: 500, what: `a ProfileChanged for each of ${ids.size} events` },
      );
      expect([...seen.values()].every((n) => n === 1)).toBe(true);
    } finally {
      await nc.close();
    }

    const profiles = createGrpcClient(ProfileService, mesh.grpcAddress("identity"));
    try {
      for (let n = 0; n < CUSTOMERS; n++) {
        const { profile } = await profiles.getProfile({
          workspace: "bench",
          identifier: { type: "user_id", value: userOf(n) },
        });
        expect(profile?.version, userOf(n)).toBe(5n);
      }
    } finally {
      profiles.close();
    }

    const expected = CUSTOMERS + CUSTOMERS / 4;
    await waitFor(() => endpoint.byKey().size >= expected, {
      timeoutMs: 120_000,
      intervalMs: 200,
      what: `${expected} distinct actions at the channel`,
    });
    await sleep(1500);
    const twice = [...endpoint.byKey()].filter(([, posts]) => posts.length > 1).map(([k]) => k);
    expect(twice).toEqual([]);
    expect(endpoint.byKey().size).toBe(expected);
  }, 300_000);
});
