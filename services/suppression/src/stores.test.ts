/** The KV adapter against a real nats-server: compare-and-set contact records, deferrals, decisions. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { NatsServer } from "@kairos/testkit";
import { withSent } from "./decide.js";
import { fromKeyToken, keyToken, SuppressionStores, WriteConflict } from "./stores.js";

let server: NatsServer;
let nc: NatsConnection;
let stores: SuppressionStores;

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connect({ servers: server.url });
  stores = await SuppressionStores.open(nc);
});

afterAll(async () => {
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

describe("key tokens", () => {
  it("keeps plain tokens and encodes the rest so that they cannot collide", () => {
    expect(keyToken("p_123-ab")).toBe("p_123-ab");
    expect(keyToken("2026-11-22")).toBe("2026-11-22");
    const odd = ["ada@example.com", "a.b", "", "=x", "a b"].map(keyToken);
    for (const t of odd) expect(t).toMatch(/^=[-_a-zA-Z0-9]*$/);
    expect(new Set(odd).size).toBe(odd.length);
    expect(keyToken("")).toBe("=");
  });
});

describe("cap ledgers", () => {
  it("round-trips encoded tokens", () => {
    for (const s of ["plain", "", "a.b", "=x", "ü@"]) expect(fromKeyToken(keyToken(s))).toBe(s);
  });
});

describe("contact records", () => {
  it("refuses a writer that read an older revision, so two replicas cannot both take the last slot", async () => {
    const a = await stores.contact("ws", "p-cas");
    const b = await stores.contact("ws", "p-cas");
    await stores.putContact(
      "ws",
      "p-cas",
      withSent(a.state, { id: "x", channel: "email", atMs: 1 }),
      a.revision,
    );
    await expect(
      stores.putContact("ws", "p-cas", withSent(b.state, { id: "y", channel: "email", atMs: 1 }), b.revision),
    ).rejects.toBeInstanceOf(WriteConflict);
    expect((await stores.contact("ws", "p-cas")).state.sent.map((e) => e.id)).toEqual(["x"]);
  });

  it("applies concurrent updates one after another, losing none", async () => {
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        stores.updateContact("ws", "p-many", (s) => withSent(s, { id: `a${i}`, channel: "email", atMs: 1 })),
      ),
    );
    expect((await stores.contact("ws", "p-many")).state.sent).toHaveLength(10);
  });

  it("erases a record only at the revision read, when asked to", async () => {
    await stores.updateContact("ws", "p-erase", (s) => withSent(s, { id: "x", channel: "email", atMs: 1 }));
    const read = await stores.contact("ws", "p-erase", { fresh: true });
    await stores.updateContact("ws", "p-erase", (s) => withSent(s, { id: "y", channel: "email", atMs: 2 }));
    await expect(stores.deleteContact("ws", "p-erase", read.revision)).rejects.toBeInstanceOf(WriteConflict);
    const now = await stores.contact("ws", "p-erase", { fresh: true });
    expect(now.state.sent.map((e) => e.id)).toEqual(["x", "y"]);
    await stores.deleteContact("ws", "p-erase", now.revision);
    expect((await stores.contact("ws", "p-erase", { fresh: true })).revision).toBe(0);
  });
});

describe("decision log", () => {
  it("lists a profile's decisions on one channel, newest first", async () => {
    const rec = (actionId: string, status: string, decidedAtMs: number) => ({
      actionId,
      journey: "j",
      status,
      reason: "r",
      detail: "",
      decidedAtMs,
      priority: 1,
      purpose: "marketing",
    });
    await stores.recordDecision("ws", "p.1", "email", rec("a1", "DEFERRED", 1));
    await stores.recordDecision("ws", "p.1", "email", rec("a1", "DISPATCHED", 3));
    await stores.recordDecision("ws", "p.1", "email", rec("a2", "SUPPRESSED", 2));
    await stores.recordDecision("ws", "p.1", "sms", rec("a3", "SUPPRESSED", 4));
    await stores.recordDecision("ws", "p.10", "email", rec("a4", "SUPPRESSED", 5));
    const got = await stores.decisions("ws", "p.1", "email", 10);
    expect(got.map((d) => `${d.actionId}:${d.status}`)).toEqual([
      "a1:DISPATCHED",
      "a2:SUPPRESSED",
      "a1:DEFERRED",
    ]);

    // A deleted customer: every channel's decisions go, but those kept; other profiles' stay.
    await stores.recordDecision("ws", "p.1", "email", {
      ...rec("a5", "CANCELLED", 6),
      reason: "profile_deleted",
    });
    expect(await stores.purgeDecisions("ws", "p.1", (r) => r.reason === "profile_deleted")).toBe(4);
    expect((await stores.decisions("ws", "p.1", "email", 10)).map((d) => d.actionId)).toEqual(["a5"]);
    expect(await stores.decisions("ws", "p.1", "sms", 10)).toEqual([]);
    expect(await stores.decisions("ws", "p.10", "email", 10)).toHaveLength(1);
  });
});
