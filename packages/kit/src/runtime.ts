/**
 * The runtime every service's `main.ts` builds first: telemetry, logger, metrics,
 * ops port, NATS connection with the mesh topology, gRPC server, consumers and
 * graceful shutdown, wired once here so no service re-implements them.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { Tracer } from "@opentelemetry/api";
import type { SpanProcessor } from "@opentelemetry/sdk-trace-node";
import { env } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import { Metrics } from "./metrics.js";
import { startOpsServer, type OpsServer, type ReadinessCheck } from "./ops-server.js";
import { startTelemetry, type Telemetry } from "./telemetry.js";
import { Lifecycle } from "./lifecycle.js";
import { Publisher } from "./publisher.js";
import { ensureConsumer, ensureStreams, type ConsumerSpec } from "./topology.js";
import { startConsumer, type ConsumeOptions, type RunningConsumer } from "./consumer.js";
import { startGrpcServer, type GrpcServer, type ServiceRegistration } from "./grpc-server.js";

/** Variables of the runtime; services spread these into their own spec. */
export const runtimeConfig = {
  NATS_URL: env.string("nats://127.0.0.1:4222"),
  NATS_REPLICAS: env.int(1, { min: 1, max: 5 }),
  GRPC_HOST: env.string("127.0.0.1"),
  OPS_HOST: env.string("127.0.0.1"),
  LOG_LEVEL: env.oneOf(["trace", "debug", "info", "warn", "error", "fatal", "silent"], "info"),
  SHUTDOWN_TIMEOUT: env.duration(8000),
};

export interface RuntimeOptions {
  service: string;
  natsUrl: string;
  natsReplicas?: number;
  opsHost?: string;
  opsPort: number;
  logLevel?: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
  shutdownTimeoutMs?: number;
  /** Install SIGTERM/SIGINT handlers that exit the process (true for a real service). */
  handleSignals?: boolean;
  /** Extra span processors (tests use an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
}

/** A NATS connection as every service makes it (reconnecting for ever). */
function connectNats(servers: string, name: string): Promise<NatsConnection> {
  return connect({
    servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    // nats.js otherwise builds two Error objects (stack traces) per request to
    // decorate a possible failure: a quarter of a busy service's CPU.
    noAsyncTraces: process.env.KAIROS_NATS_ASYNC_TRACES !== "1",
  });
}

export class ServiceRuntime implements AsyncDisposable {
  readonly consumers: RunningConsumer[] = [];
  grpc: GrpcServer | undefined;
  private started = false;

  private constructor(
    readonly service: string,
    readonly logger: Logger,
    readonly metrics: Metrics,
    readonly telemetry: Telemetry,
    readonly ops: OpsServer,
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly publisher: Publisher,
    readonly lifecycle: Lifecycle,
    private readonly natsUrl: string,
  ) {}

  get tracer(): Tracer {
    return this.telemetry.tracer;
  }

  /**
   * A second NATS connection, for bulk traffic (replaying a large KV bucket) that must not queue
   * in front of the service's own requests on the main connection. Drained at shutdown.
   */
  async extraConnection(purpose: string): Promise<NatsConnection> {
    const nc = await connectNats(this.natsUrl, `kairos-${this.service}-${purpose}`);
    const closed = nc.closed();
    this.lifecycle.add("connections", `nats-${purpose}`, async () => {
      if (!nc.isClosed()) await nc.drain();
      await closed;
    });
    return nc;
  }

