/** Suppression against a real nats-server and the real identity service for profiles. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type JsonObject,
  type MessageShape,
} from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  Decision,
  DispatchSchema,
  EventSchema,
  EventType,
  IntentSchema,
  OutcomeSchema,
  OutcomeStatus,
  SuppressionService,
} from "@kairos/contracts";
import { createGrpcClient, loadConfig, subjects } from "@kairos/kit";
import { NatsServer, sleep, waitFor } from "@kairos/testkit";
import * as identity from "@kairos/identity";
import { configSpec, startSuppression, type SuppressionHandle } from "./service.js";

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let svc: SuppressionHandle;
let idSvc: identity.IdentityHandle;
const profileOf = new Map<string, string>();

const config = `
workspaces:
  - id: ws
    timezone: Europe/London
channels:
  - name: email
    mode: inspire
    freshnessSlo: 5m
    dailyCap: 2
    webhook: { url: "http://127.0.0.1:1/email" }
`;

beforeAll(async () => {
  server = await NatsServer.start();
  const dir = mkdtempSync(join(tmpdir(), "kairos-suppression-"));
  writeFileSync(join(dir, "mesh.yaml"), config);
  const base = { NATS_URL: server.url, GRPC_PORT: "0", OPS_PORT: "0", LOG_LEVEL: "silent" };
  idSvc = await identity.startIdentity(loadConfig(identity.configSpec, base));
  svc = await startSuppression(
    loadConfig(configSpec, {
      ...base,
      KAIROS_CONFIG: join(dir, "mesh.yaml"),
      IDENTITY_GRPC_ADDR: idSvc.grpcAddress,
    }),
  );
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
  // Profiles, made by identity from real events.
  for (const [userId, traits] of [
    ["ok", {}],
    ["out", { opt_out: ["email"] }],
    ["capped", {}],
    ["dup", {}],
    ["consent", {}],
  ] as [string, JsonObject][]) {
    const e = create(EventSchema, {
      messageId: `e-${userId}`,
      workspace: "ws",
      type: EventType.IDENTIFY,
      userId,
      traits,
      receivedAt: timestampFromMs(Date.now()),
    });
    await jetstream(nc).publish(subjects.events("ws", 0), toBinary(EventSchema, e), {
      msgID: `ws:${e.messageId}`,
    });
  }
  const client = createGrpcClient((await import("@kairos/contracts")).ProfileService, idSvc.grpcAddress);
  for (const userId of ["ok", "out", "capped", "dup", "consent"]) {
    const p = await waitFor(() =>
      client
        .getProfile({ workspace: "ws", identifier: { type: "user_id", value: userId } })
        .then((r) => r.profile),
    );
    profileOf.set(userId, p.profileId);
  }
  client.close();
});

afterAll(async () => {
  await svc?.stop();
  await idSvc?.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

async function all<D extends DescMessage>(stream: string, schema: D): Promise<MessageShape<D>[]> {
  const info = await jsm.streams.info(stream);
  const out: MessageShape<D>[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push(fromBinary(schema, m.data));
  }
  return out;
}

async function intent(user: string, actionId: string, over: { notAfterMs?: number; msgID?: string } = {}) {
  const now = Date.now();
  const i = create(IntentSchema, {
    actionId,
    workspace: "ws",
    profileId: profileOf.get(user)!,
    channel: "email",
    journey: "j",
    purpose: "marketing",
    notBefore: timestampFromMs(now),
    intendedAt: timestampFromMs(now),
    eventReceivedAt: timestampFromMs(now - 5),
    ...(over.notAfterMs === undefined ? {} : { notAfter: timestampFromMs(over.notAfterMs) }),
  });
  await jetstream(nc).publish(subjects.intents("ws", "email"), toBinary(IntentSchema, i), {
    msgID: over.msgID ?? actionId,
  });
}

const dispatched = async (actionId: string) =>
  (await all("DISPATCH", DispatchSchema)).filter((d) => d.intent?.actionId === actionId);
const outcome = (actionId: string) =>
  waitFor(async () => (await all("OUTCOMES", OutcomeSchema)).find((o) => o.actionId === actionId));

describe("suppression", () => {
  it("dispatches an allowed intent with the profile's identifiers and traits", async () => {
    await intent("ok", "act_ok");
    const [d] = await waitFor(async () => {
      const x = await dispatched("act_ok");
      return x.length > 0 ? x : undefined;
    });
    expect(d?.destinations).toEqual([{ $typeName: "kairos.v1.Identifier", type: "user_id", value: "ok" }]);
    expect(d?.dueAt).toEqual(d?.intent?.eventReceivedAt);
  });

  it("suppresses an opted-out profile, naming the reason", async () => {
    await intent("out", "act_out");
    expect(await outcome("act_out")).toMatchObject({ status: OutcomeStatus.SUPPRESSED, reason: "opted_out" });
    expect(await dispatched("act_out")).toEqual([]);
  });

  it("expires an intent past its deadline", async () => {
    await intent("ok", "act_late", { notAfterMs: Date.now() - 1000 });
    expect(await outcome("act_late")).toMatchObject({ status: OutcomeStatus.EXPIRED, reason: "expired" });
  });

  it("holds the daily cap: the third action of the day is suppressed", async () => {
    for (const id of ["act_c1", "act_c2", "act_c3"]) await intent("capped", id);
    expect(await outcome("act_c3")).toMatchObject({ status: OutcomeStatus.SUPPRESSED, reason: "daily_cap" });
    expect(await dispatched("act_c1")).toHaveLength(1);
    expect(await dispatched("act_c2")).toHaveLength(1);
  });

  it("counts a replayed intent once and dispatches it once", async () => {
    await intent("dup", "act_d1");
    await waitFor(async () => (await dispatched("act_d1")).length === 1);
    await intent("dup", "act_d1", { msgID: "replay-act_d1" });
    await intent("dup", "act_d2");
    await waitFor(async () => (await dispatched("act_d2")).length === 1);
    await sleep(100);
    expect(await dispatched("act_d1")).toHaveLength(1);
    // Two slots used, not three: a third distinct action is over the cap.
    await intent("dup", "act_d3");
    expect(await outcome("act_d3")).toMatchObject({ reason: "daily_cap" });
  });

  it("honours consent withdrawn through SetConsent, and Check agrees", async () => {
    const client = createGrpcClient(SuppressionService, svc.grpcAddress);
    try {
      const profileId = profileOf.get("consent")!;
      expect(
        (await client.check({ workspace: "ws", profileId, channel: "email", purpose: "marketing" })).decision,
      ).toBe(Decision.ALLOW);
      await client.setConsent({
        workspace: "ws",
        profileId,
        channel: "email",
        granted: false,
        source: "test",
      });
      expect(
        await client.check({ workspace: "ws", profileId, channel: "email", purpose: "marketing" }),
      ).toMatchObject({
        decision: Decision.SUPPRESS,
        reason: "consent_withdrawn",
      });
      await intent("consent", "act_consent");
      expect(await outcome("act_consent")).toMatchObject({ reason: "consent_withdrawn" });
      await expect(
        client.check({ workspace: "ws", profileId, channel: "pigeon", purpose: "" }),
      ).rejects.toThrow(/unknown channel/);
    } finally {
      client.close();
    }
  });
});
