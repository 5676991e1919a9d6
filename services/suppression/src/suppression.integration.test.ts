/**
 * Suppression against a real nats-server, with profiles served over real gRPC
 * loopback by a small test `ProfileService` (identity is its own package).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type JsonObject,
  type MessageShape,
} from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  CancellationSchema,
  DeadLetterSchema,
  Decision,
  DispatchSchema,
  IntentSchema,
  OutcomeSchema,
  OutcomeStatus,
  ProfileChangedSchema,
  type ProfileChanged,
  SuppressionService,
} from "@kairos/contracts";
import { Cancellations, createGrpcClient, loadConfig, PROFILE_DELETED_KEY, subjects } from "@kairos/kit";
import { NatsServer, sleep, waitFor } from "@kairos/testkit";
import type { ContactState } from "./decide.js";
import { instantOf, wallTime } from "@kairos/kit";
import { startTestIdentity, testProfile, type TestIdentity } from "./test-identity.js";
import { configSpec, startSuppression, type SuppressionHandle } from "./service.js";

const config = `
workspaces:
  - id: ws
    timezone: Europe/London
channels:
  - name: email
    mode: inspire
    freshnessSlo: 5m
    dailyCap: 2
    webhook: { url: "http://127.0.0.1:1/email" }
`;

const fixtures: [string, JsonObject][] = [
  ["p_ok", { plan: "gold", first_name: "Ada" }],
  ["p_out", { opt_out: ["email"] }],
  ["p_all", { opt_out: "all" }],
  ["p_capped", {}],
  ["p_dup", {}],
  ["p_consent", {}],
  ["p_flaky", {}],
  ["p_crash", { timezone: "Pacific/Kiritimati" }],
  ["p_survivor", {}],
  ["p_joined", {}],
  ["p_anon", {}],
  ["p_known", {}],
  ["p_cart_user", {}],
  ["p_split_a", {}],
  ["p_split_b", {}],
  ["p_chain_t", {}],
  ["p_early_a", {}],
  ["p_early_b", {}],
  ["p_late_a", {}],
  ["p_late_b", {}],
  ["p_rv_a", {}],
  ["p_rv_b", {}],
  ["p_rv2_a", {}],
  ["p_rv2_b", {}],
  ["p_rv3_a", {}],
  ["p_rv3_b", {}],
];

let server: NatsServer;
let identity: TestIdentity;
let svc: SuppressionHandle;
let nc: NatsConnection;
let jsm: JetStreamManager;
let dir: string;

beforeAll(async () => {
  server = await NatsServer.start();
  identity = await startTestIdentity(fixtures.map(([id, traits]) => testProfile(id, traits)));
  identity.mergedInto.set("p_merged_away", "p_survivor");
  identity.unavailable.set("p_flaky", 2);
  dir = mkdtempSync(join(tmpdir(), "kairos-suppression-"));
  writeFileSync(join(dir, "mesh.yaml"), config);
  svc = await startSuppression(
    loadConfig(configSpec, {
      NATS_URL: server.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: join(dir, "mesh.yaml"),
      IDENTITY_GRPC_ADDR: identity.server.address,
    }),
  );
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await svc?.stop();
  await identity?.server.shutdown(1000);
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** Every message of a stream, decoded, with its Nats-Msg-Id. */
async function all<D extends DescMessage>(
  stream: string,
  schema: D,
): Promise<{ msg: MessageShape<D>; msgID: string | undefined }[]> {
  const info = await jsm.streams.info(stream);
  const out: { msg: MessageShape<D>; msgID: string | undefined }[] = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push({ msg: fromBinary(schema, m.data), msgID: m.header?.get("Nats-Msg-Id") });
  }
  return out;
}

const dispatched = async (actionId: string) =>
  (await all("DISPATCH", DispatchSchema)).filter((d) => d.msg.intent?.actionId === actionId);

const outcome = (actionId: string) =>
  waitFor(async () => (await all("OUTCOMES", OutcomeSchema)).find((o) => o.msg.actionId === actionId), {
    what: `the outcome of ${actionId}`,
  });

