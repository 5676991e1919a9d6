/** The webhook dispatcher against a real nats-server and a real local HTTP endpoint. */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DispatcherService,
  DispatchSchema,
  OutcomeSchema,
  OutcomeStatus,
  type Outcome,
} from "@kairos/contracts";
import { Cancellations, createGrpcClient, loadConfig, PROFILE_DELETED_KEY, subjects } from "@kairos/kit";
import { NatsServer, sleep, waitFor } from "@kairos/testkit";
import { configSpec, startDispatcherWebhook, type DispatcherHandle } from "./service.js";

const demoConfig = fileURLToPath(new URL("../../../config/demo.yaml", import.meta.url));
let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let svc: DispatcherHandle;
let endpoint: Server;
let opsUrl: string;
const received: { headers: IncomingHttpHeaders; body: Record<string, unknown> }[] = [];
/** Status codes the endpoint answers with, in order, per action; then 200. */
const script = new Map<string, number[]>();

beforeAll(async () => {
  server = await NatsServer.start();
  endpoint = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
      received.push({ headers: req.headers, body });
      const status = script.get(String(body.action_id))?.shift() ?? 200;
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => endpoint.listen(0, "127.0.0.1", r));
  const { port } = endpoint.address() as AddressInfo;
  svc = await startDispatcherWebhook(
    loadConfig(configSpec, {
      NATS_URL: server.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: demoConfig,
      WEBHOOK_URL: `http://127.0.0.1:${port}/hook`,
    }),
  );
  opsUrl = svc.runtime.ops.url;
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await svc?.stop();
  await nc?.close();
  endpoint?.closeAllConnections();
  endpoint?.close();
  await server?.[Symbol.asyncDispose]();
});

beforeEach(() => {
  received.length = 0;
});

async function dispatch(
  actionId: string,
  over: {
    notAfterMs?: number;
    msgID?: string;
    cancelKeys?: string[];
    profileId?: string;
    intendedAtMs?: number;
  } = {},
) {
  const now = Date.now();
  const d = create(DispatchSchema, {
    intent: {
      actionId,
      workspace: "demo",
      profileId: over.profileId ?? "p-1",
      channel: "webhook",
      journey: "j",
      payload: { hello: "world" },
      cancelKeys: over.cancelKeys ?? [],
      intendedAt: timestampFromMs(over.intendedAtMs ?? now - 10),
      ...(over.notAfterMs === undefined ? {} : { notAfter: timestampFromMs(over.notAfterMs) }),
    },
    destinations: [{ type: "email", value: "ada@example.org" }],
    dueAt: timestampFromMs(now - 50),
    decidedAt: timestampFromMs(now),
  });
  await jetstream(nc).publish(subjects.dispatch("demo", "webhook"), toBinary(DispatchSchema, d), {
    msgID: over.msgID ?? actionId,
  });
}

async function outcomesOf(actionId: string): Promise<Outcome[]> {
  const info = await jsm.streams.info("OUTCOMES");
  const out: Outcome[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage("OUTCOMES", { seq }).catch(() => null);
    if (m === null) continue;
    const o = fromBinary(OutcomeSchema, m.data);
    if (o.actionId === actionId) out.push(o);
  }
  return out;
}

const settled = (actionId: string) =>
  waitFor(
    async () => {
      const o = await outcomesOf(actionId);
      return o.length > 0 ? o : undefined;
    },
    { timeoutMs: 20_000 },
  );

