import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { NatsServer, startChild, waitFor, sleep } from "@kairos/testkit";
import { ensureStreams } from "./topology.js";

const worker = fileURLToPath(new URL("./testing/slow-worker.ts", import.meta.url));
const root = fileURLToPath(new URL("../../..", import.meta.url));

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let dir: string;

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
  await ensureStreams(jsm);
  dir = await mkdtemp(join(tmpdir(), "kairos-lifecycle-"));
});

afterAll(async () => {
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
  await rm(dir, { recursive: true, force: true });
});

function startWorker(id: string, extra: Record<string, string> = {}) {
  return startChild(process.execPath, ["--import", "tsx", worker], {
    cwd: root,
    name: `worker-${id}`,
    env: {
      ...process.env,
      NATS_URL: server.url,
      SUBJECT: `kairos.profiles.${id}.0`,
      DURABLE: `worker-${id}`,
      LEDGER: join(dir, `${id}.ledger`),
      SLOW_MS: "1500",
      ...extra,
    },
  });
}

async function ledger(id: string): Promise<string[]> {
  const p = join(dir, `${id}.ledger`);
  if (!existsSync(p)) return [];
  return (await readFile(p, "utf8")).split("\n").filter((l) => l !== "");
}

describe("graceful shutdown", () => {
  it("SIGTERM during a slow handler finishes it, releases the rest, exits 0; nothing lost or done twice", async () => {
    const id = "sigterm";
    const js = jetstream(nc);
    const first = startWorker(id);
    await first.waitForLine(/worker ready/);
    for (const body of ["m1", "m2", "m3"])
      await js.publish(`kairos.profiles.${id}.0`, new TextEncoder().encode(body));
    await first.waitForLine(/"body":"m1".*"msg":"handling"/);
    const started = Date.now();
    const exit = await first.stop("SIGTERM");
    expect(exit.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    // The message in the handler was finished and acked before the process left.
    expect(await ledger(id)).toEqual(["m1"]);

    const second = startWorker(id, { SLOW_MS: "50" });
    try {
      // Generous: under a loaded CI machine the second worker can take seconds to start.
      await waitFor(async () => (await ledger(id)).length >= 3, {
        timeoutMs: 40_000,
        what: "m2 and m3 after restart",
      });
      await waitFor(async () => {
        const info = await jsm.consumers.info("PROFILES", `worker-${id}`);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      });
      await sleep(500);
      expect((await ledger(id)).sort()).toEqual(["m1", "m2", "m3"]);
    } finally {
      expect((await second.stop("SIGTERM")).code).toBe(0);
    }
  });

  it("exits non-zero naming the variable when configuration is invalid", async () => {
    const child = startWorker("badcfg", { OPS_PORT: "abc" });
    const exit = await child.exited;
    expect(exit.code).not.toBe(0);
    expect(child.lines.join("\n")).toContain("OPS_PORT");
  });
});
