/**
 * The bus ceiling: how fast one JetStream stream on this machine takes
 * 200-byte messages with windowed publishing, and hands them to a durable
 * pull consumer with explicit acks. Every figure of the mesh is read against
 * it: each event crosses the bus five times on its way to a channel.
 *
 *   pnpm bench:bus                # starts its own nats-server
 *   NATS_URL=nats://… pnpm bench:bus
 *
 * Prints one `BUS_CEILING {json}` line.
 */
import { performance } from "node:perf_hooks";
import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { NatsServer } from "@kairos/testkit";
import { summarize, type Summary } from "./stats.js";

export interface BusCeiling {
  messages: number;
  bytes: number;
  window: number;
  publish_msgs_per_s: number;
  publish_ack: Summary;
  consume_msgs_per_s: number;
  rss_mib: number;
}

/** Measures the ceiling against the nats-server at `natsUrl`, on a scratch stream it removes after. */
export async function measureBusCeiling(
  natsUrl: string,
  opts: { messages?: number; bytes?: number; window?: number } = {},
): Promise<BusCeiling> {
  const messages = opts.messages ?? 100_000;
  const bytes = opts.bytes ?? 200;
  const window = opts.window ?? 512;
  const nc = await connect({ servers: natsUrl, name: "kairos-bench-bus" });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const stream = `BENCH_BUS_${process.pid}`;
  const subject = `bench.bus.${process.pid}`;
  await jsm.streams.add({ name: stream, subjects: [subject], storage: StorageType.File });
  try {
    const payload = new Uint8Array(bytes).fill(120);
    const acks: number[] = [];
    let next = 0;
    const t0 = performance.now();
    // `window` publishers each keep one publish in flight: the same shape as the kit's Publisher.
    await Promise.all(
      Array.from({ length: window }, async () => {
        while (next < messages) {
          const i = next++;
          const s = performance.now();
          await js.publish(subject, payload, { msgID: `m-${i}` });
          acks.push(performance.now() - s);
        }
      }),
    );
    const publishS = (performance.now() - t0) / 1000;

    await jsm.consumers.add(stream, {
      durable_name: "bench",
      ack_policy: AckPolicy.Explicit,
      max_ack_pending: 10_000,
    });
    const consumer = await js.consumers.get(stream, "bench");
    const t1 = performance.now();
    let got = 0;
    const iter = await consumer.consume({ max_messages: 2048 });
    for await (const m of iter) {
      m.ack();
      if (++got >= messages) break;
    }
    const consumeS = (performance.now() - t1) / 1000;
    return {
      messages,
      bytes,
      window,
      publish_msgs_per_s: Math.round(messages / publishS),
      publish_ack: summarize(acks),
      consume_msgs_per_s: Math.round(messages / consumeS),
      rss_mib: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
  } finally {
    await jsm.streams.delete(stream).catch(() => undefined);
    await nc.close();
  }
}

async function main(): Promise<void> {
  const own = process.env.NATS_URL === undefined ? await NatsServer.start() : undefined;
  try {
    const url = process.env.NATS_URL ?? own!.url;
    const result = await measureBusCeiling(url, {
      messages: Number(process.env.BENCH_MESSAGES ?? 100_000),
    });
    const natsRss = own === undefined ? undefined : (await import("./stats.js")).peakRssMiB(own.pid);
    console.log(`BUS_CEILING ${JSON.stringify({ ...result, nats_peak_rss_mib: await natsRss })}`);
  } finally {
    await own?.[Symbol.asyncDispose]();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
