/**
 * The timer side of `bench/timers.ts`, as its own process (so its RSS is its
 * own): loads every pending timer from the bucket, fires them as they come due,
 * and prints one JSON line with load time, lateness and peak RSS.
 */
import { connect } from "@nats-io/transport-node";
import { createLogger, DurableTimers } from "@kairos/kit";
import { peakRssMiB, summarize } from "./stats.js";

const url = process.env.NATS_URL ?? "";
const expected = Number(process.env.BENCH_TIMERS ?? 0);
const lastDue = Number(process.env.BENCH_LAST_DUE ?? 0);

const nc = await connect({ servers: url });
const lateness: number[] = [];
const t0 = performance.now();
const timers = await DurableTimers.start<number>(nc, {
  bucket: "bench-timers",
  tickMs: 100,
  concurrency: 1024,
  logger: createLogger({ service: "bench-timers", level: "warn" }),
  fire: () => Promise.resolve(undefined),
});
timers.onFired = (ms) => lateness.push(ms);
while (!timers.ready) await new Promise((r) => setTimeout(r, 50));
const loadSeconds = (performance.now() - t0) / 1000;
const pendingAtLoad = timers.size;
while (lateness.length < expected && Date.now() < lastDue + 120_000)
  await new Promise((r) => setTimeout(r, 200));
timers.stop();
console.log(
  `TIMERS ${JSON.stringify({
    pending_at_load: pendingAtLoad,
    load_seconds: Math.round(loadSeconds * 10) / 10,
    fired: lateness.length,
    lateness: summarize(lateness),
    peak_rss_mib: await peakRssMiB(process.pid),
  })}`,
);
await nc.close();
