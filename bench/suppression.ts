/**
 * Suppression's figures, with identity and suppression as real child processes
 * on a nats-server:
 *   - decisions/s: N intents for C customers pre-published (5 per customer against a
 *     daily cap of 3, so both dispatches and cap suppressions, each read-decide-CAS),
 *     then the time from suppression's start until every one is decided;
 *   - `Check` p50/p99 over gRPC at a paced rate, and closed-loop.
 * Prints `SUPPRESSION {json}`.
 *
 *   pnpm exec tsx bench/suppression.ts   (BENCH_INTENTS=20000 BENCH_CUSTOMERS=4000 BENCH_CHECK_RATES=100,500,1000)
 */
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, IntentSchema, ProfileService, SuppressionService } from "@kairos/contracts";
import { createGrpcClient, ensureStreams, partitionOf, subjects } from "@kairos/kit";
import { Mesh, NatsServer, sleep } from "@kairos/testkit";
import { peakRssMiB, summarize } from "./stats.js";

const N = Number(process.env.BENCH_INTENTS ?? 20_000);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 4_000);
const CHECK_RATES = (process.env.BENCH_CHECK_RATES ?? "100,500,1000").split(",").map(Number);
const CHECK_SECONDS = Number(process.env.BENCH_CHECK_SECONDS ?? 10);
const config = fileURLToPath(new URL("suppression.yaml", import.meta.url));

const nats = await NatsServer.start();
const meshes: Mesh[] = [];
try {
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm);
  const js = jetstream(nc);
  const window: Promise<unknown>[] = [];
  const publish = async (p: Promise<unknown>) => {
    window.push(p);
    if (window.length >= 512) await Promise.all(window.splice(0));
  };

  // Customers, through the real identity service.
  for (let c = 0; c < CUSTOMERS; c++) {
    const userId = `u-${c}`;
    const e = create(EventSchema, {
      messageId: `m-${c}`,
      workspace: "bench",
      type: EventType.IDENTIFY,
      userId,
      traits: { email: `${userId}@example.org`, timezone: c % 2 === 0 ? "UTC" : "America/New_York" },
      receivedAt: timestampFromMs(Date.now()),
    });
    await publish(
      js.publish(subjects.events("bench", partitionOf(userId, 16)), toBinary(EventSchema, e), {
        msgID: `bench:${e.messageId}`,
      }),
    );
  }
  await Promise.all(window.splice(0));
  const identity = await Mesh.start({
    natsUrl: nats.url,
    config,
    webhookUrl: "http://127.0.0.1:1/",
    services: ["identity"],
  });
  meshes.push(identity);
  while ((await jsm.streams.info("PROFILES")).state.messages < CUSTOMERS) await sleep(100);
  // Profile ids, as suppression is given them in intents.
  const profiles = createGrpcClient(ProfileService, identity.grpcAddress("identity"));
  const ids: string[] = [];
  for (let c = 0; c < CUSTOMERS; c += 500) {
    const res = await profiles.batchGetProfiles({
      workspace: "bench",
      identifiers: Array.from({ length: Math.min(500, CUSTOMERS - c) }, (_, k) => ({
        type: "user_id",
        value: `u-${c + k}`,
      })),
    });
    ids.push(...res.results.filter((r) => r.found).map((r) => r.profile?.profileId ?? ""));
  }
  profiles.close();
  if (ids.length !== CUSTOMERS) throw new Error(`found ${ids.length} of ${CUSTOMERS} profiles`);

  // Intents, before suppression runs.
  const now = Date.now();
  for (let i = 0; i < N; i++) {
    const profileId = ids[i % CUSTOMERS] ?? "";
    const intent = create(IntentSchema, {
      actionId: `a-${i}`,
      workspace: "bench",
      profileId,
      channel: "email",
      journey: `j${i % 7}`,
      purpose: "marketing",
      priority: 50,
      notBefore: timestampFromMs(now),
      notAfter: timestampFromMs(now + 3_600_000),
      intendedAt: timestampFromMs(now),
      eventReceivedAt: timestampFromMs(now),
      cancelKeys: [`journey:j${i % 7}:${profileId}`],
    });
    await publish(
      js.publish(subjects.intents("bench", "email"), toBinary(IntentSchema, intent), {
        msgID: intent.actionId,
      }),
    );
  }
  await Promise.all(window.splice(0));

  const t0 = performance.now();
  const suppression = await Mesh.start({
    natsUrl: nats.url,
    config,
    webhookUrl: "http://127.0.0.1:1/",
    services: ["suppression"],
    env: { IDENTITY_GRPC_ADDR: identity.grpcAddress("identity") },
  });
  meshes.push(suppression);
  let decided = 0;
  while (decided < N) {
    await sleep(50);
    const [d, o] = await Promise.all([jsm.streams.info("DISPATCH"), jsm.streams.info("OUTCOMES")]);
    decided = d.state.messages + o.state.messages;
  }
  const drainS = (performance.now() - t0) / 1000;
  const dispatchedN = (await jsm.streams.info("DISPATCH")).state.messages;

  // Check: paced, then closed-loop with 16 callers.
  const client = createGrpcClient(SuppressionService, suppression.grpcAddress("suppression"));
  const check = async (i: number) => {
    const t = performance.now();
    await client.check({
      workspace: "bench",
      profileId: ids[i % CUSTOMERS] ?? "",
      channel: "email",
      purpose: "marketing",
    });
    return performance.now() - t;
  };
  for (let i = 0; i < 500; i++) await check(i); // warm-up
  const paced: Record<string, unknown>[] = [];
  for (const rate of CHECK_RATES) {
    const calls: Promise<number>[] = [];
    const start = performance.now();
    for (let i = 0; i < rate * CHECK_SECONDS; i++) {
      const wait = start + (i * 1000) / rate - performance.now();
      if (wait > 1) await sleep(wait);
      calls.push(check(i));
    }
    paced.push({ rate_per_s: rate, ...summarize(await Promise.all(calls)) });
  }
  // One caller, back to back: the service's own latency without queueing.
  const single: number[] = [];
  for (let i = 0; i < 3000; i++) single.push(await check(i));
  const closed: number[] = [];
  const closedStart = performance.now();
  await Promise.all(
    Array.from({ length: 16 }, async (_, w) => {
      for (let i = w; performance.now() - closedStart < 5000; i += 16) closed.push(await check(i));
    }),
  );
  const closedS = (performance.now() - closedStart) / 1000;
  client.close();

  console.log(
    `SUPPRESSION ${JSON.stringify({
      intents: N,
      customers: CUSTOMERS,
      dispatched: dispatchedN,
      suppressed_or_other: N - dispatchedN,
      drain_seconds: Math.round(drainS * 10) / 10,
      decisions_per_s: Math.round(N / drainS),
      check_paced: paced,
      check_one_caller: summarize(single),
      check_closed_loop: { callers: 16, per_s: Math.round(closed.length / closedS), ...summarize(closed) },
      suppression_peak_rss_mib: await peakRssMiB(suppression.pid("suppression")),
    })}`,
  );
  await nc.close();
} finally {
  for (const m of meshes.reverse()) await m.stop();
  await nats[Symbol.asyncDispose]();
}
