import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { fromBinary } from "@bufbuild/protobuf";
import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { DeadLetterSchema } from "@kairos/contracts";
import { NatsServer, waitFor, sleep } from "@kairos/testkit";
import { startConsumer, PermanentError, backoffDelay, type RunningConsumer } from "./consumer.js";
import { ensureConsumer, ensureStreams, subjects, type ConsumerSpec } from "./topology.js";
import { Publisher } from "./publisher.js";
import { Metrics } from "./metrics.js";
import { createLogger } from "./logger.js";
import { startTelemetry, type Telemetry } from "./telemetry.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

let server: NatsServer;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let telemetry: Telemetry;
const spans = new InMemorySpanExporter();

beforeAll(async () => {
  telemetry = startTelemetry({ service: "kit-test", spanProcessors: [new SimpleSpanProcessor(spans)] });
  server = await NatsServer.start();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
  await ensureStreams(jsm);
  js = jetstream(nc);
});

afterAll(async () => {
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
  await telemetry?.shutdown();
});

let n = 0;
/** A fresh consumer on its own PROFILES subject, so tests do not see each other's messages. */
async function fixture(overrides: Partial<ConsumerSpec> = {}) {
  const id = `t${++n}`;
  const subject = `kairos.profiles.${id}.0`;
  const spec: ConsumerSpec = {
    stream: "PROFILES",
    durable: `kit-${id}`,
    filterSubject: subject,
    maxDeliver: 4,
    ackWaitMs: 30_000,
    maxAckPending: 100,
    ...overrides,
  };
  await ensureConsumer(jsm, spec);
  const metrics = new Metrics(`svc-${id}`);
  const logger = createLogger({ service: `svc-${id}`, level: "silent" });
  return { id, subject, spec, metrics, logger, service: `svc-${id}` };
}

function run(
  f: Awaited<ReturnType<typeof fixture>>,
  handle: (body: string, ctx: { deliveryCount: number }) => Promise<void>,
  extra: { backoff?: { initialMs: number; maxMs: number; factor: number } } = {},
): RunningConsumer {
  return startConsumer({
    service: f.service,
    stage: "test",
    spec: f.spec,
    js,
    tracer: telemetry.tracer,
    metrics: f.metrics,
    logger: f.logger,
    decode: (d) => dec.decode(d),
    handle,
    concurrency: 4,
    ...extra,
  });
}

