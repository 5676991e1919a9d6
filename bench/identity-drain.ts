/**
 * How fast identity alone drains EVENTS: a nats-server, identity as a child
 * process, N events of C customers pre-published, then the time until every
 * one has its ProfileChanged. Prints `IDENTITY_DRAIN {json}`.
 *
 *   pnpm exec tsx bench/identity-drain.ts   (BENCH_EVENTS=20000 BENCH_CUSTOMERS=4000)
 */
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType } from "@kairos/contracts";
import { ensureStreams, partitionOf, subjects } from "@kairos/kit";
import { Mesh, NatsServer, sleep, type MeshService } from "@kairos/testkit";
import { peakRssMiB } from "./stats.js";

const N = Number(process.env.BENCH_EVENTS ?? 20_000);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 4_000);
const ADJACENT = process.env.BENCH_ORDER !== "interleaved";

const nats = await NatsServer.start();
try {
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm);
  const js = jetstream(nc);
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    // Adjacent (a customer's events arrive together, as from an SDK batch) or interleaved.
    const customer = ADJACENT ? Math.floor((i * CUSTOMERS) / N) : i % CUSTOMERS;
    const first = ADJACENT ? i === Math.ceil((customer * N) / CUSTOMERS) : i < CUSTOMERS;
    const userId = `u-${customer}`;
    const e = create(EventSchema, {
      messageId: `m-${i}`,
      workspace: "bench",
      type: first ? EventType.IDENTIFY : EventType.TRACK,
      name: "Viewed",
      userId,
      traits: first ? { email: `${userId}@example.org`, plan: "basic" } : {},
      properties: { i },
      receivedAt: timestampFromMs(Date.now()),
    });
    pending.push(
      js.publish(subjects.events("bench", partitionOf(userId, 16)), toBinary(EventSchema, e), {
        msgID: `bench:${e.messageId}`,
      }),
    );
    if (pending.length >= 512) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  const config = fileURLToPath(new URL("mesh.yaml", import.meta.url));
  const t0 = performance.now();
  const mesh = await Mesh.start({
    ...(process.env.CONCURRENCY === undefined ? {} : { env: { CONCURRENCY: process.env.CONCURRENCY } }),
    natsUrl: nats.url,
    config,
    webhookUrl: "http://127.0.0.1:1/",
    services: (process.env.BENCH_SERVICES?.split(",") ?? ["identity"]) as MeshService[],
  });
  let done = 0;
  while (done < N) {
    await sleep(100);
    done = (await jsm.streams.info("PROFILES")).state.messages;
  }
  const withStart = (performance.now() - t0) / 1000;
  // The drain itself: from the first change stored to the last (the process's start-up apart).
  const info = (await jsm.streams.info("PROFILES")).state;
  const storedAt = async (seq: number) => (await jsm.streams.getMessage("PROFILES", { seq }))!.time.getTime();
  const s = ((await storedAt(info.last_seq)) - (await storedAt(info.first_seq))) / 1000;
  console.log(
    `IDENTITY_DRAIN ${JSON.stringify({ events: N, customers: CUSTOMERS, seconds: Math.round(s * 10) / 10, events_per_s: Math.round(N / s), seconds_with_start: Math.round(withStart * 10) / 10, identity_peak_rss_mib: await peakRssMiB(mesh.pid("identity")) })}`,
  );
  await mesh.stop();
  await nc.close();
} finally {
  await nats[Symbol.asyncDispose]();
}
