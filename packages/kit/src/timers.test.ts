/** Durable timers against a real nats-server, with a clock the test moves. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { NatsServer, waitFor } from "@kairos/testkit";
import { createLogger } from "./logger.js";
import { DurableTimers, type FireResult, type TimerEntry } from "./timers.js";

let server: NatsServer;
let nc: NatsConnection;
const logger = createLogger({ service: "timers-test", level: "silent" });

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connect({ servers: server.url });
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

function harness(bucket: string, next?: (e: TimerEntry<string>) => FireResult<string>) {
  const clock = { now: 1_000_000 };
  const fired: { key: string; payload: string; dueMs: number }[] = [];
  const start = () =>
    DurableTimers.start<string>(nc, {
      bucket,
      clock: () => clock.now,
      tickMs: 3_600_000, // the test ticks by hand
      logger,
      fire: (key, entry) => {
        fired.push({ key, payload: entry.payload, dueMs: entry.dueMs });
        return Promise.resolve(next?.(entry));
      },
    });
  return { clock, fired, start };
}

describe("DurableTimers", () => {
  it("fires what is due, earliest first, once; cancelled ones never", async () => {
    const h = harness("t1");
    const timers = await h.start();
    await timers.set("b", { dueMs: h.clock.now + 2000, payload: "b" });
    await timers.set("a", { dueMs: h.clock.now + 1000, payload: "a" });
    await timers.set("c", { dueMs: h.clock.now + 3000, payload: "c" });
    await timers.set("gone", { dueMs: h.clock.now + 500, payload: "gone" });
    await waitFor(() => timers.size === 4);
    await timers.cancel("gone");
    await waitFor(() => timers.size === 3);
    h.clock.now += 2500;
    await timers.tick();
    expect(h.fired.map((f) => f.key)).toEqual(["a", "b"]);
    await waitFor(() => timers.size === 1); // fired timers are removed from the bucket
    await timers.tick();
    expect(h.fired).toHaveLength(2);
    timers.stop();
  });

  it("survives a restart: a new instance loads what is pending and fires it", async () => {
    const h = harness("t2");
    const first = await h.start();
    for (let i = 0; i < 50; i++)
      await first.set(`k${i}`, { dueMs: h.clock.now + 1000 + i, payload: `p${i}` });
    first.stop();
    const second = await h.start();
    await waitFor(() => second.ready && second.size === 50);
    h.clock.now += 10_000;
    await second.tick();
    expect(h.fired).toHaveLength(50);
    expect(h.fired[0]).toMatchObject({ key: "k0", payload: "p0" });
    second.stop();
  });

  it("keeps a recurring timer with its next occurrence, and a reschedule made meanwhile wins", async () => {
    const h = harness("t3", (e) => ({ next: { dueMs: e.dueMs + 86_400_000, payload: e.payload } }));
    const timers = await h.start();
    await timers.set("yearly", { dueMs: h.clock.now + 1000, payload: "y" });
    await waitFor(() => timers.size === 1);
    h.clock.now += 1000;
    await timers.tick();
    await waitFor(async () => (await timers.get("yearly"))?.dueMs === 1_000_000 + 1000 + 86_400_000);
    // Moved by the application before it is due: the new time stands.
    await timers.set("yearly", { dueMs: h.clock.now + 5000, payload: "moved" });
    await waitFor(async () => (await timers.get("yearly"))?.payload === "moved");
    h.clock.now += 5000;
    await waitFor(async () => {
      await timers.tick();
      return h.fired.some((f) => f.payload === "moved");
    });
    expect(h.fired.map((f) => f.payload)).toEqual(["y", "moved"]);
    timers.stop();
  });
});
