/**
 * The web channel against a real nats-server, real HTTP Server-Sent Events
 * clients and gRPC streaming, with two replicas.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request, type IncomingMessage } from "node:http";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DispatcherService,
  DispatchSchema,
  OutcomeSchema,
  OutcomeStatus,
  type Outcome,
} from "@kairos/contracts";
import { createGrpcClient, loadConfig, subjects } from "@kairos/kit";
import type { DispatcherHandle } from "@kairos/dispatcher-sdk";
import { collect, NatsServer, waitFor } from "@kairos/testkit";
import { configSpec, startDispatcherWeb } from "./service.js";

const config = fileURLToPath(new URL("./fixtures/web.yaml", import.meta.url));
const WS = "shop";
let server: NatsServer;
let nc: NatsConnection;
let js: JetStreamClient;
const replicas: DispatcherHandle[] = [];
let outcomes: Outcome[] = [];

/** A real SSE client: collects the `data:` of every `action` event. */
class SseClient {
  readonly actions: { action_id: string; payload: Record<string, unknown> }[] = [];
  status = 0;
  body = "";
  private res: IncomingMessage | undefined;
  private constructor() {}

  static open(base: string, query: Record<string, string>): Promise<SseClient> {
    const c = new SseClient();
    return new Promise((resolve, reject) => {
      const req = request(`${base}/v1/stream?${new URLSearchParams(query).toString()}`, (res) => {
        c.res = res;
        c.status = res.statusCode ?? 0;
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          c.body += chunk;
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (/^: subscribed$/m.test(frame)) resolve(c);
            const data = /^data: (.*)$/m.exec(frame)?.[1];
            if (/^event: action$/m.test(frame) && data !== undefined)
              c.actions.push(JSON.parse(data) as SseClient["actions"][number]);
          }
        });
        res.on("end", () => resolve(c));
      });
      req.on("error", reject);
      req.end();
    });
  }

  close(): void {
    this.res?.destroy();
  }
}

function dispatch(actionId: string, anonymousId: string, notAfterMs = Date.now() + 60_000) {
  const now = Date.now();
  return js.publish(
    subjects.dispatch(WS, "web"),
    toBinary(
      DispatchSchema,
      create(DispatchSchema, {
        intent: {
          actionId,
          workspace: WS,
          profileId: `p-${anonymousId}`,
          channel: "web",
          journey: "product-viewed",
          payload: { message: `hello ${anonymousId}` },
          notAfter: timestampFromMs(notAfterMs),
          intendedAt: timestampFromMs(now),
        },
        destinations: [
          { type: "anonymous_id", value: anonymousId },
          { type: "email", value: `${anonymousId}@example.org` },
        ],
        dueAt: timestampFromMs(now),
        decidedAt: timestampFromMs(now),
      }),
    ),
    { msgID: actionId },
  );
}

const outcomeOf = (id: string) =>
  outcomes.find((o) => o.actionId === id && o.status !== OutcomeStatus.DISPATCHED);

beforeAll(async () => {
  server = await NatsServer.start();
  for (let i = 0; i < 2; i++) {
    replicas.push(
      await startDispatcherWeb(
        loadConfig(configSpec, {
          NATS_URL: server.url,
          GRPC_PORT: "0",
          OPS_PORT: "0",
          HTTP_PORT: "0",
          LOG_LEVEL: "silent",
          KAIROS_CONFIG: config,
        }),
      ),
    );
  }
  nc = await connect({ servers: server.url });
  js = jetstream(nc);
  outcomes = collect(nc, "kairos.outcomes.>", (b) => fromBinary(OutcomeSchema, b));
});

afterAll(async () => {
  for (const r of replicas) await r.stop();
  await nc?.close();
  await server?.stop();
});

