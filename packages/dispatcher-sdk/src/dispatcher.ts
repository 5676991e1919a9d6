/**
 * The dispatcher runtime: everything a channel's dispatcher needs except its one
 * delivery function. It consumes the channel's DISPATCH subjects, skips what was
 * already delivered (ledger), withdraws what was cancelled after hand-over,
 * re-checks the relevance deadline just before delivery, waits for the
 * destination's rate limit and circuit, delivers (one by one or in batches) in a
 * CLIENT span with the action id as idempotency key, retries transient failures
 * with backoff, FAILs and dead-letters permanent ones, and records outcomes and
 * freshness (lateness vs due time) against the channel's SLO.
 */
import { EventEmitter, on, setMaxListeners } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { context, SpanKind, trace, type Span } from "@opentelemetry/api";
import { Kvm, type KV } from "@nats-io/kv";
import { Counter, Gauge, Histogram } from "prom-client";
import type { z } from "zod";
import {
  DispatchSchema,
  DispatcherService,
  OutcomeSchema,
  OutcomeStatus,
  type Dispatch,
  fromBinaryFast,
} from "@kairos/contracts";
import {
  loadMeshConfig,
  parseChannelSettings,
  type ChannelConfig,
  type MeshConfig,
} from "@kairos/mesh-config";
import {
  backoffDelay,
  Cancellations,
  ConfigError,
  consumers,
  defaultBackoff,
  env,
  GrpcError,
  implement,
  injectTraceContext,
  LATENCY_BUCKETS_S,
  PermanentError,
  PROFILE_DELETED_KEY,
  recordSpanError,
  RetryLater,
  runMain,
  runtimeConfig,
  startService,
  subjects,
  type ConfigOf,
  type ConfigSpec,
  type Logger,
  type MessageContext,
  type ServiceHandle,
  type ServiceRegistration,
  type ServiceRuntime,
  type StartOptions,
} from "@kairos/kit";
import { actionOf, type Action } from "./action.js";
import { Batcher } from "./batcher.js";
import { CircuitBreaker } from "./circuit-breaker.js";
import { classifyError, type DeliveryResult } from "./classify.js";
import { HttpClient } from "./http.js";
import { LiveRegistry } from "./live.js";
import { RateLimiter } from "./rate-limit.js";

/** What a delivery function gets besides the action. */
export interface DeliveryContext<S> {
  /** The channel's `settings`, parsed with the definition's schema. */
  readonly settings: S;
  readonly channel: ChannelConfig;
  /** Keep-alive HTTP(S) client, one pool per origin. */
  readonly http: HttpClient;
  /** W3C trace headers of this delivery's CLIENT span: send them with the request. */
  readonly traceHeaders: Record<string, string>;
  readonly span: Span;
  readonly logger: Logger;
  readonly now: () => number;
}

/** What `setup` can use and extend. */
export interface DispatcherHost<S, C> {
  readonly runtime: ServiceRuntime;
  readonly settings: S;
  readonly channel: ChannelConfig;
  readonly mesh: MeshConfig;
  readonly config: C;
  readonly http: HttpClient;
  readonly clock: () => number;
  /**
   * Live subscribers (`DispatcherService.Subscribe`, and whatever `setup` adds).
   * By default every action this replica delivers is published to them.
   */
  readonly live: LiveRegistry;
  /** Set to false when delivery itself is the push to live subscribers (the web channel). */
  publishDeliveredToLive: boolean;
  /** Extra gRPC services on the dispatcher's port. */
  readonly grpcServices: ServiceRegistration[];
  /** Extra addresses to return in the handle (e.g. an HTTP server's). */
  readonly addresses: Record<string, string>;
}