const dispatchOf = (actionId: string) =>
  waitFor(
    async () => {
      const d = await dispatched(actionId);
      return d.length > 0 ? d : undefined;
    },
    { what: `the dispatch of ${actionId}` },
  );

async function publishIntent(
  profileId: string,
  actionId: string,
  over: { notAfterMs?: number; msgID?: string; channel?: string; intendedAtMs?: number } = {},
) {
  const now = over.intendedAtMs ?? Date.now();
  const i = create(IntentSchema, {
    actionId,
    workspace: "ws",
    profileId,
    channel: over.channel ?? "email",
    journey: "welcome",
    purpose: "marketing",
    payload: { template: "welcome" },
    notBefore: timestampFromMs(now),
    intendedAt: timestampFromMs(now),
    eventReceivedAt: timestampFromMs(now - 5),
    cancelKeys: [`journey:welcome:${profileId}`],
    ...(over.notAfterMs === undefined ? {} : { notAfter: timestampFromMs(over.notAfterMs) }),
  });
  await jetstream(nc).publish(subjects.intents("ws", i.channel), toBinary(IntentSchema, i), {
    msgID: over.msgID ?? actionId,
  });
}

/** Records through `SetConsent` that the customer withdrew consent to email for every purpose. */
async function withdrawEmailConsent(profileId: string, source: string) {
  const client = createGrpcClient(SuppressionService, svc.grpcAddress);
  try {
    await client.setConsent({
      workspace: "ws",
      profileId,
      channel: "email",
      purpose: "",
      granted: false,
      source,
    });
  } finally {
    client.close();
  }
}