describe("consume loop against a real nats-server", () => {
  it("acks a handled message exactly once", async () => {
    const f = await fixture();
    const seen: number[] = [];
    const c = run(f, async (_b, ctx) => {
      seen.push(ctx.deliveryCount);
    });
    await js.publish(f.subject, enc.encode("hello"));
    await waitFor(
      async () => (await jsm.consumers.info("PROFILES", f.spec.durable)).ack_floor.stream_seq > 0,
      {
        what: "ack floor to advance",
      },
    );
    await sleep(300);
    const info = await jsm.consumers.info("PROFILES", f.spec.durable);
    expect(seen).toEqual([1]);
    expect(info.num_ack_pending).toBe(0);
    expect(info.num_redelivered).toBe(0);
    expect(info.num_pending).toBe(0);
    const text = await f.metrics.registry.getSingleMetricAsString("kairos_messages_total");
    expect(text).toMatch(/result="ack"[^\n]* 1$/m);
    const hist = await f.metrics.registry.getSingleMetricAsString("kairos_stage_duration_seconds");
    expect(hist).toMatch(/kairos_stage_duration_seconds_count\{[^}]*stage="test"[^}]*\} 1/);
    await c.stop(1000);
  });

  it("redelivers a transient failure with growing delay, then succeeds", async () => {
    const f = await fixture({ maxDeliver: 6 });
    const times: number[] = [];
    const c = run(
      f,
      async () => {
        times.push(Date.now());
        if (times.length < 4) throw new Error("downstream unavailable");
      },
      { backoff: { initialMs: 150, maxMs: 5000, factor: 2 } },
    );
    await js.publish(f.subject, enc.encode("flaky"));
    await waitFor(() => times.length >= 4, { timeoutMs: 10_000, what: "4 deliveries" });
    const gaps = times.slice(1).map((t, i) => t - (times[i] ?? t));
    // 150, 300, 600 ms (±20% jitter): each gap clearly longer than the one before.
    expect(gaps[0]).toBeGreaterThanOrEqual(110);
    expect(gaps[1]!).toBeGreaterThan(gaps[0]! * 1.3);
    expect(gaps[2]!).toBeGreaterThan(gaps[1]! * 1.3);
    await waitFor(async () => (await jsm.consumers.info("PROFILES", f.spec.durable)).num_ack_pending === 0);
    await c.stop(1000);
  });

  it("dead-letters a poison message with its reason and original bytes, and goes on", async () => {
    const f = await fixture();
    const handled: string[] = [];
    const c = run(f, async (body) => {
      if (body.startsWith("poison")) throw new PermanentError("field `type` is missing");
      handled.push(body);
    });
    const poison = enc.encode("poison \u0000\u00ff bytes");
    await js.publish(f.subject, poison);
    for (let i = 0; i < 5; i++) await js.publish(f.subject, enc.encode(`ok-${i}`));
    await waitFor(() => handled.length === 5, { what: "the 5 good messages" });
    expect(handled).toEqual(["ok-0", "ok-1", "ok-2", "ok-3", "ok-4"]);

    const dlq = await jsm.streams.getMessage("DLQ", { last_by_subj: subjects.dlq(f.service) });
    if (!dlq) throw new Error("no dead letter");
    const dl = fromBinary(DeadLetterSchema, dlq.data);
    expect(dl.reason).toBe("permanent");
    expect(dl.error).toContain("field `type` is missing");
    expect(dl.subject).toBe(f.subject);
    expect(dl.service).toBe(f.service);
    expect(Buffer.from(dl.data).equals(Buffer.from(poison))).toBe(true);
    expect(dl.deliveryCount).toBe(1);
    expect(dlq.header.get("Kairos-Dlq-Reason")).toBe("permanent");
    await c.stop(1000);
  });

  it("dead-letters after the last delivery of a message that keeps failing", async () => {
    const f = await fixture({ maxDeliver: 3 });
    let calls = 0;
    const c = run(
      f,
      async () => {
        calls++;
        throw new Error("always fails");
      },
      { backoff: { initialMs: 50, maxMs: 200, factor: 2 } },
    );
    await js.publish(f.subject, enc.encode("doomed"));
    const dlq = await waitFor(
      async () => {
        try {
          return (
            (await jsm.streams.getMessage("DLQ", { last_by_subj: subjects.dlq(f.service) })) ?? undefined
          );
        } catch {
          return undefined;
        }
      },
      { what: "dead letter" },
    );
    const dl = fromBinary(DeadLetterSchema, dlq.data);
    expect(dl.reason).toBe("max_deliveries");
    expect(dl.deliveryCount).toBe(3);
    expect(dec.decode(dl.data)).toBe("doomed");
    await sleep(400);
    expect(calls).toBe(3);
    await c.stop(1000);
  });

  it("makes the consumer's span a child of the publisher's span", async () => {
    const f = await fixture();
    spans.reset();
    let consumerSpanId = "";
    const c = run(f, async () => {
      consumerSpanId = trace.getActiveSpan()?.spanContext().spanId ?? "";
    });
    const publisher = new Publisher(js, telemetry.tracer, 8);
    const root = telemetry.tracer.startSpan("request");
    await context.with(trace.setSpan(context.active(), root), () =>
      publisher.publish(f.subject, enc.encode("traced")),
    );
    root.end();
    await waitFor(() => consumerSpanId !== "", { what: "handler" });
    await c.stop(1000);
    const all = spans.getFinishedSpans();
    const producer = all.find((s) => s.name === `${f.subject} publish`);
    const consumer = all.find((s) => s.name === `${f.subject} process`);
    expect(producer).toBeDefined();
    expect(consumer).toBeDefined();
    expect(consumer!.spanContext().spanId).toBe(consumerSpanId);
    expect(consumer!.spanContext().traceId).toBe(root.spanContext().traceId);
    expect(consumer!.parentSpanContext?.spanId).toBe(producer!.spanContext().spanId);
    expect(producer!.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
  });
});

describe("backoffDelay", () => {
  it("grows exponentially and is capped", () => {
    const b = { initialMs: 100, maxMs: 1000, factor: 2 };
    const mid = () => 0.5;
    expect([1, 2, 3, 4, 5, 9].map((n) => backoffDelay(b, n, mid))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(b, 1, () => 0)).toBe(80);
    expect(backoffDelay(b, 1, () => 1)).toBe(120);
  });
});