/** A channel: its name, its settings, and one delivery function. */
export interface ChannelDefinition<S, E extends ConfigSpec = Record<never, never>> {
  /** The service name, e.g. `dispatcher-email` (logs, metrics, traces, dead letters). */
  service: string;
  /** The channel served when `CHANNEL` is not set. */
  defaultChannel: string;
  /** Local default ports. */
  ports: { grpc: number; ops: number };
  /** Deliveries in flight when neither `CONCURRENCY` nor the channel's `concurrency` says (default 64). */
  defaultConcurrency?: number;
  /**
   * The channel's own settings: a schema for its `settings:` in the mesh config
   * (problems are named with file and line), or a function that reads them.
   */
  settings?: z.ZodType<S, z.ZodTypeDef, unknown> | ((channel: ChannelConfig, cfg: DispatcherConfig<E>) => S);
  /** Extra environment variables of this dispatcher. */
  env?: E;
  /** Rate limits and circuits apply per destination key (default: one per channel). */
  destinationKey?: (action: Action, settings: S) => string;
  /** Delivers one action. A throw is a transient failure (retried). */
  deliver?: (action: Action, ctx: DeliveryContext<S>) => Promise<DeliveryResult>;
  /** Delivers a batch (with `batch:` in the channel config): one result per action, in order. */
  deliverBatch?: (actions: Action[], ctx: DeliveryContext<S>) => Promise<DeliveryResult[]>;
  /**
   * After a delivery succeeded and before it is recorded (ledger, DELIVERED outcome), e.g. to
   * remember what was added where; `detail` is the result's. Must be idempotent: a crash or a
   * throw here redelivers the action, which is sent again under the same idempotency key.
   */
  afterDelivered?: (
    action: Action,
    detail: string | undefined,
    host: DispatcherHost<S, DispatcherConfig<E>>,
  ) => Promise<void>;
  /** Extra set-up before consuming starts: HTTP servers, more consumers, gRPC services. */
  setup?: (host: DispatcherHost<S, DispatcherConfig<E>>) => Promise<void> | void;
}

/** The environment every dispatcher reads. */
export function dispatcherConfigSpec(ports: { grpc: number; ops: number }, channel: string) {
  return {
    ...runtimeConfig,
    GRPC_PORT: env.port(ports.grpc),
    OPS_PORT: env.port(ports.ops),
    KAIROS_CONFIG: env.string("config/demo.yaml"),
    /** The channel of the mesh config this process serves. */
    CHANNEL: env.string(channel),
    /** Deliveries in flight; 0: the channel's `concurrency`, or 64. */
    CONCURRENCY: env.int(0, { min: 0, max: 4096 }),
  };
}

export type DispatcherConfig<E extends ConfigSpec = Record<never, never>> = ConfigOf<
  ReturnType<typeof dispatcherConfigSpec>
> &
  ConfigOf<E>;

export type DispatcherHandle = ServiceHandle & { addresses: Record<string, string> };

