/**
 * End-to-end benchmark: starts a nats-server and the whole mesh as separate
 * processes, measures the bus ceiling on that server, then drives the mesh over
 * the Segment HTTP API and gRPC and prints what it sustained:
 *
 * - events/s accepted (durable) and fully processed (profile updated, actions delivered);
 * - ingestion accept latency at a paced 1,000 events/s (client-side, per request);
 * - p50/p99 per stage and end to end, from the hop times of delivered outcomes
 *   and the store times of profile changes;
 * - peak RSS per service; the ratio to the bus ceiling; loss and double sends.
 *
 *   pnpm bench:e2e          (BENCH_EVENTS=50000 BENCH_PACED_SECONDS=10 to change the load)
 *
 * Prints a readable table and one `E2E {json}` line.
 */
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  EventSchema,
  EventType,
  IngestService,
  OutcomeSchema,
  OutcomeStatus,
  ProfileChangedSchema,
} from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";
import { Mesh, meshServices, NatsServer, sleep, waitFor } from "@kairos/testkit";
import { measureBusCeiling } from "./bus-ceiling.js";
import { histogramQuantileMs, peakRssMiB, scrapeHistogram, summarize } from "./stats.js";

const TOTAL = Number(process.env.BENCH_EVENTS ?? 50_000);
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 10);
const HTTP_KEY = "bench-http-write-key";
const GRPC_KEY = "bench-grpc-write-key";
const auth = `Basic ${Buffer.from(`${HTTP_KEY}:`).toString("base64")}`;
const run = randomUUID().slice(0, 8);

/** One customer's calls: identify (a fifth on gold), views, and an order. */
function customer(n: number): Record<string, unknown>[] {
  const userId = `bench-${run}-${n}`;
  return [
    {
      type: "identify",
      userId,
      traits: { email: `${userId}@example.org`, first_name: "Ada", plan: n % 5 === 0 ? "gold" : "basic" },
    },
    { type: "track", userId, event: "Product Viewed", properties: { sku: `sku-${n % 50}` } },
    { type: "page", userId, name: "Checkout" },
    { type: "track", userId, event: "Product Viewed", properties: { sku: `sku-${(n + 7) % 50}` } },
    { type: "track", userId, event: "Order Completed", properties: { order_id: `o-${n}`, revenue: 20 } },
  ];
}

/** `count` events as whole customers; returns them and how many actions they should cause. */
function traffic(first: number, count: number) {
  const events: Record<string, unknown>[] = [];
  let actions = 0;
  for (let n = first; events.length < count; n++) {
    const calls = customer(n).slice(0, count - events.length);
    for (const c of calls) {
      events.push({ ...c, messageId: randomUUID() });
      if (c.event === "Order Completed") actions++;
      if (c.type === "identify" && (c.traits as { plan: string }).plan === "gold") actions++;
    }
  }
  return { events, actions, nextCustomer: first + Math.ceil(count / 5) + 1 };
}

async function postBatch(url: string, batch: unknown[]): Promise<number> {
  const t = performance.now();
  const res = await fetch(`${url}/v1/batch`, {
    method: "POST",
    headers: { authorization: auth, "content-type": "application/json" },
    body: JSON.stringify({ batch }),
  });
  const body = (await res.json()) as { accepted?: number; duplicates?: number; rejected?: unknown[] };
  if (res.status !== 200 || (body.rejected?.length ?? 0) > 0) {
    throw new Error(`batch refused: ${res.status} ${JSON.stringify(body).slice(0, 300)}`);
  }
  return performance.now() - t;
}

