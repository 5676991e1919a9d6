/**
 * Date journeys against a real nats-server, with a clock the test moves: a
 * birthday fires at 09:00 in each customer's own time zone, survives a restart
 * of the service, moves when the trait changes, recurs a year later, and a
 * deleted customer's timer is removed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  CancellationSchema,
  IntentSchema,
  ProfileChangedSchema,
  type Cancellation,
  type Intent,
} from "@kairos/contracts";
import { loadConfig, subjects } from "@kairos/kit";
import { collect, NatsServer, waitFor } from "@kairos/testkit";
import { configSpec, startSegmentation, type SegmentationHandle } from "./service.js";

const config = fileURLToPath(new URL("./fixtures/dates.yaml", import.meta.url));
const clock = { now: Date.parse("2026-11-24T12:00:00Z") };
let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let svc: SegmentationHandle;
let intents: Intent[] = [];
let cancellations: Cancellation[] = [];

const start = () =>
  startSegmentation(
    loadConfig(configSpec, {
      NATS_URL: server.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: config,
      TIMER_TICK: "20ms",
    }),
    { clock: () => clock.now },
  );

beforeAll(async () => {
  server = await NatsServer.start();
  svc = await start();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
  cancellations = collect(nc, "kairos.cancels.>", (b) => fromBinary(CancellationSchema, b));
  intents = collect(nc, "kairos.intents.>", (b) => fromBinary(IntentSchema, b));
});

afterAll(async () => {
  await svc?.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

let version = 0;
async function change(
  profileId: string,
  traits: Record<string, string>,
  over: { deleted?: boolean; eventName?: string } = {},
) {
  const v = BigInt(++version);
  const deleted = over.deleted ?? false;
  const c = create(ProfileChangedSchema, {
    workspace: "shop",
    profileId,
    version: v,
    eventId: `${profileId}-e${v}`,
    eventName: over.eventName ?? "",
    deleted,
    profile: deleted ? undefined : { workspace: "shop", profileId, version: v, traits },
  });
  await jetstream(nc).publish(subjects.profiles("shop", 0), toBinary(ProfileChangedSchema, c), {
    msgID: `shop:${profileId}:${v}`,
  });
}

const timersKv = () => new Kvm(nc).open("journey-timers");
async function timerKeys(): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of await (await timersKv()).keys()) keys.push(k);
  return keys.sort();
}
const birthdayIntents = (p: string) => intents.filter((i) => i.journey === "birthday" && i.profileId === p);

describe("date journeys", () => {
  it("fires a birthday at 09:00 in each customer's own time zone, after a restart, and again a year later", async () => {
    await change("tokyo", { birthday: "1990-11-25", timezone: "Asia/Tokyo", first_name: "Aiko" });
    await change("london", { birthday: "1990-11-25", first_name: "Ada" }); // the workspace's zone
    await change("nyc", { birthday: "1990-11-25", timezone: "America/New_York", first_name: "Ned" });
    await waitFor(async () => (await timerKeys()).filter((k) => k.startsWith("shop.birthday.")).length === 3);
    // Christmas is one timer per customer too.
    expect((await timerKeys()).filter((k) => k.startsWith("shop.christmas.")).length).toBe(3);

    // The service restarts while the timers wait.
    await svc.stop();
    svc = await start();

    clock.now = Date.parse("2026-11-25T00:00:30Z"); // 09:00:30 in Tokyo only
    await waitFor(() => birthdayIntents("tokyo").length === 1);
    expect(birthdayIntents("london")).toHaveLength(0);
    const tokyo = birthdayIntents("tokyo")[0]!;
    expect(timestampMs(tokyo.notBefore!)).toBe(Date.parse("2026-11-25T00:00:00Z"));
    expect(timestampMs(tokyo.notAfter!)).toBe(Date.parse("2026-11-25T12:00:00Z"));
    expect(tokyo.payload).toEqual({ template: "birthday", name: "Aiko" });
    expect(tokyo.cancelKeys).toEqual(["journey:birthday:tokyo"]);

    clock.now = Date.parse("2026-11-25T09:00:30Z"); // London
    await waitFor(() => birthdayIntents("london").length === 1);
    expect(birthdayIntents("nyc")).toHaveLength(0);
    clock.now = Date.parse("2026-11-25T14:00:30Z"); // New York (UTC−5)
    await waitFor(() => birthdayIntents("nyc").length === 1);

    // Each timer now waits for next year's birthday.
    const kv = await timersKv();
    await waitFor(async () => {
      const e = await kv.get("shop.birthday.tokyo");
      return (
        e !== null &&
        (JSON.parse(e.string()) as { dueMs: number }).dueMs === Date.parse("2027-11-25T00:00:00Z")
      );
    });
    clock.now = Date.parse("2027-11-25T00:00:30Z");
    await waitFor(() => birthdayIntents("tokyo").length === 2);
    expect(new Set(birthdayIntents("tokyo").map((i) => i.actionId)).size).toBe(2);
  });

  it("a fired birthday is cancelled by the journey's exit event", async () => {
    clock.now = Date.parse("2027-12-01T12:00:00Z");
    await change("leaver", { birthday: "2000-12-02" });
    const kv = await timersKv();
    await waitFor(async () => (await kv.get("shop.birthday.leaver")) !== null);
    clock.now = Date.parse("2027-12-02T09:00:30Z");
    await waitFor(() => birthdayIntents("leaver").length === 1);
    await change("leaver", {}, { eventName: "Unsubscribed" });
    await waitFor(() =>
      cancellations.some((c) => c.profileId === "leaver" && c.cancelKeys.includes("journey:birthday:leaver")),
    );
  });

  it("moves the timer when the birthday changes, and removes it when the customer is deleted", async () => {
    clock.now = Date.parse("2027-12-01T12:00:00Z");
    await change("mover", { birthday: "2000-12-10" });
    const kv = await timersKv();
    const dueOf = async () => {
      const e = await kv.get("shop.birthday.mover");
      return e === null || e.operation !== "PUT"
        ? undefined
        : (JSON.parse(e.string()) as { dueMs: number }).dueMs;
    };
    await waitFor(async () => (await dueOf()) === Date.parse("2027-12-10T09:00:00Z"));
    await change("mover", { birthday: "2000-12-20" });
    await waitFor(async () => (await dueOf()) === Date.parse("2027-12-20T09:00:00Z"));
    await change("mover", {}, { deleted: true });
    await waitFor(async () => (await dueOf()) === undefined);
    clock.now = Date.parse("2027-12-21T00:00:00Z");
    await new Promise((r) => setTimeout(r, 300));
    expect(birthdayIntents("mover")).toHaveLength(0);
    expect((await jsm.streams.info("INTENTS")).state.messages).toBeGreaterThan(0);
  });
});
