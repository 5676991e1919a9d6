/**
 * The walking skeleton, end to end: every service of the mesh in this process
 * on a test nats-server, events from an unmodified Segment SDK over HTTP and
 * from a gRPC client, and a real local HTTP endpoint standing in for the channel.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { Analytics } from "@segment/analytics-node";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary } from "@bufbuild/protobuf";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import {
  EventSchema,
  EventType,
  IngestService,
  MembershipChange,
  ProfileChangedSchema,
  ProfileService,
  SegmentMembershipChangedSchema,
  SegmentService,
} from "@kairos/contracts";
import { createGrpcClient, loadConfig } from "@kairos/kit";
import { NatsServer, waitFor } from "@kairos/testkit";
import * as dispatcher from "@kairos/dispatcher-webhook";
import { startChannelEndpoint, type ChannelEndpoint } from "./channel-endpoint.js";
import { startCoreMesh, type CoreMesh } from "./in-process.js";

const demoConfig = fileURLToPath(new URL("../config/demo.yaml", import.meta.url));
const WS = "demo";
const spans = new InMemorySpanExporter();
const spanProcessors = [new SimpleSpanProcessor(spans)];

let nats: NatsServer;
let endpoint: ChannelEndpoint;
let nc: NatsConnection;
let jsm: JetStreamManager;
let mesh: CoreMesh | undefined;
let httpUrl: string;
let ingestAddr: string;
let identityAddr: string;
let segmentationAddr: string;

beforeAll(async () => {
  nats = await NatsServer.start();
  endpoint = await startChannelEndpoint();
  mesh = await startCoreMesh(nats.url, demoConfig, { spanProcessors });
  await mesh.add(
    dispatcher.startDispatcherWebhook(
      loadConfig(dispatcher.configSpec, { ...mesh.base, WEBHOOK_URL: endpoint.url }),
      {
        spanProcessors,
      },
    ),
  );
  httpUrl = mesh.httpUrl;
  ingestAddr = mesh.grpc.ingestion;
  identityAddr = mesh.grpc.identity;
  segmentationAddr = mesh.grpc.segmentation;
  nc = await connect({ servers: nats.url });
  jsm = await jetstreamManager(nc);
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
  await endpoint?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();
});

async function streamMessages<T>(stream: string, decode: (b: Uint8Array) => T): Promise<T[]> {
  const info = await jsm.streams.info(stream);
  const out: T[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push(decode(m.data));
  }
  return out;
}

/** Waits for the one POST carrying this profile's gold welcome, then checks nothing else came for it. */
async function welcomeFor(profileId: string) {
  const posts = await waitFor(
    () => {
      const p = endpoint.posts.filter((x) => x.body.profile_id === profileId);
      return p.length > 0 ? p : undefined;
    },
    { timeoutMs: 30_000, what: `the channel POST for ${profileId}` },
  );
  return posts;
}

async function lookups(identifiers: [string, string][]) {
  const client = createGrpcClient(ProfileService, identityAddr);
  try {
    const out = [];
    for (const [type, value] of identifiers) {
      out.push((await client.getProfile({ workspace: WS, identifier: { type, value } })).profile);
    }
    return out;
  } finally {
    client.close();
  }
}

