import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  CancellationSchema,
  IntentSchema,
  MembershipChange,
  ProfileChangedSchema,
  SegmentMembershipChangedSchema,
  SegmentService,
} from "@kairos/contracts";
import { createGrpcClient, loadConfig, subjects } from "@kairos/kit";
import { NatsServer, sleep, waitFor } from "@kairos/testkit";
import { configSpec, startSegmentation, type SegmentationHandle } from "./service.js";
import { actionIdFor } from "./plan.js";

const demoConfig = fileURLToPath(new URL("../../../config/demo.yaml", import.meta.url));
let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let svc: SegmentationHandle;

beforeAll(async () => {
  server = await NatsServer.start();
  svc = await startSegmentation(
    loadConfig(configSpec, {
      NATS_URL: server.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: demoConfig,
    }),
  );
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await svc?.stop();
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

async function all<D extends DescMessage>(stream: string, schema: D): Promise<MessageShape<D>[]> {
  const info = await jsm.streams.info(stream);
  const out: MessageShape<D>[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push(fromBinary(schema, m.data));
  }
  return out;
}

async function publishChange(
  profileId: string,
  version: number,
  traits: Record<string, string>,
  msgID?: string,
) {
  const c = create(ProfileChangedSchema, {
    workspace: "demo",
    profileId,
    version: BigInt(version),
    eventId: `${profileId}-e${version}`,
    eventReceivedAt: timestampFromMs(Date.now()),
    profile: { workspace: "demo", profileId, version: BigInt(version), traits },
  });
  await jetstream(nc).publish(subjects.profiles("demo", 0), toBinary(ProfileChangedSchema, c), {
    msgID: msgID ?? `demo:${profileId}:${version}`,
  });
}

describe("segmentation", () => {
  it("records the gold entry, publishes one intent with a deterministic action id, then the exit", async () => {
    await publishChange("p-1", 1, { plan: "gold", first_name: "Ada" });
    const intent = await waitFor(async () =>
      (await all("INTENTS", IntentSchema)).find((i) => i.profileId === "p-1"),
    );
    expect(intent).toMatchObject({
      actionId: actionIdFor("demo", "gold-welcome", "p-1"),
      channel: "webhook",
      journey: "gold-welcome",
      purpose: "marketing",
      cancelKeys: ["journey:gold-welcome:p-1"],
      payload: { template: "gold-welcome", greeting: "Welcome to gold, Ada" },
    });
    expect(intent.notAfter).toBeDefined();

    // The same change again (a replay past the duplicate window) and a later one: no second intent.
    await publishChange("p-1", 1, { plan: "gold", first_name: "Ada" }, "replay-p-1-1");
    await publishChange("p-1", 2, { plan: "gold", first_name: "Ada" });
    const client = createGrpcClient(SegmentService, svc.grpcAddress);
    try {
      await waitFor(
        async () =>
          (await client.listMemberships({ workspace: "demo", profileId: "p-1" })).memberships.length === 1,
      );
      const members = await client.listSegmentMembers({ workspace: "demo", segment: "gold" });
      expect(members.members.map((m) => m.profileId)).toEqual(["p-1"]);
      await expect(client.listSegmentMembers({ workspace: "demo", segment: "nope" })).rejects.toThrow(
        /unknown segment/,
      );

      await publishChange("p-1", 3, { plan: "silver" });
      await waitFor(
        async () =>
          (await client.listMemberships({ workspace: "demo", profileId: "p-1" })).memberships.length === 0,
      );
    } finally {
      client.close();
    }
    // The membership record is written before the change is published: wait for the stream.
    const changes = await waitFor(async () => {
      const c = (await all("SEGMENTS", SegmentMembershipChangedSchema)).filter((x) => x.profileId === "p-1");
      return c.length >= 2 ? c : undefined;
    });
    expect(changes.map((c) => [c.segment, c.change, c.profileVersion])).toEqual([
      ["gold", MembershipChange.ENTERED, 1n],
      ["gold", MembershipChange.EXITED, 3n],
    ]);
    await sleep(200);
    // One gold-welcome intent (the demo config's gold-sms journey fires once on the same entry).
    const intents = (await all("INTENTS", IntentSchema)).filter((i) => i.profileId === "p-1");
    expect(intents.map((i) => i.journey).sort()).toEqual(["gold-sms", "gold-welcome"]);
    expect(intents.every((i) => i.profileVersion === 1n)).toBe(true);
  });

  it("starts a profile split back off a merge afresh, though it left everything when merged", async () => {
    const member = async (profileId: string) => {
      const client = createGrpcClient(SegmentService, svc.grpcAddress);
      try {
        return (await client.listMemberships({ workspace: "demo", profileId })).memberships.map(
          (m) => m.segment,
        );
      } finally {
        client.close();
      }
    };
    await publishChange("p-tablet", 1, { plan: "gold" });
    await waitFor(async () => (await member("p-tablet")).includes("gold"));
    // Merged into p-owner: the tablet's profile leaves its segments.
    const merge = create(ProfileChangedSchema, {
      workspace: "demo",
      profileId: "p-owner",
      version: 4n,
      eventId: "merge-e",
      mergedFrom: ["p-tablet"],
      profile: { workspace: "demo", profileId: "p-owner", version: 4n, traits: { plan: "gold" } },
    });
    await jetstream(nc).publish(subjects.profiles("demo", 0), toBinary(ProfileChangedSchema, merge));
    await waitFor(async () => (await member("p-tablet")).length === 0);
    // Split back off (version 2 of its own): evaluated, not ignored as older than its exit.
    const restored = create(ProfileChangedSchema, {
      workspace: "demo",
      profileId: "p-tablet",
      version: 2n,
      unmergedFrom: "p-owner",
      profile: { workspace: "demo", profileId: "p-tablet", version: 2n, traits: { plan: "gold" } },
    });
    await jetstream(nc).publish(subjects.profiles("demo", 0), toBinary(ProfileChangedSchema, restored));
    await waitFor(async () => (await member("p-tablet")).includes("gold"));
    // Its next change goes on from there.
    await publishChange("p-tablet", 3, { plan: "silver" });
    await waitFor(async () => (await member("p-tablet")).length === 0);
    // The split's change delivered again afterwards is older than that: ignored, not started afresh.
    await jetstream(nc).publish(subjects.profiles("demo", 0), toBinary(ProfileChangedSchema, restored), {
      msgID: "demo:p-tablet:2:again",
    });
    await sleep(500);
    expect(await member("p-tablet")).toEqual([]);
  });
});

describe("a merge and the merged-away profile's abandoned cart", () => {
  const change = async (
    profileId: string,
    version: number,
    over: { event?: string; mergedFrom?: string[]; unmergedFrom?: string; msgID?: string } = {},
  ) => {
    const c = create(ProfileChangedSchema, {
      workspace: "demo",
      profileId,
      version: BigInt(version),
      eventId: `${profileId}-e${version}`,
      eventName: over.event ?? "",
      eventProperties: over.event === undefined ? {} : { sku: "boots" },
      mergedFrom: over.mergedFrom ?? [],
      unmergedFrom: over.unmergedFrom ?? "",
      unmergedFromVersion: over.unmergedFrom === undefined ? 0n : 3n,
      eventReceivedAt: timestampFromMs(Date.now()),
      profile: { workspace: "demo", profileId, version: BigInt(version), traits: {} },
    });
    await jetstream(nc).publish(subjects.profiles("demo", 0), toBinary(ProfileChangedSchema, c), {
      msgID: over.msgID ?? `demo:${profileId}:${version}`,
    });
  };
  const cart = async (profileId: string) =>
    (await all("INTENTS", IntentSchema)).filter(
      (i) => i.profileId === profileId && i.journey === "abandoned-cart",
    );
  const exits = async (profileId: string) =>
    (await all("CANCELS", CancellationSchema)).filter(
      (c) => c.profileId === profileId && c.cancelKeys.includes(`journey:abandoned-cart:${profileId}`),
    );
  const cartOf = async (profileId: string) => {
    await change(profileId, 1, { event: "Product Added" });
    await waitFor(async () => (await cart(profileId)).length === 1);
  };

  it("goes with the customer: their purchase after the merge exits it, on the survivor", async () => {
    await cartOf("p-m-anon");
    await change("p-m-user", 1);
    await change("p-m-user", 2, { mergedFrom: ["p-m-anon"] });
    await change("p-m-user", 3, { event: "Order Completed" });
    const [exit] = await waitFor(async () => {
      const x = await exits("p-m-user");
      return x.length > 0 ? x : undefined;
    });
    expect(exit).toMatchObject({ reason: "exit abandoned-cart: event Order Completed", profileVersion: 3n });
    expect(await exits("p-m-anon")).toEqual([]); // not cancelled by the merge itself
  });

  it("is cancelled with the merged-away profile when the purchase was decided before the merge came by", async () => {
    await cartOf("p-o-anon");
    await change("p-o-user", 1);
    await change("p-o-user", 3, { event: "Order Completed" }); // evaluated first, without the cart
    await sleep(500);
    await change("p-o-user", 2, { mergedFrom: ["p-o-anon"] });
    const [exit] = await waitFor(async () => {
      const x = await exits("p-o-anon");
      return x.length > 0 ? x : undefined;
    });
    expect(exit?.reason).toBe("exit abandoned-cart: profile_deleted");
  });

  it("is given back to the profile an unmerge splits off again", async () => {
    await cartOf("p-u-anon");
    await change("p-u-user", 1);
    await change("p-u-user", 2, { mergedFrom: ["p-u-anon"] });
    await change("p-u-anon", 2, { unmergedFrom: "p-u-user" }); // the survivor at version 3 after it
    // The merge delivered again after the split (it was not acknowledged): not made again.
    await sleep(300);
    await change("p-u-user", 2, { mergedFrom: ["p-u-anon"], msgID: "demo:p-u-user:2:again" });
    await sleep(300);
    // The split-off profile's own purchase exits its cart again.
    await change("p-u-anon", 3, { event: "Order Completed" });
    await waitFor(async () => (await exits("p-u-anon")).length === 1);
    expect((await exits("p-u-anon"))[0]?.reason).toBe("exit abandoned-cart: event Order Completed");
  });
});
