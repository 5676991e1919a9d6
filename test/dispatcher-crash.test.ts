/**
 * A dispatcher SIGKILLed while deliveries are in flight and started again:
 * every action still arrives, the actions that were in flight are sent again
 * under the same idempotency key (so the endpoint, which acts once per key,
 * acts once), and none is sent under a second key.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DispatchSchema, OutcomeSchema, OutcomeStatus } from "@kairos/contracts";
import { subjects } from "@kairos/kit";
import { NatsServer, repoRoot, startChild, waitFor, type Child } from "@kairos/testkit";

const config = fileURLToPath(new URL("fixtures/mesh.yaml", import.meta.url));
const ACTIONS = 60;

let nats: NatsServer;
let nc: NatsConnection;
let server: Server;
let url: string;
/** Requests per idempotency key, and the keys the endpoint acted on (once each, as a real endpoint dedupes). */
const requests = new Map<string, number>();
const acted = new Map<string, string>();

beforeAll(async () => {
  nats = await NatsServer.start();
  nc = await connect({ servers: nats.url });
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const key = String(req.headers["idempotency-key"]);
      requests.set(key, (requests.get(key) ?? 0) + 1);
      // Slow enough that a kill lands while many are in flight.
      setTimeout(() => {
        if (!acted.has(key)) acted.set(key, (JSON.parse(body) as { action_id: string }).action_id);
        res.writeHead(200).end();
      }, 400);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});

afterAll(async () => {
  await nc?.close();
  server?.closeAllConnections();
  server?.close();
  await nats?.[Symbol.asyncDispose]();
});

function startDispatcher(): Child {
  return startChild(process.execPath, ["--import", "tsx", "services/dispatcher-webhook/src/main.ts"], {
    cwd: repoRoot,
    name: "dispatcher-webhook",
    env: {
      ...process.env,
      NATS_URL: nats.url,
      KAIROS_CONFIG: config,
      WEBHOOK_URL: url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      CONCURRENCY: "16",
      LOG_LEVEL: "info",
    },
  });
}

describe("dispatcher SIGKILLed mid-delivery and restarted", () => {
  it("delivers every action, resends in-flight ones under the same key, and never under a second one", async () => {
    const js = jetstream(nc);
    const delivered = new Set<string>();
    nc.subscribe(subjects.outcomes("bench", "webhook"), {
      callback: (_, m) => {
        const o = fromBinary(OutcomeSchema, m.data);
        if (o.status === OutcomeStatus.DELIVERED) delivered.add(o.actionId);
      },
    });
    // The dispatcher declares the streams; publish once it is consuming.
    const first = startDispatcher();
    await first.waitForLine(/"dispatching"/);
    const ids = Array.from({ length: ACTIONS }, (_, i) => `act_crash_${i}`);
    for (const id of ids) {
      const now = Date.now();
      const d = create(DispatchSchema, {
        intent: {
          actionId: id,
          workspace: "bench",
          profileId: `p-${id}`,
          channel: "webhook",
          notAfter: timestampFromMs(now + 300_000),
          intendedAt: timestampFromMs(now),
        },
        dueAt: timestampFromMs(now),
      });
      await js.publish(subjects.dispatch("bench", "webhook"), toBinary(DispatchSchema, d), { msgID: id });
    }

    // Kill once some actions were acted on and others are in flight.
    await waitFor(() => acted.size >= 10 && [...requests.keys()].some((k) => !acted.has(k)), {
      timeoutMs: 30_000,
    });
    const inFlightAtKill = [...requests.keys()].filter((k) => !acted.has(k));
    first.proc.kill("SIGKILL");
    await first.exited;
    expect(inFlightAtKill.length).toBeGreaterThan(0);

    const second = startDispatcher();
    try {
      await waitFor(() => delivered.size === ACTIONS, { timeoutMs: 60_000, what: "every action DELIVERED" });
    } finally {
      second.proc.kill("SIGTERM");
      await second.exited;
    }
    // No loss: the endpoint acted on every action, each under its own id as key.
    expect([...acted.keys()].sort()).toEqual([...ids].sort());
    for (const [key, actionId] of acted) expect(actionId).toBe(key);
    // No second key for any action, and the ones in flight at the kill came again with their own key.
    expect(requests.size).toBe(ACTIONS);
    expect(inFlightAtKill.some((k) => (requests.get(k) ?? 0) >= 2)).toBe(true);
  });
});