  /** Starts telemetry, the ops port and NATS, and declares the mesh's streams. */
  static async start(opts: RuntimeOptions): Promise<ServiceRuntime> {
    const telemetry = startTelemetry({ service: opts.service, spanProcessors: opts.spanProcessors ?? [] });
    const logger = createLogger({ service: opts.service, level: opts.logLevel ?? "info" });
    const metrics = new Metrics(opts.service);
    const lifecycle = new Lifecycle(logger, opts.shutdownTimeoutMs ?? 8000);
    lifecycle.add("telemetry", "telemetry", () => telemetry.shutdown());
    if (opts.handleSignals ?? false) lifecycle.handleSignals();

    const ops = await startOpsServer({
      host: opts.opsHost ?? "127.0.0.1",
      port: opts.opsPort,
      registry: metrics.registry,
    });
    lifecycle.add("intake", "ops-readiness", () => ops.setDraining());
    lifecycle.add("telemetry", "ops-server", () => ops.close());

    const nc = await connectNats(opts.natsUrl, `kairos-${opts.service}`);
    const closed = nc.closed();
    lifecycle.add("connections", "nats", async () => {
      if (!nc.isClosed()) await nc.drain();
      await closed;
    });
    ops.addCheck({ name: "nats", check: () => !nc.isClosed() && nc.rtt().then(() => true) });
    const jsm = await jetstreamManager(nc);
    await ensureStreams(jsm, { replicas: opts.natsReplicas ?? 1 });
    const js = jetstream(nc);
    const publisher = new Publisher(js, telemetry.tracer);
    lifecycle.add("connections", "publisher", () => publisher.flush());

    logger.info({ nats: opts.natsUrl, ops: ops.url }, "runtime started");
    const runtime = new ServiceRuntime(
      opts.service,
      logger,
      metrics,
      telemetry,
      ops,
      nc,
      js,
      jsm,
      publisher,
      lifecycle,
      opts.natsUrl,
    );
    // Not ready until the service says so: its stores, consumers and listeners are up.
    runtime.registerStartedCheck();
    return runtime;
  }

  /** Registers a readiness check shown on `/readyz`. */
  private registerStartedCheck(): void {
    this.ops.addCheck({ name: "started", check: () => this.started });
  }

  /** Registers a readiness check shown on `/readyz`. */
  addReadinessCheck(check: ReadinessCheck): void {
    this.ops.addCheck(check);
  }

  /** Declares the durable consumer and starts the consume loop; it is stopped on shutdown. */
  async consume<T>(
    spec: ConsumerSpec,
    opts: Pick<ConsumeOptions<T>, "stage" | "decode" | "handle" | "concurrency" | "backoff">,
  ): Promise<RunningConsumer> {
    await ensureConsumer(this.jsm, spec);
    const running = startConsumer({
      ...opts,
      spec,
      service: this.service,
      js: this.js,
      tracer: this.tracer,
      metrics: this.metrics,
      logger: this.logger,
    });
    this.consumers.push(running);
    this.ops.addCheck({ name: `consumer:${spec.durable}`, check: () => running.ready });
    this.lifecycle.add("work", `consumer:${spec.durable}`, () =>
      running.stop(this.lifecycle.timeoutMs - 1000),
    );
    this.watchLag(spec);
    return running;
  }

  private watchLag(spec: ConsumerSpec): void {
    const update = () => {
      this.jsm.consumers.info(spec.stream, spec.durable).then(
        (info) =>
          this.metrics.consumerPending.set({ stream: spec.stream, consumer: spec.durable }, info.num_pending),
        () => undefined,
      );
    };
    const timer = setInterval(update, 5000);
    timer.unref();
    this.lifecycle.add("intake", `lag:${spec.durable}`, () => clearInterval(timer));
  }

  /** Starts the gRPC server with health and reflection; services answer SERVING after `markReady()`. */
  async serveGrpc(host: string, port: number, registrations: ServiceRegistration[]): Promise<GrpcServer> {
    const grpc = await startGrpcServer({
      service: this.service,
      host,
      port,
      registrations,
      tracer: this.tracer,
      metrics: this.metrics,
      logger: this.logger,
    });
    this.grpc = grpc;
    this.lifecycle.add("intake", "grpc", async () => {
      grpc.setNotServing();
      await grpc.shutdown(Math.max(500, this.lifecycle.timeoutMs / 2));
    });
    this.logger.info({ grpc: grpc.address }, "gRPC listening");
    return grpc;
  }

  /** Marks the service SERVING on gRPC health, and ready on `/readyz`, once everything it needs answers. */
  markReady(): void {
    this.started = true;
    this.grpc?.setServing();
    this.logger.info("ready");
  }

  shutdown(reason = "shutdown"): Promise<boolean> {
    return this.lifecycle.shutdown(reason);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown("disposed");
  }
}
