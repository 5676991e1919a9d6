/** pino JSON logs carrying the active trace and span ids. */
import { trace } from "@opentelemetry/api";
import { pino, type Logger, type LevelWithSilent, type DestinationStream } from "pino";

export type { Logger } from "pino";

export interface LoggerOptions {
  service: string;
  level?: LevelWithSilent;
  destination?: DestinationStream;
}

/** A logger whose every line names the service and, inside a span, its trace_id and span_id. */
export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      level: opts.level ?? "info",
      base: { service: opts.service, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin() {
        const span = trace.getActiveSpan();
        if (span === undefined) return {};
        const sc = span.spanContext();
        return { trace_id: sc.traceId, span_id: sc.spanId };
      },
    },
    opts.destination,
  );
}