interface LedgerEntry {
  status: "delivered";
  atMs: number;
  attempts: number;
  detail?: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The full environment spec of a definition (for `runMain` and tests). */
export function configSpecOf<S, E extends ConfigSpec>(
  def: ChannelDefinition<S, E>,
): ReturnType<typeof dispatcherConfigSpec> & E {
  return { ...dispatcherConfigSpec(def.ports, def.defaultChannel), ...(def.env ?? ({} as E)) };
}

/** `main` of a dispatcher service. */
export function runDispatcher<S, E extends ConfigSpec>(def: ChannelDefinition<S, E>): Promise<void> {
  return runMain(def.service, configSpecOf(def), (cfg, opts) =>
    startDispatcher(def, cfg as DispatcherConfig<E>, opts),
  );
}

/** Sleeps `ms`, or less when `signal` aborts; resolves false when aborted. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      resolve(false);
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", done);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export async function startDispatcher<S, E extends ConfigSpec>(
  def: ChannelDefinition<S, E>,
  cfg: DispatcherConfig<E>,
  opts: StartOptions = {},
): Promise<DispatcherHandle> {
  if ((def.deliver === undefined) === (def.deliverBatch === undefined)) {
    throw new Error(`${def.service}: define exactly one of deliver and deliverBatch`);
  }
  const clock = opts.clock ?? Date.now;
  const mesh = loadMeshConfig(cfg.KAIROS_CONFIG);
  const channel = mesh.channels.find((c) => c.name === cfg.CHANNEL);
  if (channel === undefined) {
    throw new ConfigError([
      `CHANNEL=${JSON.stringify(cfg.CHANNEL)} is not a channel of ${cfg.KAIROS_CONFIG} (channels: ${mesh.channels.map((c) => c.name).join(", ") || "none"})`,
    ]);
  }
  const settings =
    def.settings === undefined
      ? (undefined as S)
      : typeof def.settings === "function"
        ? def.settings(channel, cfg)
        : parseChannelSettings(cfg.KAIROS_CONFIG, channel.name, def.settings);
  if (def.deliverBatch !== undefined && channel.batch === undefined) {
    throw new ConfigError([
      `channel ${channel.name} (${def.service}) delivers in batches: give it batch: {maxSize}`,
    ]);
  }
  const concurrency =
    cfg.CONCURRENCY > 0 ? cfg.CONCURRENCY : (channel.concurrency ?? def.defaultConcurrency ?? 64);
  const spec = { ...consumers.dispatcher(channel.name), maxDeliver: channel.maxAttempts };

  return startService(
    def.service,
    cfg,
    opts,
    async (runtime): Promise<{ grpcAddress: string; addresses: Record<string, string> }> => {
      const { logger } = runtime;
      const kvm = new Kvm(runtime.nc);
      const cancellations = await Cancellations.open(runtime.nc, cfg.NATS_REPLICAS);
      // What was delivered: a redelivered or replayed dispatch is not sent again.
      const ledger: KV = await kvm.create("dispatch-ledger", {
        history: 1,
        replicas: cfg.NATS_REPLICAS,
        ttl: 7 * 86_400_000,
      });
      runtime.addReadinessCheck({ name: "dispatch-ledger", check: () => ledger.status().then(() => true) });

      const registry = runtime.metrics.registry;
      const ch = { channel: channel.name };
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
      }).set(ch, channel.freshnessSlo / 1000);
      const withinSlo = new Counter({
        name: "kairos_freshness_deliveries_total",
        help: "Delivered actions by whether they were within the channel's freshness objective.",
        labelNames: ["channel", "within_slo"],
        registers: [registry],
      });
      const attempts = new Counter({
        name: "kairos_dispatch_attempts_total",
        help: "Delivery attempts by result (delivered, retry, failed, expired, cancelled, duplicate) and reason.",
        labelNames: ["channel", "result", "reason"],
        registers: [registry],
      });
      const circuitGauge = new Gauge({
        name: "kairos_dispatch_circuit_open",
        help: "1 while the circuit to a destination is open (deliveries held back), else 0.",
        labelNames: ["channel", "destination"],
        registers: [registry],
      });
      const waited = new Counter({
        name: "kairos_dispatch_wait_seconds_total",
        help: "Time deliveries spent waiting for a rate limit or an open circuit.",
        labelNames: ["channel", "cause"],
        registers: [registry],
      });
      const batchSizes = new Histogram({
        name: "kairos_dispatch_batch_size",
        help: "Actions per batch delivery.",
        labelNames: ["channel"],
        buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
        registers: [registry],
      });
      runtime.metrics.stageObjective.set({ stage: "dispatch" }, channel.freshnessSlo / 1000);

      const counts = { delivered: 0n, failed: 0n, expired: 0n };
      let inFlight = 0;
      const http = new HttpClient(concurrency);
      runtime.lifecycle.add("connections", "http-connections", () => http.close());
      const stopping = new AbortController();
      // Every delivery waiting for a rate limit or a circuit listens for shutdown.
      setMaxListeners(0, stopping.signal);
      runtime.lifecycle.add("intake", "dispatcher-waits", () => stopping.abort());

      const live = new LiveRegistry();
      const host: DispatcherHost<S, DispatcherConfig<E>> = {
        runtime,
        settings,
        channel,
        mesh,
        config: cfg,
        http,
        clock,
        live,
        publishDeliveredToLive: true,
        grpcServices: [],
        addresses: {},
      };

      const limiter = channel.rateLimit === undefined ? undefined : new RateLimiter(channel.rateLimit);
      const breaker =
        channel.circuitBreaker === false
          ? undefined
          : new CircuitBreaker({
              failureThreshold: channel.circuitBreaker.failureThreshold,
              cooldownMs: channel.circuitBreaker.cooldown,
              maxCooldownMs: channel.circuitBreaker.maxCooldown,
            });
      const destinationKey = (a: Action) => def.destinationKey?.(a, settings) ?? channel.name;

      const publishOutcome = (
        a: Action,
        status: OutcomeStatus,
        reason: string,
        tries: number,
        atMs?: number,
      ) => {
        const d = a.dispatch;
        return runtime.publisher.publishMessage(
          subjects.outcomes(a.workspace, a.channel),
          OutcomeSchema,
          create(OutcomeSchema, {
            actionId: a.actionId,
            workspace: a.workspace,
            profileId: a.profileId,
            channel: a.channel,
            journey: a.journey,
            status,
            reason,
            attempts: tries,
            times: {
              eventReceivedAt: d.intent?.eventReceivedAt,
              intendedAt: d.intent?.intendedAt,
              decidedAt: d.decidedAt,
              dueAt: d.dueAt,
              ...(atMs === undefined ? {} : { deliveredAt: timestampFromMs(atMs) }),
            },
          }),
          { msgID: `${a.actionId}:${OutcomeStatus[status]}` },
        );
      };

      const deliveryContext = (span: Span): DeliveryContext<S> => {
        const traceHeaders: Record<string, string> = {};
        injectTraceContext(
          { get: (k) => traceHeaders[k], set: (k, v) => (traceHeaders[k] = v) },
          trace.setSpan(context.active(), span),
        );
        return { settings, channel, http, traceHeaders, span, logger, now: clock };
      };

      const guarded = async <T>(run: () => Promise<T>, onError: (e: unknown) => T): Promise<T> => {
        try {
          return await run();
        } catch (e) {
          return onError(e);
        }
      };

      // One call to the endpoint, in a CLIENT span.
      const callOne = (a: Action): Promise<DeliveryResult> => {
        const span = runtime.tracer.startSpan(`deliver ${channel.name}`, {
          kind: SpanKind.CLIENT,
          attributes: {
            "kairos.action_id": a.actionId,
            "kairos.channel": channel.name,
            "kairos.attempt": a.attempt,
          },
        });
        return guarded(
          () => def.deliver!(a, deliveryContext(span)),
          (e) => {
            recordSpanError(span, e);
            return classifyError(e);
          },
        ).finally(() => span.end());
      };

      const batcher =
        def.deliverBatch === undefined || channel.batch === undefined
          ? undefined
          : new Batcher<Action, DeliveryResult>(
              { maxSize: channel.batch.maxSize, maxWaitMs: channel.batch.maxWait },
              (batch) => {
                batchSizes.observe(ch, batch.length);
                const span = runtime.tracer.startSpan(`deliver ${channel.name} batch`, {
                  kind: SpanKind.CLIENT,
                  attributes: { "kairos.channel": channel.name, "kairos.batch_size": batch.length },
                });
                return guarded(
                  () => def.deliverBatch!(batch, deliveryContext(span)),
                  (e) => {
                    recordSpanError(span, e);
                    return batch.map(() => classifyError(e));
                  },
                ).finally(() => span.end());
              },
            );
      if (batcher !== undefined) runtime.lifecycle.add("work", "batches", () => batcher.drain());

      const expire = async (a: Action, reason: string) => {
        counts.expired++;
        attempts.inc({ ...ch, result: "expired", reason });
        await publishOutcome(a, OutcomeStatus.EXPIRED, reason, a.attempt - 1);
      };

      /** Waits for the destination's circuit and rate limit; false when the deadline passed meanwhile. */
      const admitted = async (a: Action, key: string): Promise<boolean> => {
        const beyondDeadline = (t: number) => a.notAfterMs !== undefined && t > a.notAfterMs;
        if (breaker !== undefined) {
          for (;;) {
            const admission = breaker.admit(key, clock());
            if (admission.allowed) break;
            if (beyondDeadline(clock() + admission.retryInMs)) return false;
            const t0 = performance.now();
            const slept = await sleep(admission.retryInMs, stopping.signal);
            waited.inc({ ...ch, cause: "circuit_open" }, (performance.now() - t0) / 1000);
            if (!slept) throw new RetryLater("shutting down while the circuit is open", 100);
          }
        }
        if (limiter !== undefined) {
          const wait = limiter.reserve(key, clock());
          if (wait > 0) {
            if (beyondDeadline(clock() + wait)) {
              limiter.refund(key);
              return false;
            }
            const t0 = performance.now();
            const slept = await sleep(wait, stopping.signal);
            waited.inc({ ...ch, cause: "rate_limit" }, (performance.now() - t0) / 1000);
            if (!slept) throw new RetryLater("shutting down while rate limited", 100);
          }
        }
        return true;
      };

