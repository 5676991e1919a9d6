/**
 * GDPR deletion end to end: a customer with a segment membership, a deferred
 * action and a date-journey timer is deleted through identity, and every
 * downstream service forgets them; re-identifying afterwards starts a fresh
 * profile, unless the deletion asked for suppression. Ingestion, identity,
 * segmentation and suppression are real, on one nats-server.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { fromBinary } from "@bufbuild/protobuf";
import {
  OutcomeSchema,
  OutcomeStatus,
  ProfileChangedSchema,
  ProfileService,
  SuppressionService,
  type Outcome,
  type ProfileChanged,
} from "@kairos/contracts";
import { createGrpcClient, keyToken } from "@kairos/kit";
import { collect, NatsServer, sleep, waitFor } from "@kairos/testkit";
import { startCoreMesh, type CoreMesh } from "./in-process.js";

const config = fileURLToPath(new URL("fixtures/deletion.yaml", import.meta.url));
let nats: NatsServer;
let nc: NatsConnection;
let mesh: CoreMesh | undefined;
let outcomes: Outcome[] = [];
let changes: ProfileChanged[] = [];

beforeAll(async () => {
  nats = await NatsServer.start();
  mesh = await startCoreMesh(nats.url, config);
  nc = await connect({ servers: nats.url });
  outcomes = collect(nc, "kairos.outcomes.>", (b) => fromBinary(OutcomeSchema, b));
  changes = collect(nc, "kairos.profiles.>", (b) => fromBinary(ProfileChangedSchema, b));
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await nats?.[Symbol.asyncDispose]();
});

const send = (call: "track" | "identify", body: Record<string, unknown>) =>
  mesh!.send("shop-server-key", call, body);
const profileOf = (userId: string) => mesh!.profile("shop", "user_id", userId);
const memberships = (profileId: string) => mesh!.memberships("shop", profileId);

/** A gold customer with a birthday and an abandoned cart waiting its hour. */
async function customer(userId: string) {
  await send("identify", {
    userId,
    traits: { plan: "gold", birthday: "1990-05-17", email: `${userId}@example.org` },
  });
  await send("track", { userId, event: "Product Added", properties: { sku: "boots" } });
  const profile = await waitFor(() => profileOf(userId));
  await waitFor(async () => (await memberships(profile.profileId)).includes("gold"));
  const deferred = await waitFor(() =>
    outcomes.find((o) => o.profileId === profile.profileId && o.status === OutcomeStatus.DEFERRED),
  );
  // Suppression recorded its decision (deferred to the hour): `Explain` tells it.
  await waitFor(async () => (await explain(profile.profileId)).some((d) => d.actionId === deferred.actionId));
  const timers = await new Kvm(nc).open("journey-timers");
  const timerKey = ["shop", "birthday", profile.profileId].map(keyToken).join(".");
  await waitFor(async () => (await timers.get(timerKey))?.operation === "PUT");
  return { profileId: profile.profileId, actionId: deferred.actionId, timers, timerKey };
}

async function explain(profileId: string) {
  const client = createGrpcClient(SuppressionService, mesh!.grpc.suppression);
  try {
    return (await client.explain({ workspace: "shop", profileId, channel: "webhook" })).decisions;
  } finally {
    client.close();
  }
}

async function deleteProfile(userId: string, suppress: boolean) {
  const client = createGrpcClient(ProfileService, mesh!.grpc.identity);
  try {
    return await client.deleteProfile({
      workspace: "shop",
      identifier: { type: "email", value: `${userId}@example.org` },
      suppress,
    });
  } finally {
    client.close();
  }
}

describe("deleting a customer", () => {
  it("is honoured by every service: membership, deferred action, date timer; re-identifying starts afresh", async () => {
    const user = `gdpr-${randomUUID().slice(0, 6)}`;
    const c = await customer(user);
    const startedAt = Date.now();
    const res = await deleteProfile(user, false);
    expect(res.profileId).toBe(c.profileId);
    expect(res.identifiersRemoved).toBe(2);

    await waitFor(async () => (await profileOf(user)) === undefined, { timeoutMs: 60_000 });
    await waitFor(async () => (await memberships(c.profileId)).length === 0, { timeoutMs: 60_000 });
    const withdrawn = await waitFor(
      () => outcomes.find((o) => o.actionId === c.actionId && o.status === OutcomeStatus.CANCELLED),
      { timeoutMs: 60_000 },
    );
    expect(withdrawn.reason).toBe("profile_deleted");
    await waitFor(async () => (await c.timers.get(c.timerKey))?.operation !== "PUT", { timeoutMs: 60_000 });
    // What suppression decided about them is erased; only the withdrawal the deletion caused is told.
    const told = await explain(c.profileId);
    expect(told.map((d) => d.reason)).toEqual(["profile_deleted"]);
    expect(told[0]?.actionId).toBe(c.actionId);
    console.log(`deletion honoured everywhere in ${Date.now() - startedAt} ms`);

    // Back again, without suppression: a new profile that knows nothing of the old one.
    await send("identify", { userId: user, traits: { first_name: "Ada" } });
    const fresh = await waitFor(() => profileOf(user));
    expect(fresh.traits).toEqual({ first_name: "Ada" });
    expect(await memberships(fresh.profileId)).toEqual([]);
  });

  it("erases the profiles merged into the deleted one, which were kept for unmerge", async () => {
    const user = `gdpr-m-${randomUUID().slice(0, 6)}`;
    const anon = `anon-${randomUUID().slice(0, 6)}`;
    await mesh!.send("shop-server-key", "track", { anonymousId: anon, event: "Product Viewed" });
    await send("track", { userId: user, event: "Product Viewed" });
    await waitFor(() => mesh!.profile("shop", "anonymous_id", anon));
    await waitFor(() => profileOf(user));
    // Browsing anonymously, then signed in: the identify that links the two merges them.
    await send("identify", { userId: user, anonymousId: anon, traits: { email: `${user}@example.org` } });
    const merged = await waitFor(async () => {
      const p = await profileOf(user);
      return p !== undefined && p.mergedFrom.length > 0 ? p : undefined;
    });
    const stored = await new Kvm(nc).open("profiles");
    const keys = [merged.profileId, ...merged.mergedFrom].map((id) => `shop.${id}`);
    for (const k of keys) expect((await stored.get(k))?.operation).toBe("PUT");

    await deleteProfile(user, false);
    await waitFor(async () => (await profileOf(user)) === undefined);
    for (const k of keys) expect((await stored.get(k))?.operation, k).not.toBe("PUT");
    const deletion = await waitFor(() => changes.find((c) => c.profileId === merged.profileId && c.deleted));
    expect(deletion.mergedFrom).toEqual(merged.mergedFrom);
  });

  it("with suppression, drops the customer's later events instead of re-creating them", async () => {
    const user = `gdpr-s-${randomUUID().slice(0, 6)}`;
    await customer(user);
    await deleteProfile(user, true);
    await waitFor(async () => (await profileOf(user)) === undefined);
    const again = await send("identify", { userId: user, traits: { first_name: "Bea" } });
    // A later event of someone else has been through identity: the suppressed one went before it.
    const marker = `marker-${randomUUID().slice(0, 6)}`;
    await send("identify", { userId: marker });
    await waitFor(() => profileOf(marker));
    await sleep(500);
    expect(changes.some((ch) => ch.eventId === again)).toBe(false);
    expect(await profileOf(user)).toBeUndefined();
  });
});
