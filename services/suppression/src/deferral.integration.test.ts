/**
 * Suppression's timing rules against a real nats-server, with time controlled
 * by an injectable clock: quiet hours across a DST change, deferrals that are
 * released, expire or are cancelled (also racing the cancellation), a deferral
 * that survives a restart, priority when a cap leaves one slot, two replicas
 * racing for the last slot, suppression lists, preferences and Explain.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  Decision,
  DispatchSchema,
  IntentSchema,
  OutcomeSchema,
  OutcomeStatus,
  ProfileChangedSchema,
  SuppressionService,
} from "@kairos/contracts";
import { createGrpcClient, loadConfig, subjects } from "@kairos/kit";
import { NatsServer, sleep, waitFor } from "@kairos/testkit";
import { configSpec, startSuppression, type SuppressionHandle } from "./service.js";
import { startTestIdentity, testProfile, type TestIdentity } from "./test-identity.js";

const config = `
workspaces:
  - id: ws
    timezone: Europe/Berlin
    journeys:
      - name: cart
        trigger: { event: "Product Added" }
        action: { channel: email }
    suppression:
      quietHours: { start: "22:00", end: "07:00" }
      cancelOn:
        - event: Order Completed
          journeys: [cart]
channels:
  - name: email
    mode: inspire
    freshnessSlo: 5m
    dailyCap: 1
    webhook: { url: "http://127.0.0.1:1/email" }
`;

const H = 3_600_000;
/** 22:30 in Berlin on the night its clocks go forward (CET → CEST at 02:00). */
const START = Date.parse("2026-03-28T21:30:00Z");
/** 07:00 CEST the next morning: the end of the quiet window. */
const MORNING = Date.parse("2026-03-29T05:00:00Z");
let now = START;
const clock = () => now;

let server: NatsServer;
let identity: TestIdentity;
let replicas: SuppressionHandle[] = [];
let nc: NatsConnection;
let jsm: JetStreamManager;
let dir: string;

const start = () =>
  startSuppression(
    loadConfig(configSpec, {
      NATS_URL: server.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: join(dir, "mesh.yaml"),
      IDENTITY_GRPC_ADDR: identity.server.address,
      RELEASE_INTERVAL: "20ms",
    }),
    { clock },
  );

