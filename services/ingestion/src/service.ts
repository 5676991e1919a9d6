/**
 * The ingestion service: the Segment HTTP API and `IngestService` over gRPC,
 * both publishing accepted events to EVENTS and answering only once they are
 * durable.
 */
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { IngestService, type Event } from "@kairos/contracts";
import { followMeshConfig, loadMeshConfig, writeKeyIndex } from "@kairos/mesh-config";
import {
  env,
  GrpcError,
  implement,
  runtimeConfig,
  startService,
  type ConfigOf,
  type ServiceHandle,
  type StartOptions,
} from "@kairos/kit";
import { sortProtoEvents, type Source } from "./batch.js";
import { Ingestor, NotDurable, type Rejected } from "./ingestor.js";
import { startHttpApi } from "./http-api.js";

export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50051),
  OPS_PORT: env.port(9461),
  HTTP_HOST: env.string("127.0.0.1"),
  HTTP_PORT: env.port(8088),
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  PARTITIONS: env.int(16, { min: 1, max: 1024 }),
};

export type IngestionConfig = ConfigOf<typeof configSpec>;

export type IngestionHandle = ServiceHandle & { httpUrl: string };

export type { StartOptions };

function sourceFor(keys: ReadonlyMap<string, Source>, writeKey: string): Source {
  if (writeKey === "") throw new GrpcError(grpc.status.UNAUTHENTICATED, "write_key is required");
  const src = keys.get(writeKey);
  if (src === undefined) throw new GrpcError(grpc.status.UNAUTHENTICATED, "unknown write key");
  return src;
}

async function acceptOrUnavailable(ingestor: Ingestor, events: Event[], startedAt: number) {
  try {
    return await ingestor.accept(events, startedAt, "grpc");
  } catch (e) {
    if (e instanceof NotDurable) throw new GrpcError(grpc.status.UNAVAILABLE, e.message);
    throw e;
  }
}

/** Starts ingestion; resolves once both doors listen and EVENTS is declared. */
export async function startIngestion(
  cfg: IngestionConfig,
  opts: StartOptions = {},
): Promise<IngestionHandle> {
  const writeKeys = new Map(writeKeyIndex(loadMeshConfig(cfg.KAIROS_CONFIG)));
  return startService("ingestion", cfg, opts, async (runtime) => {
    // A configuration applied with `kairos apply` overrides the file, and reloads live: a new
    // write key is accepted, a removed one refused, from then on (the map is shared in place).
    const configWatch = await followMeshConfig(
      runtime.nc,
      (mesh) => {
        const next = writeKeyIndex(mesh);
        for (const k of [...writeKeys.keys()]) if (!next.has(k)) writeKeys.delete(k);
        for (const [k, v] of next) writeKeys.set(k, v);
      },
      runtime.logger,
      cfg.NATS_REPLICAS,
    );
    runtime.lifecycle.add("intake", "config-watch", () => configWatch.stop());
    const ingestor = new Ingestor(runtime.publisher, cfg.PARTITIONS, runtime.metrics.registry);
    runtime.metrics.stageObjective.set({ stage: "accept" }, 0.01);

    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(IngestService, {
        ingest: async (req) => {
          const startedAt = Date.now();
          const src = sourceFor(writeKeys, req.writeKey);
          const sorted = sortProtoEvents(req.events, src, startedAt, randomUUID);
          ingestor.countRejected(src.workspace, src.source, sorted.rejections.length);
          const { accepted, duplicates } = await acceptOrUnavailable(ingestor, sorted.valid, startedAt);
          return { accepted, duplicates, rejections: sorted.rejections };
        },
        ingestStream: async (reqs) => {
          let src: Source | undefined;
          let index = 0;
          let accepted = 0;
          let duplicates = 0;
          const rejections: Rejected[] = [];
          // Each chunk is made durable before the next is read: the response then
          // covers every event of the stream, and memory stays bounded.
          for await (const req of reqs) {
            const startedAt = Date.now();
            if (src === undefined || (req.writeKey !== "" && writeKeys.get(req.writeKey) !== src)) {
              src = sourceFor(writeKeys, req.writeKey);
            }
            const sorted = sortProtoEvents(req.events, src, startedAt, randomUUID, index);
            index += req.events.length;
            ingestor.countRejected(src.workspace, src.source, sorted.rejections.length);
            rejections.push(...sorted.rejections);
            const r = await acceptOrUnavailable(ingestor, sorted.valid, startedAt);
            accepted += r.accepted;
            duplicates += r.duplicates;
          }
          return { accepted, duplicates, rejections };
        },
      }),
    ]);

    const http = await startHttpApi({
      host: cfg.HTTP_HOST,
      port: cfg.HTTP_PORT,
      writeKeys,
      ingestor,
      tracer: runtime.tracer,
      logger: runtime.logger,
    });
    runtime.lifecycle.add("intake", "http", () => http.close());
    runtime.logger.info({ http: http.url }, "Segment HTTP API listening");
    return { grpcAddress: grpcServer.address, httpUrl: http.url };
  });
}
