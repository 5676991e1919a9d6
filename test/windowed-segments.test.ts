/**
 * Segments over windowed computed traits change as time passes, with no new
 * event: "at least 3 orders in 30 days" exits when the oldest order leaves the
 * window, "added to cart and no order within 30 minutes" exits 30 minutes on.
 * Identity (which re-publishes a profile when one of its windows slides, from a
 * durable timer) and segmentation are real, on one nats-server; time is moved
 * through the services' injectable clock, not slept through.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { fromBinary } from "@bufbuild/protobuf";
import {
  MembershipChange,
  SegmentMembershipChangedSchema,
  SegmentService,
  type SegmentMembershipChanged,
} from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";
import { collect, NatsServer, waitFor } from "@kairos/testkit";
import { startCoreMesh, type CoreMesh } from "./in-process.js";

const config = fileURLToPath(new URL("fixtures/windowed-segments.yaml", import.meta.url));
const MINUTE = 60_000;
const DAY = 86_400_000;
let nats: NatsServer;
let nc: NatsConnection;
let mesh: CoreMesh | undefined;
let changes: SegmentMembershipChanged[] = [];
/** How far the mesh's clock is ahead of the wall clock. */
let offset = 0;

beforeAll(async () => {
  nats = await NatsServer.start();
  mesh = await startCoreMesh(nats.url, config, { clock: () => Date.now() + offset });
  nc = await connect({ servers: nats.url });
  changes = collect(nc, "kairos.segments.>", (b) => fromBinary(SegmentMembershipChangedSchema, b));
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await nats?.[Symbol.asyncDispose]();
});

const track = (userId: string, event: string) => mesh!.send("shop-server-key", "track", { userId, event });

const change = (segment: string, kind: MembershipChange) =>
  waitFor(() => changes.find((c) => c.segment === segment && c.change === kind), {
    timeoutMs: 20_000,
    what: `${segment} ${MembershipChange[kind]}`,
  });

describe("windowed segments", () => {
  it("exit when time passes, without a new event, and say so", async () => {
    const run = randomUUID().slice(0, 6);
    for (let i = 0; i < 3; i++) await track(`frequent-${run}`, "Order Completed");
    await track(`cart-${run}`, "Product Added");
    const frequent = await change("frequent-buyer", MembershipChange.ENTERED);
    const cart = await change("open-cart", MembershipChange.ENTERED);

    // 31 minutes on: the cart has left its 30-minute window (buckets of one minute).
    offset = 31 * MINUTE;
    const cartExit = await change("open-cart", MembershipChange.EXITED);
    expect(cartExit.profileId).toBe(cart.profileId);
    expect(cartExit.reason).toMatch(/time passed/);
    expect(
      changes.filter((c) => c.segment === "frequent-buyer" && c.change === MembershipChange.EXITED),
    ).toEqual([]);

    // 31 days on: the orders have left the 30-day window (buckets of a UTC day).
    offset = 31 * DAY;
    const frequentExit = await change("frequent-buyer", MembershipChange.EXITED);
    expect(frequentExit.profileId).toBe(frequent.profileId);
    expect(frequentExit.reason).toMatch(/time passed/);

    // The served memberships agree.
    const segments = createGrpcClient(SegmentService, mesh!.grpc.segmentation);
    try {
      for (const profileId of [cart.profileId, frequent.profileId]) {
        const res = await segments.listMemberships({ workspace: "shop", profileId });
        expect(res.memberships).toEqual([]);
      }
    } finally {
      segments.close();
    }
    // Each exit once, though every replica's timer and every tick could have fired it.
    expect(changes.filter((c) => c.change === MembershipChange.EXITED)).toHaveLength(2);
  });
});
