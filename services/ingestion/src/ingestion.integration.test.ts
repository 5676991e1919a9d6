import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, IngestService, type Event } from "@kairos/contracts";
import { createGrpcClient, loadConfig } from "@kairos/kit";
import { NatsServer } from "@kairos/testkit";
import { configSpec, startIngestion, type IngestionHandle } from "./service.js";

const demoConfig = fileURLToPath(new URL("../../../config/demo.yaml", import.meta.url));
const WRITE_KEY = "demo-server-write-key";
const auth = (key: string) => `Basic ${Buffer.from(`${key}:`).toString("base64")}`;

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let svc: IngestionHandle;

beforeAll(async () => {
  server = await NatsServer.start();
  const cfg = loadConfig(configSpec, {
    NATS_URL: server.url,
    GRPC_PORT: "0",
    OPS_PORT: "0",
    HTTP_PORT: "0",
    KAIROS_CONFIG: demoConfig,
    LOG_LEVEL: "silent",
  });
  svc = await startIngestion(cfg);
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await svc?.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

function post(
  path: string,
  body: unknown,
  headers: Record<string, string> = { authorization: auth(WRITE_KEY) },
) {
  return fetch(`${svc.httpUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** Every event stored in EVENTS whose message id starts with `prefix`. */
async function stored(prefix: string): Promise<Event[]> {
  const out: Event[] = [];
  const info = await jsm.streams.info("EVENTS");
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage("EVENTS", { seq }).catch(() => null);
    if (m === null) continue;
    const e = fromBinary(EventSchema, m.data);
    if (e.messageId.startsWith(prefix)) out.push(e);
  }
  return out;
}

describe("Segment HTTP API", () => {
  it("stores a track call durably before answering, stamped with receivedAt", async () => {
    const before = Date.now();
    const res = await post("/v1/track", {
      userId: "u-1",
      event: "Viewed",
      messageId: "http-1",
      properties: { a: 1 },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ success: true, accepted: 1, duplicates: 0, rejected: [] });
    const [e] = await stored("http-1");
    expect(e).toMatchObject({
      workspace: "demo",
      source: "backend",
      type: EventType.TRACK,
      name: "Viewed",
      userId: "u-1",
    });
    expect(timestampMs(e!.receivedAt!)).toBeGreaterThanOrEqual(before);
  });

  it("stores a repeated messageId once and says it was a duplicate", async () => {
    const call = { userId: "u-2", traits: { plan: "gold" }, messageId: "http-dup" };
    await post("/v1/identify", call);
    const res = await post("/v1/identify", call);
    expect(await res.json()).toMatchObject({ accepted: 0, duplicates: 1 });
    expect(await stored("http-dup")).toHaveLength(1);
  });

  it("accepts a gzip body", async () => {
    const res = await fetch(`${svc.httpUrl}/v1/page`, {
      method: "POST",
      headers: {
        authorization: auth(WRITE_KEY),
        "content-type": "application/json",
        "content-encoding": "gzip",
      },
      body: gzipSync(JSON.stringify({ anonymousId: "a-1", name: "Home", messageId: "http-gz" })),
    });
    expect(res.status).toBe(200);
    expect(await stored("http-gz")).toHaveLength(1);
  });

  it("answers 401 to an unknown or missing write key", async () => {
    const unknown = await post("/v1/track", { userId: "u", event: "E" }, { authorization: auth("nope") });
    expect(unknown.status).toBe(401);
    expect(await unknown.json()).toMatchObject({ error: "unknown write key" });
    expect((await post("/v1/track", { userId: "u", event: "E" }, {})).status).toBe(401);
  });

  it("takes the write key from the body, as browser SDKs send it", async () => {
    const res = await post(
      "/v1/track",
      { writeKey: "demo-web-write-key", userId: "u", event: "E", messageId: "http-bodykey" },
      {},
    );
    expect(res.status).toBe(200);
    expect((await stored("http-bodykey"))[0]?.source).toBe("website");
  });

  it("accepts 97 of a batch of 100 with 3 malformed, naming each by index and reason", async () => {
    const batch: unknown[] = Array.from({ length: 100 }, (_, i) => ({
      type: "track",
      event: "Batch Item",
      userId: `b-${i % 7}`,
      messageId: `http-batch-${i}`,
    }));
    batch[5] = { type: "track", userId: "b-x", messageId: "http-batch-5" };
    batch[50] = { type: "track", event: "No one", messageId: "http-batch-50" };
    batch[99] = "not an event";
    const res = await post("/v1/batch", { batch });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { accepted: number; rejected: { index: number; reason: string }[] };
    expect(body.accepted).toBe(97);
    expect(body.rejected).toEqual([
      { index: 5, messageId: "http-batch-5", reason: "event: a track call needs an event name" },
      { index: 50, messageId: "http-batch-50", reason: "userId: either userId or anonymousId is required" },
      { index: 99, messageId: "", reason: 'an event must be a JSON object, got string "not an event"' },
    ]);
    const ids = new Set((await stored("http-batch-")).map((e) => e.messageId));
    expect(ids.size).toBe(97);
    expect(ids.has("http-batch-5") || ids.has("http-batch-50")).toBe(false);
  });

  it("refuses a body over 500 KB with 413, and a bad JSON body with 400", async () => {
    const big = {
      batch: [{ type: "track", userId: "u", event: "E", properties: { s: "x".repeat(600 * 1024) } }],
    };
    const res = await post("/v1/batch", big);
    expect(res.status).toBe(413);
    const bad = await fetch(`${svc.httpUrl}/v1/track`, {
      method: "POST",
      headers: { authorization: auth(WRITE_KEY) },
      body: "{",
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/not valid JSON/);
  });

  it("answers 404 for an unknown path and 405 for a GET", async () => {
    expect((await post("/v1/nothing", {})).status).toBe(404);
    expect((await fetch(`${svc.httpUrl}/v1/track`)).status).toBe(405);
  });
});

describe("IngestService over gRPC", () => {
  it("accepts a unary batch, rejecting invalid events by index; ingestion owns workspace and receivedAt", async () => {
    const client = createGrpcClient(IngestService, svc.grpcAddress);
    try {
      const res = await client.ingest({
        writeKey: WRITE_KEY,
        events: [
          create(EventSchema, {
            messageId: "grpc-1",
            type: EventType.TRACK,
            name: "E",
            userId: "g-1",
            workspace: "spoofed",
          }),
          create(EventSchema, { messageId: "grpc-2", type: EventType.TRACK, userId: "g-1" }),
        ],
      });
      expect(res.accepted).toBe(1);
      expect(res.rejections).toMatchObject([
        { index: 1, messageId: "grpc-2", reason: "event: a track call needs an event name" },
      ]);
      const [e] = await stored("grpc-1");
      expect(e?.workspace).toBe("demo");
      expect(e?.receivedAt).toBeDefined();
      await expect(client.ingest({ writeKey: "nope", events: [] })).rejects.toThrow(/unknown write key/);
    } finally {
      client.close();
    }
  });

  it("accepts a client stream, counting indexes across chunks", async () => {
    const client = createGrpcClient(IngestService, svc.grpcAddress);
    try {
      async function* chunks() {
        for (let c = 0; c < 5; c++) {
          yield {
            writeKey: c === 0 ? WRITE_KEY : "",
            events: Array.from({ length: 20 }, (_, i) =>
              create(EventSchema, {
                messageId: `grpc-stream-${c * 20 + i}`,
                type: EventType.IDENTIFY,
                userId: c * 20 + i === 42 ? "" : `s-${i}`,
              }),
            ),
          };
        }
      }
      const res = await client.ingestStream(chunks());
      expect(res.accepted).toBe(99);
      expect(res.rejections.map((r) => r.index)).toEqual([42]);
      expect(await stored("grpc-stream-")).toHaveLength(99);
    } finally {
      client.close();
    }
  });
});
