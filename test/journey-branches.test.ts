/**
 * Journeys with condition branches, decided when the wait is over on the profile
 * as it is then (not as it was at the trigger), nested branches with their own
 * waits, an exit that stops a journey between steps, and a once-per-window
 * re-entry. Identity, segmentation (durable branch timers, profile lookups over
 * gRPC) and ingestion are real, on one nats-server; time moves through the
 * services' injectable clock.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { fromBinary } from "@bufbuild/protobuf";
import { Kvm } from "@nats-io/kv";
import { CancellationSchema, IntentSchema, type Cancellation, type Intent } from "@kairos/contracts";
import { collect, NatsServer, sleep, waitFor } from "@kairos/testkit";
import { startCoreMesh, type CoreMesh } from "./in-process.js";

const config = fileURLToPath(new URL("fixtures/journey-branches.yaml", import.meta.url));
const MINUTE = 60_000;
const DAY = 86_400_000;
let nats: NatsServer;
let nc: NatsConnection;
let mesh: CoreMesh | undefined;
let intents: Intent[] = [];
let cancellations: Cancellation[] = [];
/** How far the mesh's clock is ahead of the wall clock. */
let offset = 0;

beforeAll(async () => {
  nats = await NatsServer.start();
  mesh = await startCoreMesh(nats.url, config, { clock: () => Date.now() + offset });
  nc = await connect({ servers: nats.url });
  intents = collect(nc, "kairos.intents.>", (b) => fromBinary(IntentSchema, b));
  cancellations = collect(nc, "kairos.cancels.>", (b) => fromBinary(CancellationSchema, b));
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await nats?.[Symbol.asyncDispose]();
});

const send = (call: "track" | "identify", body: Record<string, unknown>) =>
  mesh!.send("shop-server-key", call, body);
const profileOf = (userId: string) => mesh!.profile("shop", "user_id", userId);

const profileIdOf = (userId: string): Promise<string> =>
  waitFor(async () => (await profileOf(userId))?.profileId);

const of = (profileId: string, journey: string) =>
  intents.filter((i) => i.profileId === profileId && i.journey === journey);
const routes = (profileId: string) =>
  of(profileId, "cart-recovery").map((i) => (i.payload as { route?: string }).route);

