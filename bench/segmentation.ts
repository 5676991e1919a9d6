/**
 * Segmentation throughput: 100 segments and 50 journeys (25 on events, 25 on
 * segment entries), BENCH_CHANGES (default 50,000) profile changes of 10,000
 * customers pre-published to PROFILES, then one segmentation process drains
 * them. Traits drift slowly (most changes move no segment) and a few percent
 * of events fire a journey, as in a real workspace. Prints changes/s, what they produced, and peak RSS. Target (issue 5):
 * ≥ 10,000 changes/s.
 *
 *   ./kairos bench segmentation   (BENCH_CHANGES=50000 BENCH_CUSTOMERS=10000)
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ProfileChangedSchema } from "@kairos/contracts";
import { ensureStreams, partitionOf, subjects } from "@kairos/kit";
import { Mesh, NatsServer, sleep } from "@kairos/testkit";
import { peakRssMiB } from "./stats.js";

const CHANGES = Number(process.env.BENCH_CHANGES ?? 50_000);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 10_000);

function config(): string {
  const segments = Array.from({ length: 100 }, (_, i) =>
    i % 2 === 0
      ? `      - { name: score-${i}, condition: 'has(profile.traits.score) && double(profile.traits.score) > ${i}.0' }`
      : `      - { name: plan-${i}, condition: 'has(profile.traits.plan) && profile.traits.plan == "p${i % 10}" && has(profile.computed_traits.orders) && double(profile.computed_traits.orders) >= ${i % 5}.0' }`,
  );
  const journeys = Array.from({ length: 50 }, (_, i) =>
    i < 25
      ? `      - { name: on-event-${i}, trigger: { event: E${i % 10}, condition: 'has(event.properties.value) && double(event.properties.value) > ${97 - (i % 3)}.0' }, reentry: every, action: { channel: webhook, relevance: 1h, payload: { n: "{{traits.plan}}" } } }`
      : `      - { name: on-entry-${i}, trigger: { segmentEntered: score-${(i - 25) * 4} }, action: { channel: webhook, relevance: 1h } }`,
  );
  const file = join(mkdtempSync(join(tmpdir(), "kairos-bench-seg-")), "mesh.yaml");
  writeFileSync(
    file,
    `workspaces:
  - id: bench
    segments:
${segments.join("\n")}
    journeys:
${journeys.join("\n")}
channels:
  - { name: webhook, mode: inspire, freshnessSlo: 30s, webhook: { url: "http://127.0.0.1:1/x" } }
`,
  );
  return file;
}

const nats = await NatsServer.start();
try {
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm);
  const js = jetstream(nc);
  const versions = new Map<number, number>();
  const window: Promise<unknown>[] = [];
  const cfgFile = config();
  const publishChanges = async (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const c = i % CUSTOMERS;
      const v = (versions.get(c) ?? 0) + 1;
      versions.set(c, v);
      const profileId = `p-${c}`;
      // A customer's traits drift slowly, as they do: most changes move no segment.
      const traits = { score: (c % 90) + Math.floor(v / 3), plan: `p${c % 10}`, first_name: "Ada" };
      const change = create(ProfileChangedSchema, {
        workspace: "bench",
        profileId,
        version: BigInt(v),
        eventId: `e-${i}`,
        eventName: `E${i % 10}`,
        eventType: "track",
        eventProperties: { value: (i * 31) % 100 },
        eventReceivedAt: timestampFromMs(Date.now()),
        profile: {
          workspace: "bench",
          profileId,
          version: BigInt(v),
          traits,
          computedTraits: { orders: Math.floor(v / 2) },
        },
      });
      window.push(
        js.publish(
          subjects.profiles("bench", partitionOf(profileId, 16)),
          toBinary(ProfileChangedSchema, change),
          {
            msgID: `bench:${profileId}:${v}`,
          },
        ),
      );
      if (window.length >= 1000) await Promise.all(window.splice(0));
    }
    await Promise.all(window.splice(0));
  };
  const start = () =>
    Mesh.start({
      natsUrl: nats.url,
      config: cfgFile,
      webhookUrl: "http://127.0.0.1:1/x",
      services: ["segmentation"],
    });
  const drained = async () => {
    for (;;) {
      await sleep(50);
      const info = await jsm.consumers.info("PROFILES", "segmentation").catch(() => undefined);
      if (
        info !== undefined &&
        info.num_pending === 0 &&
        info.num_ack_pending === 0 &&
        info.delivered.stream_seq > 0
      )
        return;
    }
  };

  // Warm-up: every customer's first change (their initial memberships), drained and stopped.
  await publishChanges(0, CUSTOMERS);
  const warm = await start();
  await drained();
  await warm.stop();
  const [seg0, int0] = await Promise.all([jsm.streams.info("SEGMENTS"), jsm.streams.info("INTENTS")]);

  // Measured: the steady state, from what is pending once the service is up.
  await publishChanges(CUSTOMERS, CUSTOMERS + CHANGES);
  const mesh = await start();
  try {
    const before = await jsm.consumers.info("PROFILES", "segmentation");
    const remaining = before.num_pending + before.num_ack_pending;
    const t0 = performance.now();
    await drained();
    const seconds = (performance.now() - t0) / 1000;
    const [segments, intents] = await Promise.all([
      jsm.streams.info("SEGMENTS"),
      jsm.streams.info("INTENTS"),
    ]);
    const r = {
      changes: remaining,
      customers: CUSTOMERS,
      segments: 100,
      journeys: 50,
      seconds: Math.round(seconds * 10) / 10,
      changes_per_s: Math.round(remaining / seconds),
      membership_changes: segments.state.messages - seg0.state.messages,
      intents: intents.state.messages - int0.state.messages,
      peak_rss_mib: await peakRssMiB(mesh.pid("segmentation")),
    };
    console.log(
      `segmentation: ${r.changes} changes in ${r.seconds} s = ${r.changes_per_s}/s (target ≥ 10,000/s); ${r.membership_changes} entries/exits, ${r.intents} intents; peak RSS ${r.peak_rss_mib} MiB`,
    );
    console.log(`SEGMENTATION ${JSON.stringify(r)}`);
  } finally {
    await mesh.stop();
  }
  await nc.close();
} finally {
  await nats.stop();
}