describe("suppression", () => {
  it("dispatches an allowed intent with the profile's identifiers and traits, due when the event arrived", async () => {
    await publishIntent("p_ok", "act_ok");
    const [d] = await dispatchOf("act_ok");
    expect(d?.msgID).toBe("act_ok");
    expect(d?.msg.decision).toBe("allow");
    expect(d?.msg.destinations.map((x) => [x.type, x.value])).toEqual([
      ["user_id", "u-p_ok"],
      ["email", "p_ok@example.com"],
    ]);
    expect(d?.msg.profileTraits).toEqual({ plan: "gold", first_name: "Ada" });
    expect(d?.msg.intent?.payload).toEqual({ template: "welcome" });
    expect(d?.msg.dueAt).toEqual(d?.msg.intent?.eventReceivedAt);
    expect(timestampMs(d!.msg.decidedAt!)).toBeGreaterThanOrEqual(timestampMs(d!.msg.intent!.intendedAt!));
  });

  it.each([
    ["p_out", "act_out"],
    ["p_all", "act_all"],
  ])("suppresses opted-out %s with reason opted_out and hop times", async (profileId, actionId) => {
    await publishIntent(profileId, actionId);
    const o = await outcome(actionId);
    expect(o.msgID).toBe(`${actionId}:SUPPRESSED`);
    expect(o.msg).toMatchObject({
      status: OutcomeStatus.SUPPRESSED,
      reason: "opted_out",
      profileId,
      channel: "email",
      journey: "welcome",
    });
    expect(o.msg.times?.eventReceivedAt).toBeDefined();
    expect(o.msg.times?.intendedAt).toBeDefined();
    expect(o.msg.times?.decidedAt).toBeDefined();
    expect(await dispatched(actionId)).toEqual([]);
  });

  it("expires an intent past its deadline", async () => {
    await publishIntent("p_ok", "act_late", { notAfterMs: Date.now() - 1000 });
    const o = await outcome("act_late");
    expect(o.msgID).toBe("act_late:EXPIRED");
    expect(o.msg).toMatchObject({ status: OutcomeStatus.EXPIRED, reason: "expired" });
    expect(await dispatched("act_late")).toEqual([]);
  });

  it("suppresses an intent for a profile identity does not know", async () => {
    await publishIntent("p_nobody", "act_nobody");
    expect((await outcome("act_nobody")).msg).toMatchObject({
      status: OutcomeStatus.SUPPRESSED,
      reason: "unknown_profile",
    });
  });

  it("holds the daily cap of 2: the third action of the day is suppressed", async () => {
    for (const id of ["act_c1", "act_c2", "act_c3"]) await publishIntent("p_capped", id);
    expect((await outcome("act_c3")).msg).toMatchObject({
      status: OutcomeStatus.SUPPRESSED,
      reason: "daily_cap",
    });
    expect(await dispatched("act_c1")).toHaveLength(1);
    expect(await dispatched("act_c2")).toHaveLength(1);
    expect(await dispatched("act_c3")).toEqual([]);
  });

  it("dispatches a redelivered intent once and counts it once", async () => {
    await publishIntent("p_dup", "act_d1");
    await dispatchOf("act_d1");
    // The same intent again, past JetStream's dedupe (as after a crash before the ack).
    await publishIntent("p_dup", "act_d1", { msgID: "replay-act_d1" });
    // One profile's intents are handled in order: once act_d2 is out, the replay was handled.
    await publishIntent("p_dup", "act_d2");
    await dispatchOf("act_d2");
    expect(await dispatched("act_d1")).toHaveLength(1);
    const contact = await new Kvm(nc).open("contact");
    const record = (await contact.get("ws.p_dup"))?.json<ContactState>();
    expect(record?.sent.map((e) => e.id)).toEqual(["act_d1", "act_d2"]);
    // Two slots used, not three: a third distinct action is over the cap.
    await publishIntent("p_dup", "act_d3");
    expect((await outcome("act_d3")).msg).toMatchObject({ reason: "daily_cap" });
  });

  it("dispatches an intent counted before a crash on its slot, in the profile's time zone", async () => {
    // As if a previous run had counted act_crash and died before publishing the dispatch.
    const contact = await new Kvm(nc).open("contact");
    // Earlier today in Kiritimati (UTC+14), whatever the hour in UTC.
    const midnight = instantOf(
      { ...wallTime(Date.now(), "Pacific/Kiritimati"), hour: 0, minute: 1 },
      "Pacific/Kiritimati",
    );
    const sent = ["act_crash", "act_other"].map((id) => ({ id, channel: "email", atMs: midnight }));
    await contact.put("ws.p_crash", JSON.stringify({ consent: {}, sent, cancelled: {} }));
    await publishIntent("p_crash", "act_crash");
    await dispatchOf("act_crash");
    const record = (await contact.get("ws.p_crash"))?.json<ContactState>();
    expect(record?.sent.map((e) => e.id)).toEqual(["act_crash", "act_other"]);
    await publishIntent("p_crash", "act_new");
    expect((await outcome("act_new")).msg).toMatchObject({ reason: "daily_cap" });
  });

  it("retries while identity is unavailable, then dispatches", async () => {
    await publishIntent("p_flaky", "act_flaky");
    await dispatchOf("act_flaky");
    expect(identity.lookups.get("p_flaky")).toBeGreaterThanOrEqual(3);
    expect(await dispatched("act_flaky")).toHaveLength(1);
  });

  it("honours consent withdrawn through SetConsent, and Check agrees", async () => {
    const client = createGrpcClient(SuppressionService, svc.grpcAddress);
    try {
      const q = { workspace: "ws", profileId: "p_consent", channel: "email", purpose: "marketing" };
      expect(await client.check(q)).toMatchObject({ decision: Decision.ALLOW, reason: "" });
      const res = await client.setConsent({ ...q, purpose: "", granted: false, source: "preference-centre" });
      expect(res.recordedAt).toBeDefined();
      expect(await client.check(q)).toMatchObject({ decision: Decision.SUPPRESS, reason: "opted_out" });

      await publishIntent("p_consent", "act_consent");
      const o = await outcome("act_consent");
      expect(o.msg).toMatchObject({ status: OutcomeStatus.SUPPRESSED, reason: "opted_out" });
      expect(o.msg.detail).toContain("consent withdrawn");
      expect(await dispatched("act_consent")).toEqual([]);

      // Granting marketing again wins over the all-purposes withdrawal.
      await client.setConsent({ ...q, granted: true, source: "preference-centre" });
      expect(await client.check(q)).toMatchObject({ decision: Decision.ALLOW });

      // Check agrees with the pipeline on opt-outs and caps too, without taking a slot.
      expect(await client.check({ ...q, profileId: "p_out" })).toMatchObject({ reason: "opted_out" });
      expect(await client.check({ ...q, profileId: "p_capped" })).toMatchObject({ reason: "daily_cap" });
      expect(await client.check({ ...q, profileId: "p_nobody" })).toMatchObject({
        reason: "unknown_profile",
      });
      await expect(client.check({ ...q, channel: "pigeon" })).rejects.toThrow(/unknown channel/);
      await expect(client.setConsent({ ...q, profileId: "" })).rejects.toThrow(/profile_id/);
    } finally {
      client.close();
    }
  });

  it("applies the survivor's consent to an intent for a profile merged away", async () => {
    await withdrawEmailConsent("p_survivor", "support");
    await publishIntent("p_merged_away", "act_merged");
    expect((await outcome("act_merged")).msg).toMatchObject({
      reason: "opted_out",
      detail: "consent withdrawn (support)",
    });
  });

  it("keeps a consent withdrawn on a profile that identity then merges into another", async () => {
    const client = createGrpcClient(SuppressionService, svc.grpcAddress);
    try {
      const q = { workspace: "ws", channel: "email", purpose: "marketing" };
      await client.setConsent({
        ...q,
        profileId: "p_anon",
        purpose: "",
        granted: false,
        source: "unsubscribe link",
      });
      expect((await client.check({ ...q, profileId: "p_joined" })).decision).toBe(Decision.ALLOW);
      // Identity merges p_anon into p_joined: from now on it answers p_anon with the survivor.
      identity.mergedInto.set("p_anon", "p_joined");
      const merge = create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: "p_joined",
        version: 2n,
        mergedFrom: ["p_anon"],
      });
      await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, merge), {
        msgID: "ws:p_joined:2",
      });
      await waitFor(
        async () => (await client.check({ ...q, profileId: "p_joined" })).reason === "opted_out",
        {
          what: "the merged-away profile's withdrawal to apply to the survivor",
        },
      );
      await publishIntent("p_joined", "act_joined");
      expect((await outcome("act_joined")).msg).toMatchObject({
        reason: "opted_out",
        detail: "consent withdrawn (unsubscribe link)",
      });
      // A statement made afterwards under the merged-away id reaches the survivor's record.
      await client.setConsent({ ...q, profileId: "p_anon", purpose: "", granted: true, source: "re-opt-in" });
      expect((await client.check({ ...q, profileId: "p_joined" })).decision).toBe(Decision.ALLOW);
    } finally {
      client.close();
    }
  });

  it("keeps each customer's withdrawal for both profiles an unmerge splits apart, and no grant made by then", async () => {
    const client = createGrpcClient(SuppressionService, svc.grpcAddress);
    const q = { workspace: "ws", channel: "email", purpose: "marketing" };
    const publishChange = async (profileId: string, version: bigint, over: object) => {
      const c = create(ProfileChangedSchema, { workspace: "ws", profileId, version, ...over });
      await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, c), {
        msgID: `ws:${profileId}:${version}`,
      });
    };
    try {
      // One customer unsubscribed; identity wrongly merged them into another, who then signed up.
      await client.setConsent({
        ...q,
        profileId: "p_split_a",
        purpose: "",
        granted: false,
        source: "unsubscribe",
      });
      identity.mergedInto.set("p_split_a", "p_split_b");
      await publishChange("p_split_b", 2n, { mergedFrom: ["p_split_a"] });
      await waitFor(
        async () => (await client.check({ ...q, profileId: "p_split_b" })).reason === "opted_out",
      );
      await client.setConsent({ ...q, profileId: "p_split_b", purpose: "", granted: true, source: "signup" });
      expect((await client.check({ ...q, profileId: "p_split_b" })).decision).toBe(Decision.ALLOW);
      // The unmerge: identity answers each with itself again, and announces the split-off profile.
      identity.mergedInto.delete("p_split_a");
      await publishChange("p_split_b", 3n, {});
      await publishChange("p_split_a", 3n, {
        unmergedFrom: "p_split_b",
        eventReceivedAt: timestampFromMs(Date.now()),
      });
      // Whose statements they were cannot be told: the withdrawal stands for both, the grant for neither.
      for (const profileId of ["p_split_a", "p_split_b"]) {
        const answer = await waitFor(async () => {
          const a = await client.check({ ...q, profileId });
          return a.reason === "opted_out" ? a : undefined;
        });
        expect(answer.detail).toBe("consent withdrawn (unsubscribe)");
      }
      // Said again after the unmerge, a grant is the customer's own.
      await client.setConsent({
        ...q,
        profileId: "p_split_b",
        purpose: "",
        granted: true,
        source: "re-signup",
      });
      expect((await client.check({ ...q, profileId: "p_split_b" })).decision).toBe(Decision.ALLOW);
    } finally {
      client.close();
    }
  });

  it("splits a record apart for a decision that comes before the unmerge's change, once", async () => {
    const client = createGrpcClient(SuppressionService, svc.grpcAddress);
    const q = { workspace: "ws", channel: "email", purpose: "marketing" };
    const consent = (profileId: string, granted: boolean, source: string) =>
      client.setConsent({ ...q, profileId, purpose: "", granted, source });
    try {
      await consent("p_early_a", false, "unsubscribe");
      identity.mergedInto.set("p_early_a", "p_early_b");
      const merge = create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: "p_early_b",
        version: 2n,
        mergedFrom: ["p_early_a"],
      });
      await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, merge), {
        msgID: "ws:p_early_b:2",
      });
      await waitFor(
        async () => (await client.check({ ...q, profileId: "p_early_b" })).reason === "opted_out",
      );
      await consent("p_early_b", true, "signup");
      // Identity has split p_early_a back off; its change has not come by yet.
      const unmergedAt = Date.now();
      identity.mergedInto.delete("p_early_a");
      Object.assign(identity.profiles.get("p_early_a")!, {
        splitFrom: "p_early_b",
        splitFromVersion: 3n,
        splitAt: timestampFromMs(unmergedAt),
      });
      expect(await client.check({ ...q, profileId: "p_early_a" })).toMatchObject({
        reason: "opted_out",
        detail: "consent withdrawn (unsubscribe)",
      });
      // The survivor signs up again after the split: its own statement, not the split-off profile's,
      // also when the unmerge's change comes by now (or again).
      await consent("p_early_b", true, "signup again");
      const restored = create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: "p_early_a",
        version: 3n,
        unmergedFrom: "p_early_b",
        unmergedFromVersion: 3n,
        eventReceivedAt: timestampFromMs(unmergedAt),
      });
      for (const msgID of ["ws:p_early_a:3", "ws:p_early_a:3:again"]) {
        await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, restored), {
          msgID,
        });
      }
      await sleep(500);
      expect((await client.check({ ...q, profileId: "p_early_a" })).reason).toBe("opted_out");
      expect((await client.check({ ...q, profileId: "p_early_b" })).decision).toBe(Decision.ALLOW);
    } finally {
      client.close();
    }
  });

  it("gives a profile split off only what its survivor was told by the split, and once", async () => {
    const client = createGrpcClient(SuppressionService, svc.grpcAddress);
    const q = { workspace: "ws", channel: "email", purpose: "marketing" };
    const consent = (profileId: string, granted: boolean, source: string) =>
      client.setConsent({ ...q, profileId, purpose: "", granted, source });
    const publish = async (c: ProfileChanged, msgID: string) => {
      await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, c), { msgID });
    };
    const merge = create(ProfileChangedSchema, {
      workspace: "ws",
      profileId: "p_late_b",
      version: 2n,
      mergedFrom: ["p_late_a"],
    });
    try {
      await consent("p_late_a", false, "unsubscribe");
      identity.mergedInto.set("p_late_a", "p_late_b");
      await publish(merge, "ws:p_late_b:2");
      await waitFor(async () => (await client.check({ ...q, profileId: "p_late_b" })).reason === "opted_out");
      // Split (the survivor at version 3 after it); the survivor then signs up, all before the
      // split's change comes by.
      const unmergedAt = Date.now();
      identity.mergedInto.delete("p_late_a");
      await sleep(5);
      await consent("p_late_b", true, "signup after the split");
      const restored = create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: "p_late_a",
        version: 3n,
        unmergedFrom: "p_late_b",
        unmergedFromVersion: 3n,
        eventReceivedAt: timestampFromMs(unmergedAt),
      });
      await publish(restored, "ws:p_late_a:3");
      await waitFor(async () => (await client.check({ ...q, profileId: "p_late_a" })).reason === "opted_out");
      // The merge's change delivered again (not acknowledged before): the split-off profile keeps
      // its record.
      await publish(merge, "ws:p_late_b:2:again");
      await sleep(500);
      expect((await client.check({ ...q, profileId: "p_late_a" })).detail).toBe(
        "consent withdrawn (unsubscribe)",
      );
      expect((await client.check({ ...q, profileId: "p_late_b" })).decision).toBe(Decision.ALLOW);
    } finally {
      client.close();
    }
  });

  describe("a split done for a decision before the unmerge's change", () => {
    const q = { workspace: "ws", channel: "email", purpose: "marketing" };
    /** `a` merged into `b` (the change processed), then split back off at `splitAtMs` (b at version 3). */
    const mergedThenSplit = async (a: string, b: string, before?: () => Promise<unknown>) => {
      identity.mergedInto.set(a, b);
      const merge = create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: b,
        version: 2n,
        mergedFrom: [a],
      });
      const publishMerge = (msgID: string) =>
        jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, merge), { msgID });
      await before?.();
      await publishMerge(`ws:${b}:2`);
      await sleep(300);
      const splitAtMs = Date.now();
      identity.mergedInto.delete(a);
      Object.assign(identity.profiles.get(a)!, {
        splitFrom: b,
        splitFromVersion: 3n,
        splitAt: timestampFromMs(splitAtMs),
      });
      const restored = create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: a,
        version: 3n,
        unmergedFrom: b,
        unmergedFromVersion: 3n,
        eventReceivedAt: timestampFromMs(splitAtMs),
      });
      const publishRestored = () =>
        jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, restored), {
          msgID: `ws:${a}:3`,
        });
      return { splitAtMs, publishMerge, publishRestored };
    };

    // Its record marked with the survivor's version after the split: the merge delivered again
    // afterwards does not take the record (and with it what was said since) into the survivor's.
    it("keeps a withdrawal made after the split through a redelivered merge", async () => {
      const client = createGrpcClient(SuppressionService, svc.grpcAddress);
      try {
        const { publishMerge, publishRestored } = await mergedThenSplit("p_rv_a", "p_rv_b");
        expect((await client.check({ ...q, profileId: "p_rv_a" })).decision).toBe(Decision.ALLOW);
        await client.setConsent({
          ...q,
          profileId: "p_rv_a",
          purpose: "",
          granted: false,
          source: "after the split",
        });
        await publishMerge("ws:p_rv_b:2:again");
        await sleep(500);
        await publishRestored();
        await sleep(500);
        expect(await client.check({ ...q, profileId: "p_rv_a" })).toMatchObject({
          reason: "opted_out",
          detail: "consent withdrawn (after the split)",
        });
      } finally {
        client.close();
      }
    });

    // Split, merged again, unsubscribed while merged (on the survivor's record), split again: the
    // second split is done for a decision too, though the record is marked from the first.
    it("splits again for a second split of the same two", async () => {
      const client = createGrpcClient(SuppressionService, svc.grpcAddress);
      try {
        await mergedThenSplit("p_rv3_a", "p_rv3_b");
        expect((await client.check({ ...q, profileId: "p_rv3_a" })).decision).toBe(Decision.ALLOW);
        identity.mergedInto.set("p_rv3_a", "p_rv3_b");
        await client.setConsent({
          ...q,
          profileId: "p_rv3_a",
          purpose: "",
          granted: false,
          source: "while merged",
        });
        identity.mergedInto.delete("p_rv3_a");
        Object.assign(identity.profiles.get("p_rv3_a")!, {
          splitFromVersion: 5n,
          splitAt: timestampFromMs(Date.now()),
        });
        expect(await client.check({ ...q, profileId: "p_rv3_a" })).toMatchObject({
          reason: "opted_out",
          detail: "consent withdrawn (while merged)",
        });
      } finally {
        client.close();
      }
    });

    // As of the split, not of the profile's last update: the survivor's grant made after the split
    // (and before the split-off profile's next event) is its own and stays.
    it("splits as of the split, keeping what the survivor said since", async () => {
      const client = createGrpcClient(SuppressionService, svc.grpcAddress);
      const consent = (profileId: string, granted: boolean, source: string) =>
        client.setConsent({ ...q, profileId, purpose: "", granted, source });
      try {
        await mergedThenSplit("p_rv2_a", "p_rv2_b", () => consent("p_rv2_b", false, "long ago"));
        await sleep(5);
        await consent("p_rv2_b", true, "after the split");
        identity.profiles.get("p_rv2_a")!.updatedAt = timestampFromMs(Date.now() + 5);
        expect((await client.check({ ...q, profileId: "p_rv2_a" })).reason).toBe("opted_out");
        expect((await client.check({ ...q, profileId: "p_rv2_b" })).decision).toBe(Decision.ALLOW);
      } finally {
        client.close();
      }
    });
  });

  it("applies a merged-away profile's withdrawal before the merge's change has come by", async () => {
    await withdrawEmailConsent("p_was_anon", "unsubscribe link");
    // Identity has merged p_was_anon into p_known; its ProfileChanged is not published (yet).
    identity.profiles.get("p_known")!.mergedFrom = ["p_was_anon"];
    await publishIntent("p_known", "act_known");
    expect((await outcome("act_known")).msg).toMatchObject({
      reason: "opted_out",
      detail: "consent withdrawn (unsubscribe link)",
    });
  });

  it("withdraws, here and at every channel, what was intended for the profiles merged into the one a cancellation names", async () => {
    // The cart was filled anonymously (p_cart_anon); the login merged it into p_cart_user.
    identity.profiles.get("p_cart_user")!.mergedFrom = ["p_cart_anon"];
    identity.mergedInto.set("p_cart_anon", "p_cart_user");
    const intendedAtMs = Date.now() - 60_000;
    const cancelledAtMs = Date.now() - 1000;
    const c = create(CancellationSchema, {
      cancellationId: "ws:cart:p_cart_user:exit",
      workspace: "ws",
      profileId: "p_cart_user",
      cancelKeys: ["journey:welcome:p_cart_user"],
      reason: "exit welcome: event Order Completed",
      cancelledAt: timestampFromMs(cancelledAtMs),
      profileVersion: 1n,
    });
    await jetstream(nc).publish(subjects.cancels("ws"), toBinary(CancellationSchema, c), {
      msgID: c.cancellationId,
    });
    // An action already handed to a channel under the merged-away id is withdrawn there...
    const cancellations = await Cancellations.open(nc);
    const mark = await waitFor(() =>
      cancellations.cancelling("ws", "p_cart_anon", ["journey:welcome:p_cart_anon"], intendedAtMs),
    );
    expect(mark.mark).toEqual({ atMs: cancelledAtMs, reason: "exit welcome: event Order Completed" });
    // ...and one intended before the cancellation that reaches suppression only now is cancelled.
    await publishIntent("p_cart_anon", "act_cart_anon", { intendedAtMs });
    expect((await outcome("act_cart_anon")).msg).toMatchObject({
      status: OutcomeStatus.CANCELLED,
      reason: "cancelled",
    });
    // Intended after it, an action goes ahead.
    await publishIntent("p_cart_anon", "act_cart_anon_later");
    expect(await dispatchOf("act_cart_anon_later")).toHaveLength(1);
  });

  it("reaches the customer's other profiles when the one a cancellation names was merged since", async () => {
    // The cart's profile p_chain_l was merged into p_chain_s, then p_chain_s into p_chain_t, before
    // the cancellation decided on p_chain_s (its exit) came by.
    identity.profiles.get("p_chain_t")!.mergedFrom = ["p_chain_s", "p_chain_l"];
    identity.mergedInto.set("p_chain_s", "p_chain_t");
    identity.mergedInto.set("p_chain_l", "p_chain_t");
    const cancelledAtMs = Date.now() - 1000;
    const c = create(CancellationSchema, {
      cancellationId: "ws:cart:p_chain_s:exit",
      workspace: "ws",
      profileId: "p_chain_s",
      cancelKeys: ["journey:welcome:p_chain_s"],
      reason: "exit welcome: event Order Completed",
      cancelledAt: timestampFromMs(cancelledAtMs),
      profileVersion: 3n,
    });
    await jetstream(nc).publish(subjects.cancels("ws"), toBinary(CancellationSchema, c), {
      msgID: c.cancellationId,
    });
    const cancellations = await Cancellations.open(nc);
    for (const id of ["p_chain_s", "p_chain_l", "p_chain_t"]) {
      const mark = await waitFor(() => cancellations.cancelling("ws", id, [`journey:welcome:${id}`], 0));
      expect(mark.mark.atMs).toBe(cancelledAtMs);
    }
    // An intent for the cart's profile that arrives only now is judged against the survivor's record.
    await publishIntent("p_chain_l", "act_chain_l", { intendedAtMs: cancelledAtMs - 60_000 });
    expect((await outcome("act_chain_l")).msg).toMatchObject({ status: OutcomeStatus.CANCELLED });
  });

  it("dead-letters an intent for a channel that is not configured", async () => {
    await publishIntent("p_ok", "act_pigeon", { channel: "pigeon" });
    const dl = await waitFor(
      async () =>
        (await all("DLQ", DeadLetterSchema)).find(
          (x) => fromBinary(IntentSchema, x.msg.data).actionId === "act_pigeon",
        ),
      { what: "the dead letter" },
    );
    expect(dl.msg).toMatchObject({ service: "suppression", reason: "permanent" });
    expect(dl.msg.error).toContain("unknown channel");
  });

  it("marks a deleted customer's actions for withdrawal at every channel (GDPR)", async () => {
    const deleted = create(ProfileChangedSchema, {
      workspace: "ws",
      profileId: "p-erased",
      version: 9n,
      deleted: true,
      mergedFrom: ["p-erased-anon"],
    });
    await jetstream(nc).publish(subjects.profiles("ws", 0), toBinary(ProfileChangedSchema, deleted), {
      msgID: "ws:p-erased:9",
    });
    const cancellations = await Cancellations.open(nc);
    const mark = await waitFor(() => cancellations.cancelling("ws", "p-erased", [PROFILE_DELETED_KEY], 0));
    expect(mark.mark.reason).toBe("profile_deleted");
    // What was intended for a profile merged into theirs keeps that profile's id: withdrawn as well.
    const merged = await waitFor(() =>
      cancellations.cancelling("ws", "p-erased-anon", [PROFILE_DELETED_KEY], 0),
    );
    expect(merged.mark.reason).toBe("profile_deleted");
  });
});