function startEndpoint() {
  const seen = new Map<string, number>();
  let posts = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      posts++;
      const key = String(req.headers["idempotency-key"] ?? "");
      seen.set(key, (seen.get(key) ?? 0) + 1);
      res.writeHead(200).end();
    });
  });
  return new Promise<{ url: string; posts: () => number; unique: () => number; close: () => void }>(
    (resolve) =>
      server.listen(0, "127.0.0.1", () =>
        resolve({
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/webhook`,
          posts: () => posts,
          unique: () => seen.size,
          close: () => server.close(),
        }),
      ),
  );
}

/** Sends 1,000 events/s for `seconds` (10 events every 10 ms); returns latencies and the next customer. */
async function pacedAccept(mesh: Mesh, firstCustomer: number, seconds: number) {
  const metric = () =>
    scrapeHistogram(
      `${mesh.opsUrl("ingestion")}/metrics`,
      "kairos_ingest_accept_duration_seconds",
      'door="http"',
    );
  const before = await metric();
  const latencies: number[] = [];
  const t = traffic(firstCustomer, 1000 * seconds);
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < t.events.length; i += 10) {
    const wait = start + i - performance.now();
    if (wait > 0) await sleep(wait);
    pending.push(postBatch(mesh.httpUrl, t.events.slice(i, i + 10)).then((ms) => void latencies.push(ms)));
  }
  await Promise.all(pending);
  const rate = t.events.length / ((performance.now() - start) / 1000);
  const after = await metric();
  return {
    traffic: t,
    achieved_events_per_s: Math.round(rate),
    request_of_10_events: summarize(latencies),
    accept_to_durable: {
      p50_ms_at_most: histogramQuantileMs(before, after, 0.5),
      p99_ms_at_most: histogramQuantileMs(before, after, 0.99),
    },
  };
}

async function streamCount(jsm: JetStreamManager, stream: string): Promise<number> {
  return (await jsm.streams.info(stream)).state.messages;
}

async function main(): Promise<void> {
  const nats = await NatsServer.start();
  const endpoint = await startEndpoint();
  const config = fileURLToPath(new URL("mesh.yaml", import.meta.url));
  let mesh: Mesh | undefined;
  try {
    process.stderr.write("bench: measuring the bus ceiling\n");
    const bus = await measureBusCeiling(nats.url, { messages: 50_000 });
    process.stderr.write(`bench: bus ceiling ${bus.publish_msgs_per_s} publishes/s; starting the mesh\n`);
    // Ingestion alone first: its own accept latency at 1,000 events/s, nothing else on the cores.
    const alone = await Mesh.start({
      natsUrl: nats.url,
      config,
      webhookUrl: endpoint.url,
      services: ["ingestion"],
    });
    process.stderr.write(`bench: ingestion alone, paced 1,000 events/s for ${PACED_SECONDS}s\n`);
    const ingestionAlone = await pacedAccept(alone, 0, PACED_SECONDS);
    await alone.stop();
    // Those events stay in EVENTS: the mesh processes them first, and their actions count.
    const earlier = ingestionAlone.traffic.actions;
    mesh = await Mesh.start({ natsUrl: nats.url, config, webhookUrl: endpoint.url });
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const grpc = createGrpcClient(IngestService, mesh.grpcAddress("ingestion"));

    // Warm up every hop (JIT, connections, KV buckets).
    let next = ingestionAlone.traffic.nextCustomer;
    const warm = traffic(next, 500);
    next = warm.nextCustomer;
    await postBatch(mesh.httpUrl, warm.events);
    await waitFor(() => endpoint.unique() >= earlier + warm.actions, {
      timeoutMs: 60_000,
      what: "warm-up actions",
    });

    // Phase 1: ingestion at a paced 1,000 events/s while the whole mesh works on them.
    process.stderr.write(`bench: paced 1,000 events/s for ${PACED_SECONDS}s\n`);
    const pacedMesh = await pacedAccept(mesh, next, PACED_SECONDS);
    const pacedTraffic = pacedMesh.traffic;
    next = pacedTraffic.nextCustomer;
    await waitFor(() => endpoint.unique() >= earlier + warm.actions + pacedTraffic.actions, {
      timeoutMs: 120_000,
      what: "paced actions",
    });

    // Phase 2: as fast as the mesh takes it; 3/4 over HTTP batches of 100, 1/4 over gRPC batches of 500.
    process.stderr.write(`bench: ${TOTAL} events as fast as accepted\n`);
    const load = traffic(next, TOTAL);
    const expectedActions = earlier + warm.actions + pacedTraffic.actions + load.actions;
    const profilesBefore = await streamCount(jsm, "PROFILES");
    const outcomesSeq = (await jsm.streams.info("OUTCOMES")).state.last_seq;
    const split = Math.floor((load.events.length * 3) / 4 / 100) * 100;
    const httpEvents = load.events.slice(0, split);
    const grpcEvents = load.events.slice(split);
    const t0 = performance.now();
    let cursor = 0;
    const httpWorker = async () => {
      while (cursor < httpEvents.length) {
        const i = cursor;
        cursor += 100;
        await postBatch(mesh!.httpUrl, httpEvents.slice(i, i + 100));
      }
    };
    let gCursor = 0;
    const grpcWorker = async () => {
      while (gCursor < grpcEvents.length) {
        const i = gCursor;
        gCursor += 500;
        const events = grpcEvents.slice(i, i + 500).map((e) =>
          create(EventSchema, {
            messageId: String(e.messageId),
            type:
              e.type === "identify"
                ? EventType.IDENTIFY
                : e.type === "page"
                  ? EventType.PAGE
                  : EventType.TRACK,
            userId: String(e.userId),
            name: typeof e.event === "string" ? e.event : typeof e.name === "string" ? e.name : "",
            ...(e.traits === undefined ? {} : { traits: e.traits as never }),
            ...(e.properties === undefined ? {} : { properties: e.properties as never }),
          }),
        );
        const res = await grpc.ingest({ writeKey: GRPC_KEY, events });
        if (res.rejections.length > 0) throw new Error(`gRPC rejected ${JSON.stringify(res.rejections[0])}`);
      }
    };
    await Promise.all([...Array.from({ length: 8 }, httpWorker), grpcWorker(), grpcWorker()]);
    const acceptedS = (performance.now() - t0) / 1000;
    await waitFor(
      async () =>
        (await streamCount(jsm, "PROFILES")) - profilesBefore >= load.events.length &&
        endpoint.unique() >= expectedActions,
      { timeoutMs: 300_000, intervalMs: 50, what: "every event profiled and every action delivered" },
    );
    const processedS = (performance.now() - t0) / 1000;
    await sleep(2000); // anything sent twice would arrive now

    // Per-stage latencies from the hop times of the load phase's delivered outcomes.
    const hop = {
      resolve_and_segment: [] as number[],
      suppress: [] as number[],
      dispatch: [] as number[],
      end_to_end: [] as number[],
    };
    const oc = await js.consumers.get("OUTCOMES", {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: outcomesSeq + 1,
    });
    const outcomesEnd = (await jsm.streams.info("OUTCOMES")).state.last_seq;
    if (outcomesEnd > outcomesSeq) {
      for await (const m of await oc.consume()) {
        const o = fromBinary(OutcomeSchema, m.data);
        const t = o.times;
        if (
          o.status === OutcomeStatus.DELIVERED &&
          t?.eventReceivedAt &&
          t.intendedAt &&
          t.decidedAt &&
          t.deliveredAt
        ) {
          const [r, i, d, x] = [t.eventReceivedAt, t.intendedAt, t.decidedAt, t.deliveredAt].map(
            timestampMs,
          ) as [number, number, number, number];
          hop.resolve_and_segment.push(i - r);
          hop.suppress.push(d - i);
          hop.dispatch.push(x - d);
          hop.end_to_end.push(x - r);
        }
        if (m.seq >= outcomesEnd) break;
      }
    }
    // Identity: from ingestion's receivedAt to the ProfileChanged stored in PROFILES.
    const identity: number[] = [];
    const profilesInfo = await jsm.streams.info("PROFILES");
    const sampleFrom = Math.max(profilesInfo.state.first_seq, profilesInfo.state.last_seq - 5000);
    for (let seq = sampleFrom; seq <= profilesInfo.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage("PROFILES", { seq }).catch(() => null);
      if (m === null) continue;
      const c = fromBinary(ProfileChangedSchema, m.data);
      if (c.eventReceivedAt) identity.push(m.time.getTime() - timestampMs(c.eventReceivedAt));
    }

    const rss: Record<string, number> = {};
    for (const s of meshServices) rss[s] = await peakRssMiB(mesh.pid(s));
    rss["nats-server"] = await peakRssMiB(nats.pid);
    const acceptedRate = Math.round(load.events.length / acceptedS);
    const processedRate = Math.round(load.events.length / processedS);
    const result = {
      events: load.events.length,
      accepted_events_per_s: acceptedRate,
      processed_events_per_s: processedRate,
      bus_ceiling_publishes_per_s: bus.publish_msgs_per_s,
      ratio_processed_to_bus_ceiling: Math.round((processedRate / bus.publish_msgs_per_s) * 1000) / 1000,
      // accept_to_durable is ingestion's own histogram (arrival to JetStream ack), as bucket upper bounds.
      paced_ingestion_alone: { ...ingestionAlone, traffic: undefined },
      paced_whole_mesh: { ...pacedMesh, traffic: undefined },
      stages: {
        identity_received_to_profile_stored: summarize(identity),
        resolve_and_segment_received_to_intent: summarize(hop.resolve_and_segment),
        suppress_intent_to_decision: summarize(hop.suppress),
        dispatch_decision_to_delivered: summarize(hop.dispatch),
        end_to_end_received_to_delivered: summarize(hop.end_to_end),
      },
      actions_expected: expectedActions,
      actions_delivered_unique: endpoint.unique(),
      posts_total: endpoint.posts(),
      double_sends: endpoint.posts() - endpoint.unique(),
      peak_rss_mib: rss,
      bus,
    };
    console.log(
      `\nKairos end to end, ${result.events} events (${process.env.BENCH_EVENTS === undefined ? "default" : "BENCH_EVENTS"})`,
    );
    console.log(`  accepted (durable)     ${acceptedRate} events/s`);
    console.log(
      `  fully processed        ${processedRate} events/s  (${result.ratio_processed_to_bus_ceiling} of the bus ceiling, ${bus.publish_msgs_per_s} publishes/s)`,
    );
    for (const [label, p] of [
      ["ingestion alone", ingestionAlone],
      ["whole mesh busy", pacedMesh],
    ] as const) {
      console.log(
        `  1,000 events/s, ${label.padEnd(16)} accept→durable p50 ≤ ${p.accept_to_durable.p50_ms_at_most} ms, p99 ≤ ${p.accept_to_durable.p99_ms_at_most} ms; HTTP request of 10 p50 ${p.request_of_10_events.p50_ms} ms, p99 ${p.request_of_10_events.p99_ms} ms`,
      );
    }
    for (const [k, v] of Object.entries(result.stages))
      console.log(`  ${k.padEnd(40)} p50 ${v.p50_ms} ms  p99 ${v.p99_ms} ms  (n=${v.n})`);
    console.log(
      `  actions delivered      ${result.actions_delivered_unique}/${expectedActions}, double sends ${result.double_sends}`,
    );
    console.log(
      `  peak RSS (MiB)         ${Object.entries(rss)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`,
    );
    console.log(`E2E ${JSON.stringify(result)}`);
    grpc.close();
    await nc.close();
  } finally {
    await mesh?.stop();
    endpoint.close();
    await nats[Symbol.asyncDispose]();
  }
}

await main();
