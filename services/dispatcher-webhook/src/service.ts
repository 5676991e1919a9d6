/**
 * The webhook dispatcher: takes its channel's dispatches off the DISPATCH work
 * queue and POSTs each action as JSON to the channel's URL, with the action id
 * as `Idempotency-Key`; retries transient failures with backoff; records the
 * outcome and the channel's freshness (delivered − due).
 */
import { EventEmitter, on } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { context, SpanKind, trace } from "@opentelemetry/api";
import { Kvm } from "@nats-io/kv";
import { Counter, Gauge, Histogram } from "prom-client";
import {
  DispatchSchema,
  DispatcherService,
  OutcomeSchema,
  OutcomeStatus,
  type Dispatch,
} from "@kairos/contracts";
import { loadMeshConfig } from "@kairos/mesh-config";
import {
  ConfigError,
  Cancellations,
  consumers,
  env,
  GrpcError,
  implement,
  injectTraceContext,
  LATENCY_BUCKETS_S,
  PermanentError,
  recordSpanError,
  runtimeConfig,
  startService,
  type ServiceHandle,
  type StartOptions,
  subjects,
  type ConfigOf,
  type MessageContext,
} from "@kairos/kit";
import { createPoster } from "./http-post.js";
import { classifyError, classifyStatus, requestBody, type Classified } from "./delivery.js";

export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50055),
  OPS_PORT: env.port(9465),
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  CHANNEL: env.string("webhook"),
  /** Overrides the channel's configured URL (local runs and tests). */
  WEBHOOK_URL: env.string(""),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
};

export type DispatcherConfig = ConfigOf<typeof configSpec>;

export type DispatcherHandle = ServiceHandle;

export type { StartOptions };

