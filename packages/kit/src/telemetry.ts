/**
 * OpenTelemetry tracing, configured by the standard OTEL_* variables.
 *
 * A tracer provider is always registered so that trace ids exist for logs and
 * W3C trace context propagates across NATS and gRPC; spans are exported only when
 * `OTEL_TRACES_EXPORTER` names an exporter (`otlp` or `console`). Off by default.
 */
import {
  context,
  propagation,
  trace,
  SpanStatusCode,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  NodeTracerProvider,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { AlwaysOffSampler } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";

export interface Telemetry {
  readonly tracer: Tracer;
  /** Flushes pending spans and stops the provider. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  service: string;
  /** Extra span processors, e.g. an in-memory exporter in tests. */
  spanProcessors?: SpanProcessor[];
  env?: NodeJS.ProcessEnv;
}

let active: NodeTracerProvider | undefined;

function exportersFrom(envs: NodeJS.ProcessEnv): SpanExporter[] {
  if (envs.OTEL_SDK_DISABLED === "true") return [];
  const names = (envs.OTEL_TRACES_EXPORTER ?? "none")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "" && s !== "none");
  return names.map((name) => {
    switch (name) {
      case "otlp":
        // Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT itself.
        return new OTLPTraceExporter();
      case "console":
        return new ConsoleSpanExporter();
      default:
        throw new Error(`OTEL_TRACES_EXPORTER=${name} is not supported (use otlp, console or none)`);
    }
  });
}

/**
 * Starts tracing for one service. Call it first in `main`, before connecting
 * anything, so every span of the process has the service's resource.
 */
export function startTelemetry(opts: TelemetryOptions): Telemetry {
  const envs = opts.env ?? process.env;
  const processors: SpanProcessor[] = [
    ...exportersFrom(envs).map((e) => new BatchSpanProcessor(e)),
    ...(opts.spanProcessors ?? []),
  ];
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: envs.OTEL_SERVICE_NAME ?? opts.service }),
    spanProcessors: processors,
    // Nothing would ever read a span: do not record them (a few % of a busy service's CPU).
    // Trace context is still created and propagated, so logs keep their trace ids.
    ...(processors.length === 0 ? { sampler: new AlwaysOffSampler() } : {}),
  });
  if (active === undefined) {
    provider.register({ propagator: new W3CTraceContextPropagator() });
    active = provider;
  }
  const tracer = provider.getTracer(`kairos.${opts.service}`);
  return {
    tracer,
    async shutdown() {
      await provider.shutdown();
      if (active === provider) {
        trace.disable();
        propagation.disable();
        context.disable();
        active = undefined;
      }
    },
  };
}

/** The tracer for a service; a no-op tracer when telemetry was not started. */
export function tracerFor(service: string): Tracer {
  return trace.getTracer(`kairos.${service}`);
}

/** A carrier that reads and writes trace headers: NATS headers or gRPC metadata. */
export interface HeaderCarrier {
  get(key: string): string | undefined;
  set(key: string, value: string): void;
}

const getter: TextMapGetter<HeaderCarrier> = {
  keys: () => ["traceparent", "tracestate"],
  get: (c, key) => c.get(key),
};
const setter: TextMapSetter<HeaderCarrier> = { set: (c, key, value) => c.set(key, value) };

/** Writes the W3C trace context of `ctx` into the carrier. */
export function injectTraceContext(carrier: HeaderCarrier, ctx: Context = context.active()): void {
  propagation.inject(ctx, carrier, setter);
}

/** Reads the W3C trace context from the carrier, as a parent context. */
export function extractTraceContext(carrier: HeaderCarrier, ctx: Context = context.active()): Context {
  return propagation.extract(ctx, carrier, getter);
}

/** The current span's `traceparent` value, or "" outside any span. */
export function currentTraceparent(): string {
  const out: Record<string, string> = {};
  propagation.inject(context.active(), out);
  return out.traceparent ?? "";
}

/** Marks a span failed the way every Kairos span does: exception, ERROR status, `error.type`. */
export function recordSpanError(span: Span, err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  span.recordException(e);
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
  span.setAttribute("error.type", e.name);
}