describe("an event from a real Segment SDK reaches the channel", () => {
  it("merges the profile, enters the segment and POSTs exactly once with the idempotency key, in one trace", async () => {
    const anonymousId = randomUUID();
    const userId = `sdk-${randomUUID().slice(0, 8)}`;
    const email = `${userId}@Example.org`;
    const analytics = new Analytics({
      writeKey: "demo-web-write-key",
      host: httpUrl,
      flushAt: 10,
      flushInterval: 50,
    });
    // Anonymous browsing and a separately identified user: two profiles until identify links them.
    analytics.page({ anonymousId, name: "Home" });
    analytics.track({ userId, event: "Signed Up" });
    analytics.identify({ anonymousId, userId, traits: { email, plan: "gold", first_name: "Ada" } });
    await analytics.closeAndFlush();

    const profile = await waitFor(
      async () => {
        const [p] = await lookups([["email", email.toLowerCase()]]);
        return p?.traits?.plan === "gold" ? p : undefined;
      },
      { timeoutMs: 30_000, what: "the identified profile" },
    );
    const all = await waitFor(
      async () => {
        const found = await lookups([
          ["user_id", userId],
          ["anonymous_id", anonymousId],
          ["email", email.toLowerCase()],
        ]);
        return found.every((p) => p?.profileId === found[0]?.profileId) ? found : undefined;
      },
      { timeoutMs: 30_000, what: "one profile by every identifier" },
    );
    expect(all[0]?.profileId).toBe(profile.profileId);
    expect(profile.traits).toMatchObject({ plan: "gold", first_name: "Ada" });

    const segments = createGrpcClient(SegmentService, segmentationAddr);
    try {
      const res = await waitFor(
        async () => {
          const r = await segments.listMemberships({ workspace: WS, profileId: profile.profileId });
          return r.memberships.some((m) => m.segment === "gold") ? r : undefined;
        },
        { timeoutMs: 30_000, what: "gold membership" },
      );
      expect(res.memberships.map((m) => m.segment)).toContain("gold");
    } finally {
      segments.close();
    }
    const entered = await streamMessages("SEGMENTS", (b) => fromBinary(SegmentMembershipChangedSchema, b));
    expect(entered.filter((e) => e.profileId === profile.profileId && e.segment === "gold")).toHaveLength(1);
    expect(entered.find((e) => e.profileId === profile.profileId)?.change).toBe(MembershipChange.ENTERED);

    const posts = await welcomeFor(profile.profileId);
    await new Promise((r) => setTimeout(r, 1000)); // a second POST would arrive now
    const again = endpoint.posts.filter((x) => x.body.profile_id === profile.profileId);
    expect(again).toHaveLength(1);
    const post = posts[0]!;
    expect(post.headers["idempotency-key"]).toMatch(/^act_[0-9a-f]{32}$/);
    expect(post.headers["idempotency-key"]).toBe(post.body.action_id);

    // One trace, from the SDK's HTTP request through every service to the POST.
    const traceId = String(post.headers.traceparent ?? "").split("-")[1];
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    await waitFor(
      () =>
        spans
          .getFinishedSpans()
          .some((s) => s.spanContext().traceId === traceId && s.name.includes("dispatch")) || undefined,
      {
        what: "the dispatcher's span",
      },
    );
    const services = new Set(
      spans
        .getFinishedSpans()
        .filter((s) => s.spanContext().traceId === traceId)
        .map((s) => String(s.resource.attributes["service.name"])),
    );
    expect([...services]).toEqual(
      expect.arrayContaining(["ingestion", "identity", "segmentation", "suppression", "dispatcher-webhook"]),
    );
  });

  it("does the same for events sent over gRPC", async () => {
    const userId = `grpc-${randomUUID().slice(0, 8)}`;
    const client = createGrpcClient(IngestService, ingestAddr);
    try {
      const res = await client.ingest({
        writeKey: "demo-server-write-key",
        events: [
          create(EventSchema, { messageId: randomUUID(), type: EventType.TRACK, name: "Opened App", userId }),
          create(EventSchema, {
            messageId: randomUUID(),
            type: EventType.TRACK,
            name: "Order Completed",
            userId,
            properties: { revenue: 49.5 },
          }),
          create(EventSchema, {
            messageId: randomUUID(),
            type: EventType.IDENTIFY,
            userId,
            traits: { email: `${userId}@example.org`, plan: "gold", first_name: "Grace" },
          }),
        ],
      });
      expect(res.accepted).toBe(3);
    } finally {
      client.close();
    }
    const profile = await waitFor(
      async () => {
        const [p] = await lookups([["email", `${userId}@example.org`]]);
        return p?.traits?.plan === "gold" ? p : undefined;
      },
      { timeoutMs: 30_000, what: "the profile" },
    );
    const posts = await welcomeFor(profile.profileId);
    expect(posts).toHaveLength(1);
    expect(posts[0]!.body.payload).toMatchObject({ greeting: "Welcome to gold, Grace" });
    // Computed traits from the demo config, kept by identity.
    const computed = await waitFor(async () => {
      const [p] = await lookups([["user_id", userId]]);
      return p?.computedTraits?.orders_30d === 1 ? p.computedTraits : undefined;
    });
    expect(computed).toMatchObject({ orders_30d: 1, lifetime_value: 49.5 });
    expect(typeof computed.last_seen_at).toBe("string");
  });

  it("accepts 97 of 100 events with 3 malformed, reports each by index, and loses none of the rest", async () => {
    const userId = `batch-${randomUUID().slice(0, 8)}`;
    const batch: Record<string, unknown>[] = Array.from({ length: 100 }, (_, i) => ({
      type: "track",
      event: "Item Viewed",
      userId: `${userId}-${i % 10}`,
      messageId: `${userId}-m${i}`,
    }));
    batch[10] = { type: "track", userId, messageId: `${userId}-m10` };
    batch[20] = { type: "identify", traits: { plan: "x" }, messageId: `${userId}-m20` };
    batch[30] = { type: "track", event: "E", userId, timestamp: "not a date", messageId: `${userId}-m30` };
    const res = await fetch(`${httpUrl}/v1/batch`, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from("demo-server-write-key:").toString("base64")}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ batch }),
    });
    const body = (await res.json()) as { accepted: number; rejected: { index: number; reason: string }[] };
    expect(res.status).toBe(200);
    expect(body.accepted).toBe(97);
    expect(body.rejected.map((r) => r.index)).toEqual([10, 20, 30]);
    expect(body.rejected.map((r) => r.reason)).toEqual([
      "event: a track call needs an event name",
      "userId: either userId or anonymousId is required",
      'timestamp: is not an ISO-8601 date: "not a date"',
    ]);
    const wanted = new Set(batch.map((e) => String(e.messageId)).filter((_, i) => ![10, 20, 30].includes(i)));
    await waitFor(
      async () => {
        const changes = await streamMessages("PROFILES", (b) => fromBinary(ProfileChangedSchema, b));
        const got = new Set(changes.map((c) => c.eventId).filter((id) => wanted.has(id)));
        return got.size === wanted.size;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "a profile change for each of the 97 accepted events" },
    );
  });
});
