/**
 * The stage floor: how fast one Node process on this machine can drain a stream when each
 * message costs what a Kairos stage's JetStream work costs and nothing else — no decoding, no
 * logic, no tracing. A stage's own figure is read against it: identity's per-event work is one
 * KV compare-and-set and one publish, segmentation's about the same, suppression's two of each.
 *
 *   pnpm exec tsx bench/stage-floor.ts   (BENCH_MESSAGES=20000 BENCH_KEYS=4000 CONCURRENCY=64)
 *
 * Pre-publishes the messages (a key's messages adjacent, as the identity bench sends a customer's
 * events), then drains them once per shape with a pull consumer, `CONCURRENCY` messages in flight,
 * writes to one key in order (its last revision kept in memory, as the services' caches do).
 * Prints one `STAGE_FLOOR {json}` line.
 */
import { performance } from "node:perf_hooks";
import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, StorageType, type JsMsg } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { NatsServer } from "@kairos/testkit";

const N = Number(process.env.BENCH_MESSAGES ?? 20_000);
const KEYS = Number(process.env.BENCH_KEYS ?? 4_000);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 64);

/** Per message: KV compare-and-set writes and publishes (besides the receive and the ack). */
const shapes = [
  { name: "ack only", writes: 0, publishes: 0 },
  { name: "1 write + 1 publish (identity, segmentation)", writes: 1, publishes: 1 },
  { name: "2 writes + 2 publishes (suppression)", writes: 2, publishes: 2 },
] as const;

const nats = await NatsServer.start();
try {
  const nc = await connect({ servers: nats.url, name: "kairos-bench-stage-floor" });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "FLOOR_IN", subjects: ["floor.in.>"], storage: StorageType.File });
  await jsm.streams.add({ name: "FLOOR_OUT", subjects: ["floor.out.>"], storage: StorageType.File });
  const payload = new Uint8Array(600).fill(120); // about a ProfileChanged
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    const key = Math.floor((i * KEYS) / N);
    pending.push(js.publish(`floor.in.${key % 16}`, payload, { msgID: `in-${i}` }));
    if (pending.length >= 512) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);

  const results: Record<string, number> = {};
  for (const [s, shape] of shapes.entries()) {
    const kv = await new Kvm(nc).create(`floor${s}`, { history: 1 });
    await jsm.consumers.add("FLOOR_IN", {
      durable_name: `floor${s}`,
      ack_policy: AckPolicy.Explicit,
      max_ack_pending: 4096,
    });
    const consumer = await js.consumers.get("FLOOR_IN", `floor${s}`);
    const revisions = new Map<string, number>();
    const chains = new Map<string, Promise<void>>();
    let done = 0;
    let inFlight = 0;
    let wake: (() => void) | undefined;
    let finished!: () => void;
    const all = new Promise<void>((r) => (finished = r));
    const handle = async (m: JsMsg, key: string): Promise<void> => {
      for (let w = 0; w < shape.writes; w++) {
        const k = `${key}.${w}`;
        const rev = revisions.get(k) ?? 0;
        revisions.set(k, rev === 0 ? await kv.create(k, m.data) : await kv.update(k, m.data, rev));
      }
      for (let p = 0; p < shape.publishes; p++) {
        await js.publish(`floor.out.${s}.${p}`, m.data, { msgID: `out-${s}-${p}-${m.seq}` });
      }
      m.ack();
    };
    const t0 = performance.now();
    const iter = await consumer.consume({ max_messages: CONCURRENCY * 2 });
    void (async () => {
      for await (const m of iter) {
        while (inFlight >= CONCURRENCY) await new Promise<void>((r) => (wake = r));
        inFlight++;
        const key = `k${Math.floor((m.seq - 1) / (N / KEYS))}`;
        // One key's messages in order, as the services' keyed locks keep them.
        const run = (chains.get(key) ?? Promise.resolve()).then(() => handle(m, key));
        chains.set(key, run);
        void run.then(() => {
          if (chains.get(key) === run) chains.delete(key);
          inFlight--;
          wake?.();
          wake = undefined;
          if (++done === N) finished();
        });
      }
    })();
    await all;
    const seconds = (performance.now() - t0) / 1000;
    iter.stop();
    results[shape.name] = Math.round(N / seconds);
    console.log(`${shape.name}: ${results[shape.name]} msgs/s (${seconds.toFixed(1)} s)`);
  }
  console.log(
    `STAGE_FLOOR ${JSON.stringify({ messages: N, keys: KEYS, concurrency: CONCURRENCY, msgs_per_s: results })}`,
  );
  await nc.close();
} finally {
  await nats[Symbol.asyncDispose]();
}