beforeAll(async () => {
  server = await NatsServer.start();
  identity = await startTestIdentity();
  dir = mkdtempSync(join(tmpdir(), "kairos-deferral-"));
  writeFileSync(join(dir, "mesh.yaml"), config);
  replicas = [await start()];
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  for (const r of replicas) await r.stop();
  await identity?.server.shutdown(1000);
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

async function all<D extends DescMessage>(stream: string, schema: D): Promise<MessageShape<D>[]> {
  const info = await jsm.streams.info(stream);
  const out: MessageShape<D>[] = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push(fromBinary(schema, m.data));
  }
  return out;
}

const dispatched = async (actionId: string) =>
  (await all("DISPATCH", DispatchSchema)).filter((d) => d.intent?.actionId === actionId);
const outcomes = async (actionId: string) =>
  (await all("OUTCOMES", OutcomeSchema)).filter((o) => o.actionId === actionId);
const outcome = (actionId: string, status: OutcomeStatus) =>
  waitFor(async () => (await outcomes(actionId)).find((o) => o.status === status), {
    what: `${OutcomeStatus[status]} of ${actionId}`,
  });

/** A profile with its own id, so tests do not share caps or cancellations. */
function customer(id: string, traits = {}) {
  identity.profiles.set(id, testProfile(id, traits));
  return id;
}

async function intend(
  profileId: string,
  actionId: string,
  over: {
    notBeforeMs?: number;
    notAfterMs?: number;
    priority?: number;
    purpose?: string;
    journey?: string;
  } = {},
) {
  const journey = over.journey ?? "cart";
  const i = create(IntentSchema, {
    actionId,
    workspace: "ws",
    profileId,
    channel: "email",
    journey,
    purpose: over.purpose ?? "marketing",
    priority: over.priority ?? 50,
    notBefore: timestampFromMs(over.notBeforeMs ?? now),
    intendedAt: timestampFromMs(now),
    eventReceivedAt: timestampFromMs(now),
    cancelKeys: [`journey:${journey}:${profileId}`],
    ...(over.notAfterMs === undefined ? {} : { notAfter: timestampFromMs(over.notAfterMs) }),
  });
  await jetstream(nc).publish(subjects.intents("ws", "email"), toBinary(IntentSchema, i), {
    msgID: actionId,
  });
}

const client = () => createGrpcClient(SuppressionService, replicas[0]?.grpcAddress ?? "");

describe("deferral", () => {
  it("holds an action through quiet hours to 07:00 local on the DST night, across a restart, then sends it once", async () => {
    now = START;
    const p = customer("p_quiet");
    await intend(p, "a_quiet");
    const deferred = await outcome("a_quiet", OutcomeStatus.DEFERRED);
    expect(deferred.reason).toBe("quiet_hours");
    expect(deferred.detail).toContain("held until 2026-03-29T05:00:00.000Z");
    // Check agrees, and says until when.
    const c = client();
    try {
      const res = await c.check({ workspace: "ws", profileId: p, channel: "email", purpose: "marketing" });
      expect(res.decision).toBe(Decision.DEFER);
      expect(timestampMs(res.deferUntil!)).toBe(MORNING);
    } finally {
      c.close();
    }

    // The service restarts while the action waits.
    await replicas[0]?.stop();
    replicas = [await start()];
    now = MORNING - 60_000;
    await sleep(200);
    expect(await dispatched("a_quiet")).toEqual([]);

    now = MORNING;
    const [d] = await waitFor(async () => {
      const x = await dispatched("a_quiet");
      return x.length > 0 ? x : undefined;
    });
    // Lateness is measured from when it could go, not from the event.
    expect(timestampMs(d!.dueAt!)).toBe(MORNING);
    await sleep(200);
    expect(await dispatched("a_quiet")).toHaveLength(1);
  });

  it("expires an action whose deadline falls inside quiet hours, at once or when it comes out of a wait", async () => {
    now = START;
    const p = customer("p_expire");
    await intend(p, "a_offer", { notAfterMs: START + H });
    expect((await outcome("a_offer", OutcomeStatus.EXPIRED)).reason).toBe("quiet_hours");

    // Scheduled for 21:00 local the next evening... then quiet hours again; its deadline is 23:00.
    const p2 = customer("p_expire2");
    const ninePm = Date.parse("2026-03-29T19:00:00Z");
    await intend(p2, "a_late", { notBeforeMs: ninePm + H + 30 * 60_000, notAfterMs: ninePm + 2 * H });
    expect((await outcome("a_late", OutcomeStatus.DEFERRED)).reason).toBe("scheduled");
    now = ninePm + H + 30 * 60_000; // 22:30 CEST
    expect((await outcome("a_late", OutcomeStatus.EXPIRED)).reason).toBe("quiet_hours");
    expect(await dispatched("a_late")).toEqual([]);
  });

  it("cancels a deferred action when its cancellation comes while it waits, through the API or a later event", async () => {
    now = START;
    const p = customer("p_cancel");
    await intend(p, "a_cart");
    await outcome("a_cart", OutcomeStatus.DEFERRED);
    const c = client();
    try {
      await c.cancel({ workspace: "ws", profileId: p, cancelKeys: [`journey:cart:${p}`], reason: "test" });
    } finally {
      c.close();
    }
    expect((await outcome("a_cart", OutcomeStatus.CANCELLED)).detail).toContain(`journey:cart:${p}`);

    // "Order Completed" cancels the cart journey by policy.
    const p2 = customer("p_bought");
    await intend(p2, "a_cart2");
    await outcome("a_cart2", OutcomeStatus.DEFERRED);
    const change = create(ProfileChangedSchema, {
      workspace: "ws",
      profileId: p2,
      version: 2n,
      eventId: "evt-order-1",
      eventName: "Order Completed",
      eventReceivedAt: timestampFromMs(now + 1000),
    });
    await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, change));
    expect((await outcome("a_cart2", OutcomeStatus.CANCELLED)).detail).toContain("Order Completed");

    now = MORNING + H;
    await sleep(300);
    expect(await dispatched("a_cart")).toEqual([]);
    expect(await dispatched("a_cart2")).toEqual([]);
  });

  it("never sends an action whose cancellation races its deferral", async () => {
    now = START;
    const c = client();
    const ids = Array.from({ length: 20 }, (_, i) => customer(`p_race${i}`));
    try {
      await Promise.all(
        ids.map(async (p, i) => {
          // The same instant: the cancellation is not older than the intent, so it applies.
          await Promise.all([
            intend(p, `a_race${i}`),
            c.cancel({ workspace: "ws", profileId: p, cancelKeys: [`journey:cart:${p}`], reason: "race" }),
          ]);
        }),
      );
    } finally {
      c.close();
    }
    for (let i = 0; i < ids.length; i++) await outcome(`a_race${i}`, OutcomeStatus.CANCELLED);
    now = MORNING + 2 * H;
    await sleep(300);
    for (let i = 0; i < ids.length; i++) expect(await dispatched(`a_race${i}`)).toEqual([]);
  });

  it("gives the one slot left by the cap to the higher-priority action when both come out of quiet hours", async () => {
    now = START;
    const p = customer("p_prio");
    await intend(p, "a_low", { priority: 10, journey: "low" });
    await intend(p, "a_high", { priority: 90, journey: "high" });
    await outcome("a_low", OutcomeStatus.DEFERRED);
    await outcome("a_high", OutcomeStatus.DEFERRED);
    now = MORNING + 3 * H;
    expect((await outcome("a_low", OutcomeStatus.SUPPRESSED)).reason).toBe("daily_cap");
    expect(await dispatched("a_high")).toHaveLength(1);
    expect(await dispatched("a_low")).toEqual([]);
  });
});

