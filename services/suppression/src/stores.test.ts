/** The KV adapter against a real nats-server: compare-and-set ledgers and consent records. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { NatsServer } from "@kairos/testkit";
import { keyToken, SuppressionStores, WriteConflict } from "./stores.js";

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
  it("extends a ledger by compare-and-set, refusing a writer that read an older revision", async () => {
    const key = stores.capKey("ws", "email", "ada@example.com", "2026-11-22");
    expect(await stores.counted(key)).toEqual({ ids: [], revision: 0 });
    await stores.count(key, [], "act_1", 0);
    // A second writer that also saw no ledger loses.
    await expect(stores.count(key, [], "act_2", 0)).rejects.toBeInstanceOf(WriteConflict);
    const read = await stores.counted(key);
    expect(read.ids).toEqual(["act_1"]);
    await stores.count(key, read.ids, "act_2", read.revision);
    await expect(stores.count(key, read.ids, "act_3", read.revision)).rejects.toBeInstanceOf(WriteConflict);
    expect((await stores.counted(key)).ids).toEqual(["act_1", "act_2"]);
  });
});

describe("consent", () => {
  it("returns the purpose-specific and the all-purposes records for a channel", async () => {
    expect(await stores.consentFor("ws", "p1", "email", "marketing")).toEqual([]);
    await stores.setConsent("ws", "p1", "email", "", { granted: false, source: "support", recordedAtMs: 1 });
    await stores.setConsent("ws", "p1", "email", "marketing", {
      granted: true,
      source: "preference-centre",
      recordedAtMs: 2,
    });
    expect(await stores.consentFor("ws", "p1", "email", "marketing")).toEqual([
      { purpose: "marketing", granted: true, source: "preference-centre" },
      { purpose: "", granted: false, source: "support" },
    ]);
    expect(await stores.consentFor("ws", "p1", "email", "")).toEqual([
      { purpose: "", granted: false, source: "support" },
    ]);
    expect(await stores.consentFor("ws", "p1", "sms", "marketing")).toEqual([]);
  });
});
