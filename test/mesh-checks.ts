/** The end-to-end promises, checked the same way by every fault test: nothing lost, nothing twice. */
import { expect } from "vitest";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { fromBinary } from "@bufbuild/protobuf";
import { ProfileChangedSchema, ProfileService } from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";
import { sleep, waitFor } from "@kairos/testkit";
import type { ChannelEndpoint } from "./channel-endpoint.js";

/** Waits until every event id has a ProfileChanged in PROFILES, then checks none has two. */
export async function expectOneChangePerEvent(natsUrl: string, eventIds: ReadonlySet<string>): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    const seen = new Map<string, number>();
    await waitFor(
      async () => {
        const info = await jsm.streams.info("PROFILES");
        seen.clear();
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const m = await jsm.streams.getMessage("PROFILES", { seq }).catch(() => null);
          if (m === null) continue;
          const id = fromBinary(ProfileChangedSchema, m.data).eventId;
          if (eventIds.has(id)) seen.set(id, (seen.get(id) ?? 0) + 1);
        }
        return seen.size === eventIds.size;
      },
      { timeoutMs: 120_000, intervalMs: 500, what: `a ProfileChanged for each of ${eventIds.size} events` },
    );
    expect([...seen].filter(([, n]) => n > 1)).toEqual([]);
  } finally {
    await nc.close();
  }
}

/** Checks each user's profile applied exactly `version` events. */
export async function expectProfileVersions(
  identityAddress: string,
  workspace: string,
  userIds: readonly string[],
  version: number,
): Promise<void> {
  const profiles = createGrpcClient(ProfileService, identityAddress);
  try {
    for (const userId of userIds) {
      const { profile } = await profiles.getProfile({
        workspace,
        identifier: { type: "user_id", value: userId },
      });
      expect(profile?.version, userId).toBe(BigInt(version));
    }
  } finally {
    profiles.close();
  }
}

/** Waits for `expected` distinct actions at the endpoint, then checks none came twice. */
export async function expectEachActionOnce(endpoint: ChannelEndpoint, expected: number): Promise<void> {
  await waitFor(() => endpoint.byKey().size >= expected, {
    timeoutMs: 120_000,
    intervalMs: 200,
    what: `${expected} distinct actions at the channel`,
  });
  await sleep(1500); // a double send would arrive now
  const keys = endpoint.byKey();
  expect([...keys].filter(([, posts]) => posts.length > 1).map(([k]) => k)).toEqual([]);
  expect(keys.size).toBe(expected);
}