describe("two replicas", () => {
  it("never both take the last cap slot", async () => {
    now = Date.parse("2026-03-30T10:00:00Z"); // noon in Berlin: no quiet hours
    replicas.push(await start());
    const ids = Array.from({ length: 30 }, (_, i) => customer(`p_slot${i}`));
    await Promise.all(
      ids.flatMap((p, i) => [
        intend(p, `a_slot${i}a`, { journey: "a" }),
        intend(p, `a_slot${i}b`, { journey: "b" }),
      ]),
    );
    for (let i = 0; i < ids.length; i++) {
      const settled = await waitFor(async () => {
        const d = [...(await dispatched(`a_slot${i}a`)), ...(await dispatched(`a_slot${i}b`))];
        const s = [...(await outcomes(`a_slot${i}a`)), ...(await outcomes(`a_slot${i}b`))].filter(
          (o) => o.status === OutcomeStatus.SUPPRESSED,
        );
        return d.length + s.length >= 2 ? { d, s } : undefined;
      });
      expect(settled.d, `profile ${ids[i]}`).toHaveLength(1);
      expect(settled.s.map((o) => o.reason)).toEqual(["daily_cap"]);
    }
  });
});

describe("lists, preferences and Explain", () => {
  it("suppresses a listed email and a channel the customer does not prefer, and explains both", async () => {
    now = Date.parse("2026-03-31T10:00:00Z");
    const p = customer("p_listed");
    const c = client();
    try {
      await expect(
        c.addToSuppressionList({
          workspace: "ws",
          identifier: { type: "email", value: `${p}@example.com` },
          channel: "email",
          reason: "bounced-ish",
        }),
      ).rejects.toThrow(/reason "bounced-ish" is not one of/);
      await c.addToSuppressionList({
        workspace: "ws",
        identifier: { type: "email", value: `${p}@example.com` },
        channel: "*",
        reason: "hard_bounced",
        source: "esp",
      });
      await intend(p, "a_listed");
      expect((await outcome("a_listed", OutcomeStatus.SUPPRESSED)).detail).toBe(
        "email hard_bounced on every channel",
      );
      expect(
        await c.removeFromSuppressionList({
          workspace: "ws",
          identifier: { type: "email", value: `${p}@example.com` },
          channel: "*",
        }),
      ).toMatchObject({ removed: true });

      await c.setPreferences({ workspace: "ws", profileId: p, channels: ["email"], maxPerWeek: 0 });
      await expect(c.setPreferences({ workspace: "ws", profileId: p, channels: ["pigeon"] })).rejects.toThrow(
        /unknown channel/,
      );
      now += 1000;
      await intend(p, "a_ok");
      await waitFor(async () => ((await dispatched("a_ok")).length > 0 ? true : undefined));

      const explained = await c.explain({ workspace: "ws", profileId: p, channel: "email" });
      expect(explained.decisions.map((d) => [d.actionId, OutcomeStatus[d.status], d.reason])).toEqual([
        ["a_ok", "DISPATCHED", "allowed"],
        ["a_listed", "SUPPRESSED", "suppression_list"],
      ]);
      // Now the daily cap (1) is taken.
      expect(explained.now).toMatchObject({ decision: Decision.SUPPRESS, reason: "daily_cap" });
    } finally {
      c.close();
    }
  });
});