describe("dispatcher-web", () => {
  it("pushes an action to the customer's open stream on whichever replica holds it", async () => {
    // One customer on each replica; with a work queue either replica may take either action.
    const a = await SseClient.open(replicas[0]!.addresses.http!, {
      writeKey: "shop-browser-key",
      anonymousId: "anon-a",
    });
    const b = await SseClient.open(replicas[1]!.addresses.http!, {
      writeKey: "shop-browser-key",
      anonymousId: "anon-b",
    });
    for (let i = 0; i < 10; i++) {
      await dispatch(`act_a${i}`, "anon-a");
      await dispatch(`act_b${i}`, "anon-b");
    }
    await waitFor(() => a.actions.length === 10 && b.actions.length === 10, { timeoutMs: 10_000 });
    expect(a.actions.map((x) => x.action_id).sort()).toEqual(
      [...Array(10).keys()].map((i) => `act_a${i}`).sort(),
    );
    expect(a.actions[0]?.payload).toEqual({ message: "hello anon-a" });
    await waitFor(() => outcomes.filter((o) => o.status === OutcomeStatus.DELIVERED).length >= 20);
    expect(outcomeOf("act_b3")?.reason).toBe("pushed_to_1");
    a.close();
    b.close();
  });

  it("streams to an app back end over gRPC Subscribe as well", async () => {
    const client = createGrpcClient(DispatcherService, replicas[1]!.grpcAddress);
    const abort = new AbortController();
    const got: string[] = [];
    const reading = (async () => {
      try {
        for await (const r of client.subscribe(
          { workspace: WS, identifierType: "email", identifierValue: "anon-g@example.org" },
          { signal: abort.signal },
        ))
          got.push(r.actionId);
      } catch {
        // aborted
      }
    })();
    // The subscription is registered once the stream is open; retry the dispatch id until then.
    await waitFor(
      async () => {
        if (got.length > 0) return true;
        await dispatch(`act_g${Date.now()}`, "anon-g");
        return false;
      },
      { timeoutMs: 10_000, intervalMs: 300 },
    );
    abort.abort();
    await reading;
    expect(got[0]).toMatch(/^act_g/);
  });

  it("retries while the customer is not in session and expires the action at its deadline", async () => {
    await dispatch("act_nobody", "anon-nobody", Date.now() + 1500);
    await waitFor(() => outcomeOf("act_nobody") !== undefined, { timeoutMs: 10_000 });
    expect(outcomeOf("act_nobody")).toMatchObject({
      status: OutcomeStatus.EXPIRED,
      reason: "expired_after_no_live_subscriber",
    });
  });

  it("lets an action lapse (EXPIRED, no dead letter) when its attempts run out before anyone subscribes", async () => {
    await dispatch("act_lapsed", "anon-never", Date.now() + 60_000); // the fixture allows 4 attempts
    await waitFor(() => outcomeOf("act_lapsed") !== undefined, { timeoutMs: 20_000 });
    expect(outcomeOf("act_lapsed")).toMatchObject({
      status: OutcomeStatus.EXPIRED,
      reason: "no_live_subscriber",
    });
    const dlq = await jetstreamManager(nc).then((m) => m.streams.info("DLQ"));
    expect(dlq.state.messages).toBe(0);
  });

  it("delivers to a page that subscribes while the action is being retried", async () => {
    await dispatch("act_late_page", "anon-late", Date.now() + 30_000);
    await new Promise((r) => setTimeout(r, 400));
    const c = await SseClient.open(replicas[0]!.addresses.http!, {
      writeKey: "shop-browser-key",
      anonymousId: "anon-late",
    });
    await waitFor(() => c.actions.length === 1, { timeoutMs: 10_000 });
    // The push reaches the page before the outcome is recorded.
    await waitFor(() => outcomeOf("act_late_page")?.status === OutcomeStatus.DELIVERED);
    c.close();
  });

  it("refuses a stream without a valid write key or an identifier, naming what is wrong", async () => {
    const base = replicas[0]!.addresses.http!;
    const noKey = await SseClient.open(base, { anonymousId: "x" });
    expect([noKey.status, noKey.body]).toEqual([401, '{"error":"writeKey is required"}']);
    const badKey = await SseClient.open(base, { writeKey: "nope", anonymousId: "x" });
    expect(badKey.status).toBe(401);
    const noId = await SseClient.open(base, { writeKey: "shop-browser-key" });
    expect([noId.status, noId.body]).toEqual([400, '{"error":"anonymousId or userId is required"}']);
  });
});