describe("journeys with branches", () => {
  it("take the arm that holds when the wait is over, wait again in nested branches, and stop on exit", async () => {
    const run = randomUUID().slice(0, 6);
    const [plain, upgraded, buyer] = [`plain-${run}`, `upgraded-${run}`, `buyer-${run}`];
    await send("identify", { userId: plain, traits: { first_name: "Ada" } });
    for (const u of [plain, upgraded, buyer])
      await send("track", { userId: u, event: "Product Added", properties: { sku: "boots" } });
    // During the wait: one customer goes gold, one buys (the journey's exit).
    await send("identify", { userId: upgraded, traits: { plan: "gold" } });
    await send("track", { userId: buyer, event: "Order Completed", properties: { revenue: 80 } });
    const p = await profileIdOf(plain);
    const u = await profileIdOf(upgraded);
    const b = await profileIdOf(buyer);
    // Two returning customers fill a cart anonymously and log in (the cart's profile is merged
    // into theirs); one of them then buys. The journey went with the customer through the merge.
    const anonymousCart = async (userId: string) => {
      await send("identify", { userId, traits: { first_name: "Bo" } });
      await profileIdOf(userId);
      const anonymousId = `anon-${userId}`;
      await send("track", { anonymousId, event: "Product Added", properties: { sku: "hat" } });
      const cartProfile = await waitFor(
        async () => (await mesh!.profile("shop", "anonymous_id", anonymousId))?.profileId,
      );
      await send("identify", { userId, anonymousId });
      await waitFor(async () => (await profileOf(userId))?.mergedFrom.includes(cartProfile));
      return cartProfile;
    };
    const loggedIn = await anonymousCart(`logged-in-${run}`);
    const loggedInBuyer = await anonymousCart(`logged-in-buyer-${run}`);
    await send("track", { userId: `logged-in-buyer-${run}`, event: "Order Completed", properties: {} });
    const survivor = await profileIdOf(`logged-in-buyer-${run}`);
    // Before time moves on: the five starts are waiting, and the buyers' exits are recorded.
    const steps = await new Kvm(nc).open("journey-steps");
    await waitFor(async () => (await steps.status()).values === 5);
    await waitFor(() =>
      cancellations.some((c) => c.profileId === survivor && c.reason.startsWith("exit cart-recovery")),
    );
    await waitFor(() =>
      cancellations.some((c) => c.profileId === b && c.reason.startsWith("exit cart-recovery")),
    );
    expect(routes(p)).toEqual([]); // nothing before the hour is over

    offset = 61 * MINUTE;
    await waitFor(() => routes(p).length === 1 && routes(u).length === 1, { timeoutMs: 20_000 });
    // The merged-away cart's start goes on for the customer who did not buy (decided on the
    // profile identity answers with, their own), and stops for the one who did.
    await waitFor(() => routes(loggedIn).length === 1, { timeoutMs: 20_000 });
    expect(of(loggedIn, "cart-recovery")[0]).toMatchObject({ payload: { route: "email", name: "Bo" } });
    expect(of(p, "cart-recovery")[0]).toMatchObject({
      step: "branch 1",
      payload: { route: "email", name: "Ada" },
      cancelKeys: [`journey:cart-recovery:${p}`],
    });
    // Gold by then, though not at the trigger: the call arm, rendered with the trigger's event.
    expect(of(u, "cart-recovery")[0]).toMatchObject({
      step: "branch 0",
      payload: { route: "call", sku: "boots" },
    });

    // A day later the email arm's own branches: no order in two days, so the last chance.
    offset = 61 * MINUTE + DAY + MINUTE;
    await waitFor(() => routes(p).length === 2, { timeoutMs: 20_000 });
    expect(routes(p)).toEqual(["email", "last-chance"]);
    await sleep(1000);
    // The gold arm has no further steps, and the buyer left the journey before any.
    expect(routes(u)).toEqual(["call"]);
    expect(routes(b)).toEqual([]);
    expect(routes(loggedInBuyer)).toEqual([]);
    // Each intent once, with its own deterministic id.
    const ids = intents.filter((i) => i.journey === "cart-recovery").map((i) => i.actionId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("re-enters a once-per-window journey only when the window has passed", async () => {
    const user = `tips-${randomUUID().slice(0, 6)}`;
    await send("track", { userId: user, event: "Tip Requested", properties: { topic: "sizes" } });
    const id = await profileIdOf(user);
    await waitFor(() => of(id, "weekly-tip").length === 1);
    await send("track", { userId: user, event: "Tip Requested", properties: { topic: "returns" } });
    await sleep(1000);
    expect(of(id, "weekly-tip")).toHaveLength(1);
    offset += 8 * DAY;
    await send("track", { userId: user, event: "Tip Requested", properties: { topic: "care" } });
    await waitFor(() => of(id, "weekly-tip").length === 2);
    expect(of(id, "weekly-tip").map((i) => i.payload?.tip)).toEqual(["sizes", "care"]);
  });

  it("decides a date journey's branches on the day, on the profile as it is then", async () => {
    const user = `bday-${randomUUID().slice(0, 6)}`;
    const day = new Date(Date.now() + offset + 3 * DAY).toISOString().slice(5, 10); // MM-DD, in 3 days
    await send("identify", { userId: user, traits: { birthday: day, plan: "free" } });
    const id = await profileIdOf(user);
    const timers = await new Kvm(nc).open("journey-timers");
    await waitFor(async () => (await timers.get(`shop.birthday.${id}`))?.operation === "PUT");
    // Gold by the day, though not when the date was set.
    await send("identify", { userId: user, traits: { plan: "gold" } });
    await waitFor(async () => (await profileOf(user))?.traits?.plan === "gold");
    offset += 4 * DAY;
    const got = await waitFor(() => of(id, "birthday")[0], { timeoutMs: 20_000 });
    expect(got).toMatchObject({ step: "branch 0", payload: { route: "call" } });
  });
});
