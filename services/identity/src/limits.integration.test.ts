/**
 * A per-type limit with a window, through the real identity service on a
 * nats-server: a second email within the window is dropped from the event (and
 * the rest applied); once the first has aged out of the window, it is taken.
 * Time moves through the service's injectable clock.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, ProfileService } from "@kairos/contracts";
import { createGrpcClient, loadConfig, subjects } from "@kairos/kit";
import { NatsServer, waitFor } from "@kairos/testkit";
import { configSpec, startIdentity, type IdentityHandle } from "./service.js";

const DAY = 86_400_000;
const config = join(mkdtempSync(join(tmpdir(), "kairos-limits-")), "limits.yaml");
writeFileSync(
  config,
  `workspaces:
  - id: ws
    identity:
      identifiers:
        - { type: user_id, field: userId, limit: 1 }
        - { type: email, field: traits.email, normalize: email, limit: 1, limitWindow: 1d }
`,
);
let server: NatsServer;
let nc: NatsConnection;
let svc: IdentityHandle;
let offset = 0;
let n = 0;

beforeAll(async () => {
  server = await NatsServer.start();
  svc = await startIdentity(
    loadConfig(configSpec, {
      NATS_URL: server.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: config,
    }),
    { clock: () => Date.now() + offset },
  );
  nc = await connect({ servers: server.url });
});

afterAll(async () => {
  await svc?.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

async function identify(email: string, plan: string) {
  const e = create(EventSchema, {
    messageId: `lim-${++n}`,
    workspace: "ws",
    source: "test",
    type: EventType.IDENTIFY,
    userId: "u-lim",
    traits: { email, plan },
    receivedAt: timestampFromMs(Date.now() + offset),
  });
  await jetstream(nc).publish(subjects.events("ws", 0), toBinary(EventSchema, e), { msgID: e.messageId });
}

async function profile() {
  const client = createGrpcClient(ProfileService, svc.grpcAddress);
  try {
    return (await client.getProfile({ workspace: "ws", identifier: { type: "user_id", value: "u-lim" } }))
      .profile;
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}
const emails = async () =>
  ((await profile())?.identifiers ?? []).filter((i) => i.type === "email").map((i) => i.value);

describe("a limit with a window", () => {
  it("drops a second email within the window, and takes it once the first has aged out", async () => {
    await identify("first@example.org", "free");
    await waitFor(async () => (await emails()).length === 1);
    await identify("second@example.org", "gold");
    // The rest of the event is applied; the email over the limit is not.
    await waitFor(async () => (await profile())?.traits?.plan === "gold");
    expect(await emails()).toEqual(["first@example.org"]);

    offset = 2 * DAY;
    await identify("second@example.org", "platinum");
    await waitFor(async () => (await profile())?.traits?.plan === "platinum");
    expect((await emails()).sort()).toEqual(["first@example.org", "second@example.org"]);
  });
});
