import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import {
  DispatcherService,
  IngestService,
  ProfileService,
  SegmentService,
  SuppressionService,
  EventSchema,
} from "@kairos/contracts";
import { checkHealth, listServicesByReflection } from "./grpc-probe.js";
import { startGrpcServer, implement, GrpcError, type GrpcServer } from "./grpc-server.js";
import { createGrpcClient } from "./grpc-client.js";
import { Metrics } from "./metrics.js";
import { createLogger } from "./logger.js";
import { tracerFor } from "./telemetry.js";

let server: GrpcServer;
/** Resolved when the streaming handler named by the key saw its call's signal aborted. */
const cancelSeen = new Map<string, () => void>();
/** Resolved when the unary handler named by the key has started. */
const started = new Map<string, () => void>();
const notYet = () => {
  throw new GrpcError(grpc.status.UNIMPLEMENTED, "not in this test");
};

beforeAll(async () => {
  server = await startGrpcServer({
    service: "grpc-test",
    host: "127.0.0.1",
    port: 0,
    tracer: tracerFor("grpc-test"),
    metrics: new Metrics("grpc-test"),
    logger: createLogger({ service: "grpc-test", level: "silent" }),
    registrations: [
      implement(IngestService, {
        ingest: async (req, ctx) => {
          if (req.writeKey === "until-cancelled-late") {
            started.get(req.writeKey)?.();
            // The signal is made lazily: first read here, after the client has cancelled.
            await new Promise((r) => setTimeout(r, 300));
            const signal = ctx.signal;
            if (!signal.aborted)
              await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
            cancelSeen.get(req.writeKey)?.();
          }
          return { accepted: req.events.length, rejections: [] };
        },
        ingestStream: async (reqs) => {
          let accepted = 0;
          for await (const r of reqs) accepted += r.events.length;
          return { accepted };
        },
      }),
      implement(ProfileService, {
        getProfile: notYet,
        batchGetProfiles: notYet,
        deleteProfile: notYet,
        unmergeProfile: notYet,
      }),
      implement(SegmentService, { listMemberships: notYet, listSegmentMembers: notYet }),
      implement(SuppressionService, {
        check: notYet,
        setConsent: notYet,
        setPreferences: notYet,
        cancel: notYet,
        addToSuppressionList: notYet,
        removeFromSuppressionList: notYet,
        explain: notYet,
      }),
      implement(DispatcherService, {
        getStatus: () => ({ channel: "web", freshnessSloMs: 100 }),
        subscribe: async function* (req, ctx) {
          if (req.identifierValue.startsWith("until-cancelled")) {
            yield { actionId: "first" };
            const signal = ctx.signal;
            if (!signal.aborted)
              await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
            cancelSeen.get(req.identifierValue)?.();
            return;
          }
          for (let i = 0; i < 3; i++) yield { actionId: `${req.identifierValue}-${i}` };
        },
      }),
    ],
  });
  server.setServing();
});

afterAll(async () => {
  await server?.shutdown(1000);
});

describe("gRPC server built from descriptors", () => {
  it("serves unary, client-streaming and server-streaming calls through the typed client", async () => {
    const ingest = createGrpcClient(IngestService, server.address);
    const dispatcher = createGrpcClient(DispatcherService, server.address);
    try {
      const res = await ingest.ingest({ writeKey: "k", events: [create(EventSchema, { messageId: "a" })] });
      expect(res.accepted).toBe(1);
      const streamed = await ingest.ingestStream([{ events: [{}, {}] }, { events: [{}] }]);
      expect(streamed.accepted).toBe(3);
      const pushed: string[] = [];
      for await (const m of dispatcher.subscribe({ identifierValue: "u1" })) pushed.push(m.actionId);
      expect(pushed).toEqual(["u1-0", "u1-1", "u1-2"]);
      await expect(createGrpcClient(ProfileService, server.address).getProfile({})).rejects.toMatchObject({
        code: grpc.status.UNIMPLEMENTED,
      });
    } finally {
      ingest.close();
      dispatcher.close();
    }
  });

  it("aborts a handler's signal when the client cancels, whether it read the signal before or after", async () => {
    const ingest = createGrpcClient(IngestService, server.address);
    const dispatcher = createGrpcClient(DispatcherService, server.address);
    try {
      // A streaming handler holding its signal when the client cancels.
      const streamSaw = new Promise<void>((r) => cancelSeen.set("until-cancelled", r));
      const abortStream = new AbortController();
      for await (const m of dispatcher.subscribe(
        { identifierValue: "until-cancelled" },
        { signal: abortStream.signal },
      )) {
        expect(m.actionId).toBe("first");
        abortStream.abort();
        break;
      }
      await streamSaw;
      // A unary handler that first reads its signal after the cancel arrived.
      const key = "until-cancelled-late";
      const unarySaw = new Promise<void>((r) => cancelSeen.set(key, r));
      const begun = new Promise<void>((r) => started.set(key, r));
      const abortUnary = new AbortController();
      const call = ingest.ingest({ writeKey: key }, { signal: abortUnary.signal });
      await begun;
      abortUnary.abort();
      await expect(call).rejects.toMatchObject({ code: grpc.status.CANCELLED });
      await unarySaw;
    } finally {
      ingest.close();
      dispatcher.close();
    }
  });

  it("answers health SERVING per service and NOT_FOUND for an unknown one", async () => {
    for (const name of [
      "",
      "kairos.v1.IngestService",
      "kairos.v1.ProfileService",
      "kairos.v1.SegmentService",
      "kairos.v1.SuppressionService",
      "kairos.v1.DispatcherService",
    ]) {
      expect(await checkHealth(server.address, name), name).toBe("SERVING");
    }
    expect(await checkHealth(server.address, "kairos.v1.NoSuchService")).toBe("NOT_FOUND");
    server.setNotServing();
    expect(await checkHealth(server.address, "kairos.v1.IngestService")).toBe("NOT_SERVING");
    server.setServing();
  });

  it("lists every service and method through server reflection", async () => {
    const listed = await listServicesByReflection(server.address);
    const sorted = (xs: string[] | undefined) => [...(xs ?? [])].sort();
    expect(sorted(listed["kairos.v1.IngestService"])).toEqual(["Ingest", "IngestStream"]);
    expect(sorted(listed["kairos.v1.ProfileService"])).toEqual([
      "BatchGetProfiles",
      "DeleteProfile",
      "GetProfile",
      "UnmergeProfile",
    ]);
    expect(sorted(listed["kairos.v1.SegmentService"])).toEqual(["ListMemberships", "ListSegmentMembers"]);
    expect(sorted(listed["kairos.v1.SuppressionService"])).toEqual([
      "AddToSuppressionList",
      "Cancel",
      "Check",
      "Explain",
      "RemoveFromSuppressionList",
      "SetConsent",
      "SetPreferences",
    ]);
    expect(sorted(listed["kairos.v1.DispatcherService"])).toEqual(["GetStatus", "Subscribe"]);
  });
});
