/**
 * What every service's `start` and `main` share: the options a test or main
 * passes in, the handle it gets back, building the runtime from the service's
 * parsed config, and a `main` that turns configuration errors into exit 78.
 */
import type { SpanProcessor } from "@opentelemetry/sdk-trace-node";
import { ConfigError, loadConfigOrExit, type ConfigOf, type ConfigSpec } from "./config.js";
import type { runtimeConfig } from "./runtime.js";
import { ServiceRuntime } from "./runtime.js";

/** Options of every `start<Service>()`. */
export interface StartOptions {
  /** Extra span processors (tests use an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
  /** Install SIGTERM/SIGINT handlers that exit the process (true in `main`). */
  handleSignals?: boolean;
  /** The clock the service's domain logic reads, in ms since the epoch. */
  clock?: () => number;
}

/** What every `start<Service>()` resolves with. */
export interface ServiceHandle {
  runtime: ServiceRuntime;
  /** host:port of the service's gRPC server. */
  grpcAddress: string;
  /** Graceful shutdown; resolves true when every phase finished in time. */
  stop(): Promise<boolean>;
}

/** The runtime variables plus the ops port: what `startRuntime` needs from a service's config. */
export type RuntimeConfig = ConfigOf<typeof runtimeConfig> & { readonly OPS_PORT: number };

/** Starts the service's runtime from its parsed configuration. */
export function startRuntime(
  service: string,
  cfg: RuntimeConfig,
  opts: StartOptions = {},
): Promise<ServiceRuntime> {
  return ServiceRuntime.start({
    service,
    natsUrl: cfg.NATS_URL,
    natsReplicas: cfg.NATS_REPLICAS,
    opsHost: cfg.OPS_HOST,
    opsPort: cfg.OPS_PORT,
    logLevel: cfg.LOG_LEVEL,
    shutdownTimeoutMs: cfg.SHUTDOWN_TIMEOUT,
    handleSignals: opts.handleSignals ?? false,
    spanProcessors: opts.spanProcessors ?? [],
  });
}

/**
 * Runs `build(runtime)` on a fresh runtime and marks the service ready; if
 * building fails, the runtime is shut down before the error is rethrown.
 */
export async function startService<R extends { grpcAddress: string }>(
  service: string,
  cfg: RuntimeConfig,
  opts: StartOptions,
  build: (runtime: ServiceRuntime) => Promise<R>,
): Promise<ServiceHandle & R> {
  const runtime = await startRuntime(service, cfg, opts);
  try {
    const built = await build(runtime);
    runtime.markReady();
    return { ...built, runtime, stop: () => runtime.shutdown() };
  } catch (e) {
    await runtime.shutdown("failed to start");
    throw e;
  }
}

/** True for errors that mean "the configuration is wrong" (environment or mesh config file). */
export function isConfigurationError(e: unknown): e is Error {
  return e instanceof ConfigError || (e instanceof Error && e.name === "MeshConfigError");
}

/**
 * A service's `main`: parse the environment (exit 78 naming the variable),
 * start with signal handling, and exit 78 with the message when the mesh
 * config or a derived setting is wrong.
 */
export async function runMain<S extends ConfigSpec>(
  service: string,
  spec: S,
  start: (cfg: ConfigOf<S>, opts: StartOptions) => Promise<unknown>,
): Promise<void> {
  const cfg = loadConfigOrExit(spec, service);
  try {
    await start(cfg, { handleSignals: true });
  } catch (e) {
    if (!isConfigurationError(e)) throw e;
    process.stderr.write(`${JSON.stringify({ level: "fatal", service, msg: e.message })}\n`);
    process.exit(78);
  }
}
