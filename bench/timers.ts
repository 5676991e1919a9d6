/**
 * Durable timers at scale: BENCH_TIMERS (default 1,000,000) timers written to a
 * KV bucket — BENCH_FIRING of them (default 10,000) due within a window of
 * BENCH_SPREAD_S seconds, the rest over the next 30 days; then a separate
 * process loads them all (as a restarted segmentation replica would) and fires
 * the due ones with a million pending. Prints load time, fire lateness p50/p99
 * and the timer process's peak RSS. Targets (issue 5): p99 ≤ 1 s late; RSS ≤ 500 MB at 1M.
 *
 *   ./kairos bench timers   (BENCH_TIMERS=1000000 BENCH_FIRING=10000 BENCH_SPREAD_S=60)
 */
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { NatsServer, repoRoot, startChild } from "@kairos/testkit";

const N = Number(process.env.BENCH_TIMERS ?? 1_000_000);
const SPREAD_MS = Number(process.env.BENCH_SPREAD_S ?? 60) * 1000;
const FIRING = Math.min(N, Number(process.env.BENCH_FIRING ?? 10_000));
const enc = new TextEncoder();

const nats = await NatsServer.start();
try {
  const nc = await connect({ servers: nats.url });
  const kv = await new Kvm(nc).create("bench-timers", { history: 1 });
  // Write the timers; the first comes due a while after the last write, so loading is measured apart.
  const writeStart = performance.now();
  const estimateWriteMs = N / 15; // ~15,000 writes/s here
  const firstDue = Date.now() + estimateWriteMs + 90_000;
  const window: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    const dueMs =
      i < FIRING
        ? firstDue + Math.floor((i / FIRING) * SPREAD_MS)
        : firstDue + SPREAD_MS + 86_400_000 + Math.floor(((i - FIRING) / (N - FIRING)) * 29 * 86_400_000);
    window.push(kv.put(`t.${i}`, enc.encode(JSON.stringify({ dueMs, payload: i }))));
    if (window.length >= 2000) await Promise.all(window.splice(0));
  }
  await Promise.all(window.splice(0));
  const writeSeconds = (performance.now() - writeStart) / 1000;
  await nc.close();
  console.log(
    `wrote ${N} timers in ${writeSeconds.toFixed(1)} s; first due in ${((firstDue - Date.now()) / 1000).toFixed(0)} s`,
  );

  const worker = startChild(process.execPath, ["--import", "tsx", "bench/timers-worker.ts"], {
    cwd: repoRoot,
    name: "timers-worker",
    env: {
      ...process.env,
      NATS_URL: nats.url,
      BENCH_TIMERS: String(FIRING),
      BENCH_LAST_DUE: String(firstDue + SPREAD_MS),
    },
  });
  const line = await worker.waitForLine(/^TIMERS /, firstDue + SPREAD_MS + 240_000 - Date.now());
  await worker.exited;
  const r = JSON.parse(line.slice("TIMERS ".length)) as {
    pending_at_load: number;
    load_seconds: number;
    fired: number;
    lateness: { p50_ms: number; p99_ms: number; max_ms: number };
    peak_rss_mib: number;
  };
  console.log(
    `loaded ${r.pending_at_load} pending timers in ${r.load_seconds} s; fired ${r.fired}; lateness p50 ${r.lateness.p50_ms} ms, p99 ${r.lateness.p99_ms} ms, max ${r.lateness.max_ms} ms (target p99 ≤ 1,000 ms); peak RSS ${r.peak_rss_mib} MiB (target ≤ 500 MB)`,
  );
  console.log(
    `TIMERS ${JSON.stringify({ timers: N, spread_s: SPREAD_MS / 1000, write_seconds: Math.round(writeSeconds), ...r })}`,
  );
} finally {
  await nats.stop();
}
