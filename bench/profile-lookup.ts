/**
 * `GetProfile` with a large store: a nats-server, BENCH_PROFILES profiles (default 1,000,000)
 * written straight into identity's KV buckets (`profiles`, `identity-index`) in the
 * records identity itself writes, identity as a child process, then `GetProfile` by a random
 * user id over gRPC, paced at each of BENCH_RATES calls/s (default 1,000 and 5,000) for
 * BENCH_SECONDS each. Latency is measured from when each call was due, so a stalled
 * caller shows up as latency. Prints `PROFILE_LOOKUP {json}`.
 *
 *   ./kairos bench lookup   (BENCH_PROFILES=1000000 BENCH_RATES=1000,5000 BENCH_SECONDS=10)
 */
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { ProfileService } from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";
import { indexKey, newProfile, profileBuckets, profileIdFor, type Ident } from "@kairos/identity";
import { Mesh, NatsServer, sleep } from "@kairos/testkit";
import { measureGrpcFloor } from "./grpc-floor.js";
import { histogramQuantileMs, peakRssMiB, rssMiB, scrapeHistogram, summarize } from "./stats.js";

const PROFILES = Number(process.env.BENCH_PROFILES ?? 1_000_000);
const RATES = (process.env.BENCH_RATES ?? "1000,5000").split(",").map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const config = fileURLToPath(new URL("mesh.yaml", import.meta.url));
const WS = "bench";
const enc = new TextEncoder();

const nats = await NatsServer.start();
let mesh: Mesh | undefined;
const nc = await connect({ servers: nats.url });
try {
  const kvm = new Kvm(nc);
  const profiles = await kvm.create(profileBuckets.profiles, { history: 1 });
  const index = await kvm.create(profileBuckets.index, { history: 1 });

  // The store, as identity would have left it: a profile and two index entries per customer.
  const loadStart = performance.now();
  const window: Promise<unknown>[] = [];
  for (let c = 0; c < PROFILES; c++) {
    const ids: Ident[] = [
      { type: "user_id", value: `u-${c}` },
      { type: "email", value: `customer-${c}@example.org` },
    ];
    const p = newProfile(WS, profileIdFor(WS, ids[0]!), Date.now());
    p.identifiers = ids;
    p.traits = { first_name: `Name${c}`, plan: c % 10 === 0 ? "gold" : "free", city: "Leeds" };
    p.traitTimes = { first_name: p.createdAtMs, plan: p.createdAtMs, city: p.createdAtMs };
    p.version = 3;
    p.applied = [{ eventId: `m-${c}`, version: 3 }];
    window.push(profiles.put(`${WS}.${p.profileId}`, enc.encode(JSON.stringify(p))));
    for (const id of ids)
      window.push(index.put(indexKey(WS, id), enc.encode(JSON.stringify({ profileId: p.profileId }))));
    if (window.length >= 3000) await Promise.all(window.splice(0));
    if (c > 0 && c % 100_000 === 0) console.error(`loaded ${c} profiles`);
  }
  await Promise.all(window.splice(0));
  const loadS = (performance.now() - loadStart) / 1000;

  mesh = await Mesh.start({
    // BENCH_VIEW=off: every lookup reads the KV store (identity's lookup view turned off).
    ...(process.env.BENCH_VIEW === "off" ? { env: { LOOKUP_VIEW_ENTRIES: "0" } } : {}),
    natsUrl: nats.url,
    readyTimeoutMs: 600_000,
    config,
    webhookUrl: "http://127.0.0.1:1/",
    services: ["identity"],
  });
  // Identity is ready once its lookup view holds the store: what that costs in memory.
  const viewLoadedRss = await rssMiB(mesh.pid("identity"));
  const client = createGrpcClient(ProfileService, mesh.grpcAddress("identity"));
  let failed = 0;
  let firstError = "";
  /** Latency from when the call was due; a failed call (e.g. identity overloaded) is counted apart. */
  const lookup = async (dueAt: number): Promise<number | undefined> => {
    const c = Math.floor(Math.random() * PROFILES);
    try {
      const res = await client.getProfile({
        workspace: WS,
        identifier: { type: "user_id", value: `u-${c}` },
      });
      if (res.profile?.traits?.first_name !== `Name${c}`) throw new Error(`wrong profile for u-${c}`);
      return performance.now() - dueAt;
    } catch (e) {
      failed++;
      firstError ||= e instanceof Error ? e.message : String(e);
      return undefined;
    }
  };
  const ok = (xs: (number | undefined)[]) => xs.filter((x): x is number => x !== undefined);
  for (let i = 0; i < 2000; i++) await lookup(performance.now()); // warm-up (connections, JIT)

  // Identity's own handling time of each call (its histogram), apart from the client and the wire.
  const handling = () =>
    scrapeHistogram(`${mesh!.opsUrl("identity")}/metrics`, "kairos_rpc_duration_seconds", "GetProfile");
  const paced: Record<string, unknown>[] = [];
  for (const rate of RATES) {
    const before = await handling();
    const calls: Promise<number | undefined>[] = [];
    const failedBefore = failed;
    const start = performance.now();
    for (let i = 0; i < rate * SECONDS; i++) {
      const dueAt = start + (i * 1000) / rate;
      const wait = dueAt - performance.now();
      if (wait > 1) await sleep(wait);
      calls.push(lookup(dueAt));
    }
    const took = ok(await Promise.all(calls));
    const wall = (performance.now() - start) / 1000;
    paced.push({
      rate_per_s: rate,
      achieved_per_s: Math.round(took.length / wall),
      failed: failed - failedBefore,
      ...summarize(took),
      ...(await handling().then((after) => ({
        server_p50_ms_at_most: histogramQuantileMs(before, after, 0.5),
        server_p99_ms_at_most: histogramQuantileMs(before, after, 0.99),
      }))),
    });
  }
  // One caller back to back: the service's own latency without queueing.
  const single: (number | undefined)[] = [];
  for (let i = 0; i < 3000; i++) single.push(await lookup(performance.now()));
  // Closed loop: as many lookups as CALLERS callers back to back get through (the ceiling).
  const CALLERS = Number(process.env.BENCH_CALLERS ?? 32);
  const loop: (number | undefined)[] = [];
  const loopStart = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (performance.now() - loopStart < SECONDS * 1000) loop.push(await lookup(performance.now()));
    }),
  );
  const closedLoop = {
    callers: CALLERS,
    per_s: Math.round(ok(loop).length / ((performance.now() - loopStart) / 1000)),
    ...summarize(ok(loop)),
  };
  client.close();
  // The same calls to a grpc-js server that does nothing: this machine's floor under the figures.
  const floor = await measureGrpcFloor(RATES, SECONDS);

  console.log(
    `PROFILE_LOOKUP ${JSON.stringify({
      profiles: PROFILES,
      load_seconds: Math.round(loadS),
      paced,
      one_caller: summarize(ok(single)),
      closed_loop: closedLoop,
      grpc_floor: floor,
      ...(firstError === "" ? {} : { first_error: firstError }),
      identity_rss_mib_view_loaded: viewLoadedRss,
      identity_peak_rss_mib: await peakRssMiB(mesh.pid("identity")),
      nats_peak_rss_mib: await peakRssMiB(nats.pid),
    })}`,
  );
  await nc.close();
} finally {
  // Also when something failed: a connection left open would keep the benchmark from exiting.
  if (!nc.isClosed()) await nc.close();
  await mesh?.[Symbol.asyncDispose]();
  await nats[Symbol.asyncDispose]();
}
