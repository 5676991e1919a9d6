/**
 * The core of the mesh in the test's own process on a test nats-server —
 * identity, segmentation, suppression and ingestion — for end-to-end tests
 * that add the channel they are about.
 */
import { randomUUID } from "node:crypto";
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ProfileService, SegmentService, type Profile } from "@kairos/contracts";
import { createGrpcClient, loadConfig } from "@kairos/kit";
import * as ingestion from "@kairos/ingestion";
import * as identity from "@kairos/identity";
import * as segmentation from "@kairos/segmentation";
import * as suppression from "@kairos/suppression";

export interface CoreMesh {
  /** The environment every service of the test starts from (NATS, config, ports 0, silent logs). */
  readonly base: Record<string, string>;
  /** The Segment HTTP API of ingestion. */
  readonly httpUrl: string;
  readonly grpc: { ingestion: string; identity: string; segmentation: string; suppression: string };
  /**
   * One Segment HTTP API call (`track`, `identify`, …) with a write key, under a fresh message id;
   * throws unless ingestion answers 200. Resolves with the message id.
   */
  send(writeKey: string, call: string, body: Record<string, unknown>): Promise<string>;
  /** The profile identity holds for an identifier now, or undefined. */
  profile(workspace: string, type: string, value: string): Promise<Profile | undefined>;
  /** The segments a profile is in now, by name. */
  memberships(workspace: string, profileId: string): Promise<string[]>;
  /** Starts one more service and stops it with the rest. */
  add<H extends { stop(): Promise<unknown> }>(start: Promise<H>): Promise<H>;
  /** Stops everything, last started first. */
  stop(): Promise<void>;
}

export async function startCoreMesh(
  natsUrl: string,
  config: string,
  opts: { spanProcessors?: SpanProcessor[]; clock?: () => number } = {},
): Promise<CoreMesh> {
  const base = {
    NATS_URL: natsUrl,
    GRPC_PORT: "0",
    OPS_PORT: "0",
    KAIROS_CONFIG: config,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
  };
  const so = {
    spanProcessors: opts.spanProcessors ?? [],
    ...(opts.clock === undefined ? {} : { clock: opts.clock }),
  };
  const stops: (() => Promise<unknown>)[] = [];
  const add = async <H extends { stop(): Promise<unknown> }>(start: Promise<H>): Promise<H> => {
    const h = await start;
    stops.push(() => h.stop());
    return h;
  };
  const stop = async () => {
    for (const s of stops.reverse()) await s();
  };
  try {
    const id = await add(identity.startIdentity(loadConfig(identity.configSpec, base), so));
    const seg = await add(
      segmentation.startSegmentation(
        loadConfig(segmentation.configSpec, { ...base, IDENTITY_GRPC_ADDR: id.grpcAddress }),
        so,
      ),
    );
    const sup = await add(
      suppression.startSuppression(
        loadConfig(suppression.configSpec, { ...base, IDENTITY_GRPC_ADDR: id.grpcAddress }),
        so,
      ),
    );
    const ing = await add(
      ingestion.startIngestion(loadConfig(ingestion.configSpec, { ...base, HTTP_PORT: "0" }), so),
    );
    return {
      base,
      httpUrl: ing.httpUrl,
      send: async (writeKey, call, body) => {
        const messageId = randomUUID();
        const res = await fetch(`${ing.httpUrl}/v1/${call}`, {
          method: "POST",
          headers: {
            authorization: `Basic ${Buffer.from(`${writeKey}:`).toString("base64")}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({ ...body, messageId }),
        });
        if (res.status !== 200) throw new Error(`${call}: ${res.status} ${await res.text()}`);
        return messageId;
      },
      profile: async (workspace, type, value) => {
        const client = createGrpcClient(ProfileService, id.grpcAddress);
        try {
          return (await client.getProfile({ workspace, identifier: { type, value } })).profile;
        } catch {
          return undefined;
        } finally {
          client.close();
        }
      },
      memberships: async (workspace, profileId) => {
        const client = createGrpcClient(SegmentService, seg.grpcAddress);
        try {
          const res = await client.listMemberships({ workspace, profileId });
          return res.memberships.map((m) => m.segment);
        } finally {
          client.close();
        }
      },
      grpc: {
        ingestion: ing.grpcAddress,
        identity: id.grpcAddress,
        segmentation: seg.grpcAddress,
        suppression: sup.grpcAddress,
      },
      add,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
