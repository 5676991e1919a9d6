/**
 * The right moment, end to end: an abandoned-cart reminder waits (here 2 s),
 * and a purchase in between cancels it — through ingestion, identity,
 * segmentation (journey wait and exit), suppression (durable deferral,
 * cancellation) and the webhook dispatcher, all real, on one nats-server.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { fromBinary } from "@bufbuild/protobuf";
import {
  CancellationSchema,
  OutcomeSchema,
  OutcomeStatus,
  type Cancellation,
  type Outcome,
} from "@kairos/contracts";
import { loadConfig } from "@kairos/kit";
import { collect, NatsServer, sleep, waitFor } from "@kairos/testkit";
import * as dispatcher from "@kairos/dispatcher-webhook";
import { startChannelEndpoint, type ChannelEndpoint } from "./channel-endpoint.js";
import { startCoreMesh, type CoreMesh } from "./in-process.js";

const config = fileURLToPath(new URL("fixtures/abandoned-cart.yaml", import.meta.url));
let nats: NatsServer;
let nc: NatsConnection;
let endpoint: ChannelEndpoint;
let mesh: CoreMesh | undefined;
let outcomes: Outcome[] = [];
let cancellations: Cancellation[] = [];

beforeAll(async () => {
  nats = await NatsServer.start();
  endpoint = await startChannelEndpoint();
  mesh = await startCoreMesh(nats.url, config);
  await mesh.add(
    dispatcher.startDispatcherWebhook(
      loadConfig(dispatcher.configSpec, { ...mesh.base, WEBHOOK_URL: endpoint.url }),
    ),
  );
  nc = await connect({ servers: nats.url });
  outcomes = collect(nc, "kairos.outcomes.>", (b) => fromBinary(OutcomeSchema, b));
  cancellations = collect(nc, "kairos.cancels.>", (b) => fromBinary(CancellationSchema, b));
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await endpoint?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();
});

const track = (userId: string, event: string, properties: Record<string, unknown>) =>
  mesh!.send("shop-server-key", "track", { userId, event, properties });

describe("an abandoned-cart reminder", () => {
  it("reaches the customer who did not buy after the wait, and never the one who bought in between", async () => {
    const run = randomUUID().slice(0, 6);
    const buyer = `buyer-${run}`;
    const browser = `browser-${run}`;
    const addedAt = Date.now();
    await track(buyer, "Product Added", { sku: "shoes" });
    await track(browser, "Product Added", { sku: "socks" });
    // Both reminders are held by suppression until their time.
    await waitFor(() => outcomes.filter((o) => o.status === OutcomeStatus.DEFERRED).length >= 2, {
      timeoutMs: 20_000,
    });
    await track(buyer, "Order Completed", { order_id: "o-1", revenue: 89 });

    const post = await waitFor(
      () => endpoint.posts.find((p) => (p.body.payload as { sku?: string }).sku === "socks"),
      {
        timeoutMs: 20_000,
      },
    );
    expect(post.receivedAt - addedAt).toBeGreaterThanOrEqual(2000); // not before the wait
    const cancelled = await waitFor(() =>
      outcomes.find((o) => o.status === OutcomeStatus.CANCELLED && o.journey === "abandoned-cart"),
    );
    expect(cancelled.profileId).not.toBe(post.body.profile_id);
    expect(cancellations.some((c) => c.reason.startsWith("exit abandoned-cart: event Order Completed"))).toBe(
      true,
    );
    // Give a wrongly surviving reminder time to arrive: it must not.
    await sleep(1500);
    expect(endpoint.posts.filter((p) => (p.body.payload as { sku?: string }).sku === "shoes")).toEqual([]);
  });
});

describe("an abandoned-cart reminder of a returning customer who added to the cart before logging in", () => {
  // The cart was filled anonymously (a profile of its own); the login merges that profile into the
  // customer's older one, which survives. The reminder follows the customer through the merge.
  const anonymousCart = async (userId: string, anonymousId: string, sku: string) => {
    await mesh!.send("shop-server-key", "identify", { userId, traits: { name: userId } });
    await waitFor(() => mesh!.profile("shop", "user_id", userId), { timeoutMs: 20_000 });
    const deferredBefore = outcomes.filter((o) => o.status === OutcomeStatus.DEFERRED).length;
    const addedAt = Date.now();
    await mesh!.send("shop-server-key", "track", {
      anonymousId,
      event: "Product Added",
      properties: { sku },
    });
    await waitFor(() => outcomes.filter((o) => o.status === OutcomeStatus.DEFERRED).length > deferredBefore, {
      timeoutMs: 20_000,
    });
    await mesh!.send("shop-server-key", "identify", { userId, anonymousId });
    // The login merged the cart's profile into the customer's.
    await waitFor(
      async () => {
        const p = await mesh!.profile("shop", "anonymous_id", anonymousId);
        return p !== undefined && p.identifiers.some((i) => i.type === "user_id" && i.value === userId) && p;
      },
      { timeoutMs: 20_000 },
    );
    return addedAt;
  };
  const postsOf = (sku: string) =>
    endpoint.posts.filter((p) => (p.body.payload as { sku?: string }).sku === sku);

  it("still reaches them after the wait when they logged in without buying", async () => {
    const run = randomUUID().slice(0, 6);
    const addedAt = await anonymousCart(`returning-${run}`, `anon-${run}`, `scarf-${run}`);
    const post = await waitFor(() => postsOf(`scarf-${run}`)[0], { timeoutMs: 20_000 });
    expect(post.receivedAt - addedAt).toBeGreaterThanOrEqual(2000);
    await sleep(1000);
    expect(postsOf(`scarf-${run}`)).toHaveLength(1);
  });

  it("never reaches them when they bought after logging in", async () => {
    const run = randomUUID().slice(0, 6);
    const userId = `loyal-${run}`;
    await anonymousCart(userId, `anon-${run}`, `hat-${run}`);
    await track(userId, "Order Completed", { order_id: `o-${run}`, revenue: 20 });
    await sleep(3500); // past the wait: a surviving reminder would have arrived
    expect(postsOf(`hat-${run}`)).toEqual([]);
  });
});
