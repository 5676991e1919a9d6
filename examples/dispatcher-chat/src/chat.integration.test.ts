/**
 * The worked example, built and run: the chat channel against a real
 * nats-server and a real local chat webhook, including what the SDK adds —
 * the circuit opening while the webhook is down and closing when it is back.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DispatchSchema, OutcomeSchema, OutcomeStatus, type Outcome } from "@kairos/contracts";
import { configSpecOf, type DispatcherHandle } from "@kairos/dispatcher-sdk";
import { loadConfig, subjects } from "@kairos/kit";
import { collect, NatsServer, sleep, waitFor } from "@kairos/testkit";
import { chatChannel, startChat } from "./chat.js";

let nats: NatsServer;
let nc: NatsConnection;
let server: Server;
let chat: DispatcherHandle;
let down = false;
const posts: { at: number; text: string }[] = [];
let outcomes: Outcome[] = [];

beforeAll(async () => {
  nats = await NatsServer.start();
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      posts.push({ at: Date.now(), text: (JSON.parse(body) as { text: string }).text });
      res.writeHead(down ? 503 : 200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const dir = mkdtempSync(join(tmpdir(), "kairos-chat-"));
  const config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    `workspaces: [{ id: team }]
channels:
  - name: chat
    mode: inspire
    freshnessSlo: 10s
    maxAttempts: 20
    circuitBreaker: { failureThreshold: 3, cooldown: 500ms, maxCooldown: 1s }
    settings:
      url: http://127.0.0.1:${(server.address() as AddressInfo).port}/incoming
`,
  );
  chat = await startChat(
    loadConfig(configSpecOf(chatChannel), {
      NATS_URL: nats.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: config,
    }),
  );
  nc = await connect({ servers: nats.url });
  outcomes = collect(nc, "kairos.outcomes.>", (b) => fromBinary(OutcomeSchema, b));
});

afterAll(async () => {
  await chat?.stop();
  await nc?.close();
  server?.closeAllConnections();
  server?.close();
  await nats?.[Symbol.asyncDispose]();
});

let n = 0;
async function dispatch(message: string): Promise<string> {
  const id = `act_chat_${++n}`;
  const now = Date.now();
  const d = create(DispatchSchema, {
    intent: {
      actionId: id,
      workspace: "team",
      profileId: "p-1",
      channel: "chat",
      payload: { message },
      intendedAt: timestampFromMs(now),
    },
    profileTraits: { first_name: "Ada" },
    dueAt: timestampFromMs(now),
  });
  await jetstream(nc).publish(subjects.dispatch("team", "chat"), toBinary(DispatchSchema, d), { msgID: id });
  return id;
}

const circuitOpen = async () =>
  /kairos_dispatch_circuit_open\{channel="chat",destination="chat",service="dispatcher-chat"\} 1/.test(
    await (await fetch(`${chat.runtime.ops.url}/metrics`)).text(),
  );

describe("the worked example: a chat channel in 46 lines", () => {
  it("posts the rendered line and records DELIVERED", async () => {
    const id = await dispatch("asked for a call back");
    await waitFor(() => outcomes.some((o) => o.actionId === id && o.status === OutcomeStatus.DELIVERED));
    expect(posts.at(-1)?.text).toBe("Ada: asked for a call back");
  });

  it("holds deliveries back while the webhook is down (circuit open) and delivers all once it is back", async () => {
    down = true;
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await dispatch(`message ${i}`));
    await waitFor(circuitOpen, { timeoutMs: 10_000 });
    // While open, only a probe now and then reaches the webhook — not 20 retries every backoff step.
    const before = posts.length;
    await sleep(2000);
    expect(posts.length - before).toBeLessThanOrEqual(5);
    down = false;
    await waitFor(
      () =>
        ids.every((id) => outcomes.some((o) => o.actionId === id && o.status === OutcomeStatus.DELIVERED)),
      {
        timeoutMs: 30_000,
      },
    );
    expect(await circuitOpen()).toBe(false);
  });
});