interface LedgerEntry {
  status: "delivered" | "failed";
  reason: string;
  atMs: number;
  attempts: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The channel's delivery settings, or a ConfigError naming what is missing. */
function channelSettings(cfg: DispatcherConfig) {
  const mesh = loadMeshConfig(cfg.KAIROS_CONFIG);
  const channel = mesh.channels.find((c) => c.name === cfg.CHANNEL);
  if (channel === undefined) {
    throw new ConfigError([
      `CHANNEL=${JSON.stringify(cfg.CHANNEL)} is not a channel of ${cfg.KAIROS_CONFIG} (channels: ${mesh.channels.map((c) => c.name).join(", ") || "none"})`,
    ]);
  }
  const url = cfg.WEBHOOK_URL !== "" ? cfg.WEBHOOK_URL : channel.webhook?.url;
  if (url === undefined) {
    throw new ConfigError([
      `channel ${channel.name} has no webhook settings in ${cfg.KAIROS_CONFIG}, and WEBHOOK_URL is not set`,
    ]);
  }
  try {
    new URL(url);
  } catch {
    throw new ConfigError([`WEBHOOK_URL=${JSON.stringify(url)} is not a URL`]);
  }
  return {
    channel,
    url,
    timeoutMs: channel.webhook?.timeout ?? 5000,
    headers: channel.webhook?.headers ?? {},
  };
}

export async function startDispatcherWebhook(
  cfg: DispatcherConfig,
  opts: StartOptions = {},
): Promise<DispatcherHandle> {
  const clock = opts.clock ?? Date.now;
  const { channel, url, timeoutMs, headers } = channelSettings(cfg);
  return startService("dispatcher-webhook", cfg, opts, async (runtime) => {
    const kvm = new Kvm(runtime.nc);
    const cancellations = await Cancellations.open(runtime.nc, cfg.NATS_REPLICAS);
    // What was delivered (or failed for good): a redelivered dispatch is not sent again.
    const ledger = await kvm.create("dispatch-ledger", {
      history: 1,
      replicas: cfg.NATS_REPLICAS,
      ttl: 7 * 86_400_000,
    });
    runtime.addReadinessCheck({ name: "dispatch-ledger", check: () => ledger.status().then(() => true) });

    const registry = runtime.metrics.registry;
    const lateness = new Histogram({
      name: "kairos_freshness_lateness_seconds",
      help: "Delivered-at minus due-at per action, in seconds: how late the channel acted.",
      labelNames: ["channel"],
      buckets: LATENCY_BUCKETS_S,
      registers: [registry],
    });
    new Gauge({
      name: "kairos_freshness_objective_seconds",
      help: "The channel's freshness objective (p99 lateness), in seconds.",
      labelNames: ["channel"],
      registers: [registry],
    }).set({ channel: channel.name }, channel.freshnessSlo / 1000);
    const deliveries = new Counter({
      name: "kairos_dispatch_attempts_total",
      help: "Delivery attempts by result (delivered, retry, failed, expired, duplicate) and reason.",
      labelNames: ["channel", "result", "reason"],
      registers: [registry],
    });
    runtime.metrics.stageObjective.set({ stage: "dispatch" }, channel.freshnessSlo / 1000);
    const counts = { delivered: 0n, failed: 0n, expired: 0n };
    let inFlight = 0;
    const delivered = new EventEmitter();
    delivered.setMaxListeners(0);

    const publishOutcome = (
      d: Dispatch,
      status: OutcomeStatus,
      reason: string,
      attempts: number,
      deliveredAt?: Timestamp,
    ) => {
      const i = d.intent!;
      return runtime.publisher.publishMessage(
        subjects.outcomes(i.workspace, i.channel),
        OutcomeSchema,
        create(OutcomeSchema, {
          actionId: i.actionId,
          workspace: i.workspace,
          profileId: i.profileId,
          channel: i.channel,
          journey: i.journey,
          status,
          reason,
          attempts,
          times: {
            eventReceivedAt: i.eventReceivedAt,
            intendedAt: i.intendedAt,
            decidedAt: d.decidedAt,
            dueAt: d.dueAt,
            ...(deliveredAt === undefined ? {} : { deliveredAt }),
          },
        }),
        { msgID: `${i.actionId}:${OutcomeStatus[status]}` },
      );
    };

    const poster = createPoster(url, timeoutMs, cfg.CONCURRENCY);
    runtime.lifecycle.add("connections", "webhook-connections", () => poster.close());

    const post = async (d: Dispatch): Promise<Classified> => {
      const span = runtime.tracer.startSpan(`POST ${channel.name}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          "http.request.method": "POST",
          "url.full": url,
          "kairos.action_id": d.intent?.actionId ?? "",
        },
      });
      const h: Record<string, string> = {
        ...headers,
        "content-type": "application/json",
        "idempotency-key": d.intent?.actionId ?? "",
      };
      injectTraceContext(
        { get: (k) => h[k], set: (k, v) => (h[k] = v) },
        trace.setSpan(context.active(), span),
      );
      try {
        const status = await poster.post(h, JSON.stringify(requestBody(d)));
        span.setAttribute("http.response.status_code", status);
        return classifyStatus(status);
      } catch (e) {
        recordSpanError(span, e);
        return classifyError(e);
      } finally {
        span.end();
      }
    };

    const handle = async (d: Dispatch, ctx: MessageContext) => {
      const i = d.intent;
      if (i === undefined || i.actionId === "")
        throw new PermanentError("dispatch without an intent or action id");
      const seen = await ledger.get(i.actionId);
      if (seen !== null && seen.operation === "PUT" && seen.value.length > 0) {
        // Already settled: re-publish its outcome (same id, stored once), send nothing.
        const e = JSON.parse(dec.decode(seen.value)) as LedgerEntry;
        deliveries.inc({ channel: channel.name, result: "duplicate", reason: "" });
        await publishOutcome(
          d,
          e.status === "delivered" ? OutcomeStatus.DELIVERED : OutcomeStatus.FAILED,
          e.reason,
          e.attempts,
          e.status === "delivered" ? timestampFromMs(e.atMs) : undefined,
        );
        return;
      }
      const cancelled = await cancellations.cancelling(
        i.workspace,
        i.profileId,
        i.cancelKeys,
        i.intendedAt === undefined ? 0 : timestampMs(i.intendedAt),
      );
      if (cancelled !== undefined) {
        deliveries.inc({ channel: channel.name, result: "cancelled", reason: "cancelled" });
        await publishOutcome(d, OutcomeStatus.CANCELLED, "cancelled", ctx.deliveryCount - 1);
        return;
      }
      if (i.notAfter !== undefined && clock() > timestampMs(i.notAfter)) {
        counts.expired++;
        deliveries.inc({ channel: channel.name, result: "expired", reason: "expired" });
        await publishOutcome(d, OutcomeStatus.EXPIRED, "expired", ctx.deliveryCount - 1);
        return;
      }
      inFlight++;
      let result: Classified;
      try {
        result = await post(d);
      } finally {
        inFlight--;
      }
      const now = clock();
      if (result.kind === "retry" && ctx.deliveryCount < consumers.dispatcher(channel.name).maxDeliver) {
        deliveries.inc({ channel: channel.name, result: "retry", reason: result.reason });
        throw new Error(`delivery to ${channel.name} failed (${result.reason}); will retry`);
      }
      const entry: LedgerEntry = {
        status: result.kind === "delivered" ? "delivered" : "failed",
        reason: result.kind === "delivered" ? "" : result.reason,
        atMs: now,
        attempts: ctx.deliveryCount,
      };
      await ledger.put(i.actionId, enc.encode(JSON.stringify(entry)));
      if (result.kind === "delivered") {
        counts.delivered++;
        deliveries.inc({ channel: channel.name, result: "delivered", reason: "" });
        if (d.dueAt !== undefined)
          lateness.observe({ channel: channel.name }, Math.max(0, now - timestampMs(d.dueAt)) / 1000);
        await publishOutcome(d, OutcomeStatus.DELIVERED, "", ctx.deliveryCount, timestampFromMs(now));
        delivered.emit("action", d);
      } else {
        counts.failed++;
        deliveries.inc({ channel: channel.name, result: "failed", reason: result.reason });
        await publishOutcome(d, OutcomeStatus.FAILED, result.reason, ctx.deliveryCount);
      }
    };

    await runtime.consume(consumers.dispatcher(channel.name), {
      stage: "dispatch",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinary(DispatchSchema, b),
      handle,
    });

    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(DispatcherService, {
        getStatus: () => ({
          channel: channel.name,
          freshnessSloMs: channel.freshnessSlo,
          delivered: counts.delivered,
          failed: counts.failed,
          expired: counts.expired,
          inFlight,
        }),
        subscribe: async function* (req, ctx) {
          if (req.workspace === "" || req.identifierType === "" || req.identifierValue === "") {
            throw new GrpcError(
              grpc.status.INVALID_ARGUMENT,
              "workspace, identifier_type and identifier_value are required",
            );
          }
          // Live only: actions delivered from now on to this identifier.
          for await (const [d] of on(delivered, "action", { signal: ctx.signal }) as AsyncIterable<
            [Dispatch]
          >) {
            const i = d.intent;
            if (i?.workspace !== req.workspace) continue;
            if (!d.destinations.some((x) => x.type === req.identifierType && x.value === req.identifierValue))
              continue;
            yield {
              actionId: i.actionId,
              journey: i.journey,
              payload: i.payload ?? {},
              ...(d.dueAt === undefined ? {} : { dueAt: d.dueAt }),
            };
          }
        },
      }),
    ]);
    runtime.logger.info({ channel: channel.name, url }, "dispatching");
    return { grpcAddress: grpcServer.address };
  });
}