      const handle = async (d: Dispatch, ctx: MessageContext) => {
        const a = actionOf(d, ctx.deliveryCount, ctx.raw);
        if (a === undefined) throw new PermanentError("dispatch without an intent or action id");
        const [seen, cancelled] = await Promise.all([
          ledger.get(a.actionId),
          cancellations.cancelling(
            a.workspace,
            a.profileId,
            [...a.cancelKeys, PROFILE_DELETED_KEY],
            a.intendedAtMs ?? 0,
          ),
        ]);
        if (seen !== null && seen.operation === "PUT" && seen.value.length > 0) {
          // Already delivered: re-publish its outcome (same id, stored once), send nothing.
          const e = JSON.parse(dec.decode(seen.value)) as LedgerEntry;
          attempts.inc({ ...ch, result: "duplicate", reason: "" });
          await publishOutcome(a, OutcomeStatus.DELIVERED, e.detail ?? "", e.attempts, e.atMs);
          return;
        }
        if (cancelled !== undefined) {
          // A deleted customer's actions are withdrawn like cancelled ones, under their own reason.
          const reason = cancelled.key === PROFILE_DELETED_KEY ? "profile_deleted" : "cancelled";
          attempts.inc({ ...ch, result: "cancelled", reason });
          await publishOutcome(a, OutcomeStatus.CANCELLED, reason, a.attempt - 1);
          return;
        }
        if (a.notAfterMs !== undefined && clock() > a.notAfterMs) return expire(a, "expired");

        const key = destinationKey(a);
        if (!(await admitted(a, key))) return expire(a, "expired_waiting_for_destination");
        if (a.notAfterMs !== undefined && clock() > a.notAfterMs) return expire(a, "expired");

        inFlight++;
        let result: DeliveryResult;
        try {
          result = batcher === undefined ? await callOne(a) : await batcher.add(a);
        } finally {
          inFlight--;
        }
        const now = clock();
        if (breaker !== undefined) {
          if (result.kind === "retry") {
            if (breaker.failure(key, now)) {
              circuitGauge.set({ ...ch, destination: key }, 1);
              logger.warn({ destination: key, reason: result.reason }, "circuit opened");
            }
          } else {
            if (breaker.state(key, now) !== "closed") logger.info({ destination: key }, "circuit closed");
            breaker.success(key);
            circuitGauge.set({ ...ch, destination: key }, 0);
          }
        }

        if (result.kind === "retry") {
          if (a.attempt < spec.maxDeliver) {
            const delay = result.retryAfterMs ?? backoffDelay(defaultBackoff, a.attempt, () => 0);
            if (a.notAfterMs !== undefined && now + delay > a.notAfterMs) {
              // The next try would come after the deadline: it can only expire.
              return expire(a, `expired_after_${result.reason}`);
            }
            attempts.inc({ ...ch, result: "retry", reason: result.reason });
            // Counted in kairos_dispatch_attempts_total; logged at debug only (a dead endpoint opens the circuit, which is logged).
            throw new RetryLater(
              `delivery to ${channel.name} failed (${result.reason}); will retry`,
              result.retryAfterMs ?? backoffDelay(defaultBackoff, a.attempt),
            );
          }
          counts.failed++;
          attempts.inc({ ...ch, result: "failed", reason: result.reason });
          await publishOutcome(a, OutcomeStatus.FAILED, result.reason, a.attempt);
          // The last allowed attempt: dead-lettered with its reason (replayable).
          throw new Error(`delivery to ${channel.name} failed ${a.attempt} times (${result.reason})`);
        }
        if (result.kind === "expire") return expire(a, result.reason);
        if (result.kind === "fail") {
          counts.failed++;
          attempts.inc({ ...ch, result: "failed", reason: result.reason });
          await publishOutcome(a, OutcomeStatus.FAILED, result.reason, a.attempt);
          throw new PermanentError(`delivery to ${channel.name} refused (${result.reason})`);
        }
        const entry: LedgerEntry = {
          status: "delivered",
          atMs: now,
          attempts: a.attempt,
          ...(result.detail === undefined ? {} : { detail: result.detail }),
        };
        // Before the ledger and the outcome: once either says DELIVERED, what the channel keeps
        // about the delivery is in place (a crash before the ledger redelivers and runs it again).
        if (def.afterDelivered !== undefined) await def.afterDelivered(a, result.detail, host);
        // Both before the ack; in parallel, as neither needs the other (a crash between them
        // redelivers: the ledger or the endpoint's idempotency key stops a second send).
        await Promise.all([
          ledger.put(a.actionId, enc.encode(JSON.stringify(entry))),
          publishOutcome(a, OutcomeStatus.DELIVERED, result.detail ?? "", a.attempt, now),
        ]);
        counts.delivered++;
        attempts.inc({ ...ch, result: "delivered", reason: "" });
        if (a.dueAtMs !== undefined) {
          const late = Math.max(0, now - a.dueAtMs);
          lateness.observe(ch, late / 1000);
          withinSlo.inc({ ...ch, within_slo: String(late <= channel.freshnessSlo) });
        }
        if (host.publishDeliveredToLive) live.publish(a);
      };

