/**
 * Channel benchmark: per-channel lateness against each channel's SLO, under load.
 *
 * 3. web, end to end: ingestion, identity, segmentation, suppression and
 *    dispatcher-web as real processes; 200 browsers-worth of Server-Sent Events
 *    streams; `Product Viewed` events paced through the Segment HTTP API; a
 *    journey pushes an action to the sender's stream. Latency is client-side,
 *    from the event's POST to the action's arrival on the stream.
 * 1. email throughput: 20,000 actions waiting on DISPATCH, dispatcher-email
 *    started as a process, delivering to a local ESP-style endpoint.
 * 2. email and contact-centre lateness at a paced rate (delivered-at minus
 *    due-at, from their outcomes).
 *
 *   ./kairos bench dispatch   (BENCH_WEB_RATES=200,1000 BENCH_SECONDS=15 BENCH_EMAIL=20000)
 *
 * Prints a table and one `DISPATCH {json}` line.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { DispatchSchema, OutcomeSchema, OutcomeStatus } from "@kairos/contracts";
import { ensureStreams, subjects } from "@kairos/kit";
import { Mesh, NatsServer, sleep, waitFor } from "@kairos/testkit";
import { peakRssMiB, summarize } from "./stats.js";

const WEB_RATES = (process.env.BENCH_WEB_RATES ?? "200,1000")
  .split(",")
  .filter((r) => r.trim() !== "")
  .map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const EMAILS = Number(process.env.BENCH_EMAIL ?? 20_000);
const STREAMS = 200;
const KEY = "bench-web-key";
const auth = `Basic ${Buffer.from(`${KEY}:`).toString("base64")}`;

function meshConfig(endpoint: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "kairos-bench-dispatch-")), "mesh.yaml");
  writeFileSync(
    file,
    `workspaces:
  - id: bench
    writeKeys: [{ key: ${KEY}, source: website }]
    journeys:
      - name: live-offer
        trigger: { event: Product Viewed }
        reentry: every
        action:
          channel: web
          purpose: service
          relevance: 10s
          payload: { seq: "{{event.properties.seq}}" }
channels:
  - name: web
    mode: respond
    freshnessSlo: 100ms
    quietHours: false
    circuitBreaker: false
${process.env.BENCH_WEB_CONCURRENCY === undefined ? "" : `    concurrency: ${process.env.BENCH_WEB_CONCURRENCY}\n`}  - name: email
    mode: inspire
    freshnessSlo: 2m
    settings:
      url: ${endpoint}/esp
      from: "Bench <bench@example.org>"
      templates: { default: { subject: "Hi {{traits.first_name}}", text: "Hello {{traits.first_name}}", html: "<p>Hello</p>" } }
  - name: contact-centre
    mode: respond
    freshnessSlo: 2s
    settings: { url: ${endpoint}/crm }
`,
  );
  return file;
}

/** A local ESP/CRM: answers 200 with a message id, counts requests. */
async function startEndpoint(): Promise<{ server: Server; url: string; count: () => number }> {
  let n = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      n++;
      res.writeHead(200, { "content-type": "application/json" }).end(`{"id":"m-${n}"}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, count: () => n };
}

/** Opens one SSE stream; calls `onSeq` with each action's payload seq. */
function openStream(base: string, anonymousId: string, onSeq: (seq: number) => void): Promise<() => void> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/v1/stream?writeKey=${KEY}&anonymousId=${anonymousId}`, (res) => {
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (/^: subscribed$/m.test(frame)) resolve(() => res.destroy());
          const data = /^data: (.*)$/m.exec(frame)?.[1];
          if (data !== undefined)
            onSeq(Number((JSON.parse(data) as { payload: { seq: string } }).payload.seq));
        }
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** Hop times of the web channel's DELIVERED outcomes, per run. */
const hops: { toIntent: number[]; suppress: number[]; dispatch: number[] } = {
  toIntent: [],
  suppress: [],
  dispatch: [],
};

async function webEndToEnd(
  mesh: Mesh,
  rate: number,
  seqBase: number,
  sentAt: Map<number, number>,
  latency: Map<number, number>,
) {
  hops.toIntent = [];
  hops.suppress = [];
  hops.dispatch = [];
  const ids = Array.from({ length: STREAMS }, (_, i) => `anon-${i}`);
  const total = rate * SECONDS;
  const batch = Math.max(1, Math.round(rate / 20)); // one POST every 50 ms
  const t0 = performance.now();
  let sent = 0;
  const posts: Promise<unknown>[] = [];
  while (sent < total) {
    const due = t0 + (sent / rate) * 1000;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const events = [];
    const now = performance.now();
    for (let i = 0; i < batch && sent < total; i++, sent++) {
      const seq = seqBase + sent;
      sentAt.set(seq, now);
      events.push({
        type: "track",
        anonymousId: ids[seq % STREAMS],
        event: "Product Viewed",
        properties: { seq },
        messageId: randomUUID(),
      });
    }
    posts.push(
      fetch(`${mesh.httpUrl}/v1/batch`, {
        method: "POST",
        headers: { authorization: auth, "content-type": "application/json" },
        body: JSON.stringify({ batch: events }),
      }),
    );
  }
  await Promise.all(posts);
  const sendSeconds = (performance.now() - t0) / 1000;
  const want = (s: number) => s >= seqBase && s < seqBase + total;
  await waitFor(() => [...latency.keys()].filter(want).length >= total, { timeoutMs: 120_000 }).catch(
    () => undefined,
  );
  const values = [...latency.entries()].filter(([s]) => want(s)).map(([, v]) => v);
  return {
    rate,
    sent: total,
    sendSeconds: Math.round(sendSeconds * 10) / 10,
    received: values.length,
    ...summarize(values),
    // Server-side hops: ingestion → intent (ingestion, identity, segmentation), intent →
    // decision (suppression), decision → delivered (dispatcher-web).
    hops: {
      to_intent: summarize(hops.toIntent),
      suppression: summarize(hops.suppress),
      dispatch: summarize(hops.dispatch),
    },
  };
}

function dispatchMessage(channel: string, id: string, dueMs: number) {
  return toBinary(
    DispatchSchema,
    create(DispatchSchema, {
      intent: {
        actionId: id,
        workspace: "bench",
        profileId: `p-${id}`,
        channel,
        journey: "bench",
        purpose: "marketing",
        intendedAt: timestampFromMs(dueMs),
      },
      destinations: [{ type: "email", value: `${id}@example.org` }],
      profileTraits: { first_name: "Ada" },
      dueAt: timestampFromMs(dueMs),
    }),
  );
}

async function main() {
  const nats = await NatsServer.start();
  const endpoint = await startEndpoint();
  const config = meshConfig(endpoint.url);
  const nc: NatsConnection = await connect({ servers: nats.url });
  const js = jetstream(nc);
  await ensureStreams(await jetstreamManager(nc));
  const results: Record<string, unknown> = {};
  try {
    // 3. web, end to end from ingestion (last: the channel figures are taken on a quiet machine).
    async function webRuns() {
      const mesh = await Mesh.start({
        natsUrl: nats.url,
        config,
        webhookUrl: `${endpoint.url}/unused`,
        services: ["identity", "segmentation", "suppression", "dispatcher-web", "ingestion"],
      });
      const hopSub = nc.subscribe("kairos.outcomes.bench.web", {
        callback: (_, m) => {
          const o = fromBinary(OutcomeSchema, m.data);
          const t = o.times;
          if (
            o.status !== OutcomeStatus.DELIVERED ||
            t?.eventReceivedAt === undefined ||
            t.intendedAt === undefined
          )
            return;
          if (t.decidedAt === undefined || t.deliveredAt === undefined) return;
          hops.toIntent.push(timestampMs(t.intendedAt) - timestampMs(t.eventReceivedAt));
          hops.suppress.push(timestampMs(t.decidedAt) - timestampMs(t.intendedAt));
          hops.dispatch.push(timestampMs(t.deliveredAt) - timestampMs(t.decidedAt));
        },
      });
      try {
        const sentAt = new Map<number, number>();
        const latency = new Map<number, number>();
        const closers = await Promise.all(
          Array.from({ length: STREAMS }, (_, i) =>
            openStream(mesh.httpUrlOf("dispatcher-web"), `anon-${i}`, (seq) => {
              const t = sentAt.get(seq);
              if (t !== undefined && !latency.has(seq)) latency.set(seq, performance.now() - t);
            }),
          ),
        );
        // Warm up: every customer's profile exists before the measured runs.
        await webEndToEnd(mesh, 200, 0, sentAt, latency).catch(() => undefined);
        const web = [];
        let base = 1_000_000;
        for (const rate of WEB_RATES) {
          web.push(await webEndToEnd(mesh, rate, base, sentAt, latency));
          base += 1_000_000;
          await sleep(2000);
        }
        results.web = { slo_ms: 100, runs: web, rss_mib: await peakRssMiB(mesh.pid("dispatcher-web")) };
        for (const c of closers) c();
      } finally {
        hopSub.unsubscribe();
        await mesh.stop();
      }
    }

    // 2. email throughput, and 3. paced lateness for email and contact centre.
    const delivered = new Map<string, number>();
    const lateness = new Map<string, number[]>();
    nc.subscribe("kairos.outcomes.bench.>", {
      callback: (_, m) => {
        const o = fromBinary(OutcomeSchema, m.data);
        if (o.status !== OutcomeStatus.DELIVERED) return;
        delivered.set(o.channel, (delivered.get(o.channel) ?? 0) + 1);
        if (o.times?.deliveredAt !== undefined && o.times.dueAt !== undefined) {
          const l = lateness.get(o.channel) ?? [];
          l.push(timestampMs(o.times.deliveredAt) - timestampMs(o.times.dueAt));
          lateness.set(o.channel, l);
        }
      },
    });
    const run = randomUUID().slice(0, 6);
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < EMAILS; i++) {
      const id = `act_${run}_e${i}`;
      pending.push(
        js.publish(subjects.dispatch("bench", "email"), dispatchMessage("email", id, Date.now()), {
          msgID: id,
        }),
      );
      if (pending.length >= 1000) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    const channels = await Mesh.start({
      natsUrl: nats.url,
      config,
      webhookUrl: `${endpoint.url}/unused`,
      services: ["dispatcher-email", "dispatcher-contact-centre"],
      env: { LOG_LEVEL: "warn" },
    });
    try {
      const t0 = performance.now();
      await waitFor(() => (delivered.get("email") ?? 0) >= EMAILS, { timeoutMs: 300_000, intervalMs: 50 });
      const seconds = (performance.now() - t0) / 1000;
      results.email_throughput = {
        deliveries: EMAILS,
        seconds: Math.round(seconds * 10) / 10,
        per_second: Math.round(EMAILS / seconds),
        target_per_second: 2000,
      };
      lateness.clear();
      // Paced: email at 1,000/s and contact centre at 200/s for SECONDS, at the same time.
      const paced = async (channel: string, rate: number) => {
        const t = performance.now();
        for (let i = 0; i < rate * SECONDS; i++) {
          const wait = t + (i / rate) * 1000 - performance.now();
          if (wait > 0) await sleep(wait);
          const id = `act_${run}_${channel}_p${i}`;
          void js.publish(subjects.dispatch("bench", channel), dispatchMessage(channel, id, Date.now()), {
            msgID: id,
          });
        }
      };
      const before = { email: delivered.get("email") ?? 0, cc: delivered.get("contact-centre") ?? 0 };
      await Promise.all([paced("email", 1000), paced("contact-centre", 200)]);
      await waitFor(
        () =>
          (delivered.get("email") ?? 0) - before.email >= 1000 * SECONDS &&
          (delivered.get("contact-centre") ?? 0) - before.cc >= 200 * SECONDS,
        { timeoutMs: 120_000 },
      ).catch(() => undefined);
      results.email_paced = { rate: 1000, slo_ms: 120_000, ...summarize(lateness.get("email") ?? []) };
      results.contact_centre_paced = {
        rate: 200,
        slo_ms: 2000,
        ...summarize(lateness.get("contact-centre") ?? []),
      };
      results.rss_mib = {
        "dispatcher-email": await peakRssMiB(channels.pid("dispatcher-email")),
        "dispatcher-contact-centre": await peakRssMiB(channels.pid("dispatcher-contact-centre")),
      };
    } finally {
      await channels.stop();
    }
    if (WEB_RATES.length > 0) await webRuns();
  } finally {
    await nc.close();
    endpoint.server.close();
    await nats.stop();
  }
  type Hop = { p50_ms: number; p99_ms: number };
  const web = (results.web ?? { runs: [] }) as {
    runs: {
      rate: number;
      sent: number;
      received: number;
      p50_ms: number;
      p99_ms: number;
      hops: { to_intent: Hop; suppression: Hop; dispatch: Hop };
    }[];
  };
  console.log("\nchannel lateness under load (client-side for web; delivered-at − due-at for the others)");
  for (const r of web.runs) {
    console.log(
      `  web e2e @ ${r.rate}/s: received ${r.received}/${r.sent}, p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms (SLO p99 ≤ 100 ms)`,
    );
    const h = (x: Hop) => `p50 ${x.p50_ms} / p99 ${x.p99_ms} ms`;
    console.log(
      `    hops: event → intent ${h(r.hops.to_intent)}; suppression ${h(r.hops.suppression)}; dispatch ${h(r.hops.dispatch)}`,
    );
  }
  const t = results.email_throughput as { per_second: number; deliveries: number; seconds: number };
  console.log(`  email throughput: ${t.deliveries} in ${t.seconds} s = ${t.per_second}/s (target ≥ 2,000/s)`);
  const e = results.email_paced as { p50_ms: number; p99_ms: number };
  const c = results.contact_centre_paced as { p50_ms: number; p99_ms: number };
  console.log(`  email @ 1000/s: p50 ${e.p50_ms} ms, p99 ${e.p99_ms} ms (SLO 2 min)`);
  console.log(`  contact centre @ 200/s: p50 ${c.p50_ms} ms, p99 ${c.p99_ms} ms (SLO 2 s)`);
  console.log(
    `  peak RSS MiB: web ${String((results.web as { rss_mib?: number } | undefined)?.rss_mib)}, ${JSON.stringify(results.rss_mib)}`,
  );
  console.log(`DISPATCH ${JSON.stringify(results)}`);
}

await main();