describe("dispatcher-webhook", () => {
  it("POSTs once with the idempotency key and trace context, and records DELIVERED with hop times", async () => {
    await dispatch("act_one");
    const [o] = await settled("act_one");
    expect(o).toMatchObject({ status: OutcomeStatus.DELIVERED, attempts: 1 });
    expect(o?.times?.deliveredAt).toBeDefined();
    expect(received).toHaveLength(1);
    expect(received[0]?.headers["idempotency-key"]).toBe("act_one");
    expect(received[0]?.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    expect(received[0]?.body).toMatchObject({ action_id: "act_one", payload: { hello: "world" } });
  });

  it("retries 503s with backoff and delivers once", async () => {
    script.set("act_retry", [503, 503]);
    await dispatch("act_retry");
    const outcomes = await settled("act_retry");
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]).toMatchObject({ status: OutcomeStatus.DELIVERED, attempts: 3 });
    expect(received.filter((r) => r.body.action_id === "act_retry")).toHaveLength(3);
  });

  it("fails a 400 at once, without retrying", async () => {
    script.set("act_bad", [400]);
    await dispatch("act_bad");
    expect((await settled("act_bad"))[0]).toMatchObject({ status: OutcomeStatus.FAILED, reason: "http_400" });
    await sleep(500);
    expect(received.filter((r) => r.body.action_id === "act_bad")).toHaveLength(1);
  });

  it("does not POST an action again when its dispatch is replayed", async () => {
    await dispatch("act_twice");
    await settled("act_twice");
    await dispatch("act_twice", { msgID: "replay-act_twice" });
    await waitFor(async () => {
      const info = await jsm.consumers.info("DISPATCH", "dispatcher-webhook");
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    await sleep(200);
    expect(received.filter((r) => r.body.action_id === "act_twice")).toHaveLength(1);
  });

  it("expires an action past its deadline without POSTing it", async () => {
    await dispatch("act_late", { notAfterMs: Date.now() - 1 });
    expect((await settled("act_late"))[0]).toMatchObject({
      status: OutcomeStatus.EXPIRED,
      reason: "expired",
    });
    expect(received).toHaveLength(0);
  });

  it("withdraws an action cancelled after it was handed to the channel, without POSTing it", async () => {
    const cancellations = await Cancellations.open(nc);
    await cancellations.mark("demo", "p-1", ["journey:cart:p-1"], {
      atMs: Date.now(),
      reason: "event Order Completed",
    });
    await dispatch("act_cancelled", { cancelKeys: ["journey:cart:p-1"] });
    expect((await settled("act_cancelled"))[0]).toMatchObject({
      status: OutcomeStatus.CANCELLED,
      reason: "cancelled",
    });
    expect(received).toHaveLength(0);
    // A cancellation older than the action does not touch it.
    await cancellations.mark("demo", "p-1", ["journey:old:p-1"], {
      atMs: Date.now() - 60_000,
      reason: "old",
    });
    await dispatch("act_newer", { cancelKeys: ["journey:old:p-1"] });
    expect((await settled("act_newer"))[0]).toMatchObject({ status: OutcomeStatus.DELIVERED });
  });

  it("exports the channel's lateness histogram and objective, and its status over gRPC", async () => {
    const text = await (await fetch(`${opsUrl}/metrics`)).text();
    expect(text).toMatch(/kairos_freshness_lateness_seconds_count\{[^}]*channel="webhook"[^}]*\} [1-9]/);
    expect(text).toMatch(/kairos_freshness_objective_seconds\{[^}]*channel="webhook"[^}]*\} 30/);
    const client = createGrpcClient(DispatcherService, svc.grpcAddress);
    try {
      const status = await client.getStatus({});
      expect(status).toMatchObject({ channel: "webhook", freshnessSloMs: 30_000 });
      expect(status.delivered).toBeGreaterThanOrEqual(3n);
    } finally {
      client.close();
    }
  });

  it("withdraws what was handed over for a customer deleted since (GDPR), whatever its cancel keys", async () => {
    const cancellations = await Cancellations.open(nc);
    await dispatchAfter(cancellations);
    expect((await settled("act_for_deleted"))[0]).toMatchObject({
      status: OutcomeStatus.CANCELLED,
      reason: "profile_deleted",
    });
    expect(received.filter((r) => r.body.action_id === "act_for_deleted")).toHaveLength(0);
  });
});

/** Marks p-gone deleted, then hands over an action intended for it before the deletion. */
async function dispatchAfter(cancellations: Cancellations) {
  await cancellations.mark("demo", "p-gone", [PROFILE_DELETED_KEY], {
    atMs: Date.now(),
    reason: "profile_deleted",
  });
  await dispatch("act_for_deleted", { profileId: "p-gone", intendedAtMs: Date.now() - 60_000 });
}