      await def.setup?.(host);

      await runtime.consume(spec, {
        stage: "dispatch",
        concurrency,
        decode: (b) => fromBinaryFast(DispatchSchema, b),
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
          subscribe: async function* (req, call) {
            if (req.workspace === "" || req.identifierType === "" || req.identifierValue === "") {
              throw new GrpcError(
                grpc.status.INVALID_ARGUMENT,
                "workspace, identifier_type and identifier_value are required",
              );
            }
            // Live only: actions delivered from now on to this identifier.
            const pushed = new EventEmitter();
            const off = live.subscribe(
              req.workspace,
              [{ type: req.identifierType, value: req.identifierValue }],
              (a) => pushed.emit("action", a),
            );
            try {
              for await (const [a] of on(pushed, "action", { signal: call.signal }) as AsyncIterable<
                [Action]
              >) {
                yield {
                  actionId: a.actionId,
                  journey: a.journey,
                  payload: a.payload,
                  ...(a.dispatch.dueAt === undefined ? {} : { dueAt: a.dispatch.dueAt }),
                };
              }
            } finally {
              off();
            }
          },
        }),
        ...host.grpcServices,
      ]);
      logger.info(
        { channel: channel.name, concurrency, batch: channel.batch, rateLimit: channel.rateLimit },
        "dispatching",
      );
      return { grpcAddress: grpcServer.address, addresses: host.addresses };
    },
  );
}
