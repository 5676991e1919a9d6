/**
 * The JetStream consume loop every service uses: durable pull consumer, bounded
 * concurrency, explicit ack, `nak` with exponential backoff on transient errors,
 * dead letter (with error, subject, headers and original bytes) on permanent
 * errors or after the last delivery, one CONSUMER span and one stage-latency
 * observation per message.
 */
import type { JetStreamClient, JsMsg, ConsumerMessages } from "@nats-io/jetstream";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { context, ROOT_CONTEXT, SpanKind, trace, type Span, type Tracer } from "@opentelemetry/api";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DeadLetterSchema, toBinaryFast } from "@kairos/contracts";
import { Semaphore } from "./semaphore.js";
import { extractTraceContext, recordSpanError } from "./telemetry.js";
import { natsHeaderCarrier } from "./publisher.js";
import { subjects, type ConsumerSpec } from "./topology.js";
import type { Metrics } from "./metrics.js";
import type { Logger } from "./logger.js";

/** Thrown (or wrapped) by a handler when the input can never succeed: no retry, straight to the DLQ. */
export class PermanentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PermanentError";
  }
}

/**
 * Thrown by a handler that knows when to try again (a `Retry-After`, a circuit
 * that opens at a known time): the message is redelivered after `delayMs`
 * instead of the backoff's delay. It still counts as a delivery.
 */
export class RetryLater extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
    this.name = "RetryLater";
  }
}

/** What a handler knows about the message besides its decoded body. */
export interface MessageContext {
  readonly subject: string;
  readonly headers: MsgHdrs | undefined;
  /** 1 on first delivery. */
  readonly deliveryCount: number;
  readonly streamSequence: number;
  /** When JetStream stored the message, in ms since the epoch. */
  readonly storedAtMs: number;
  readonly span: Span;
  readonly raw: Uint8Array;
}

/** Exponential backoff for `nak`: initial * factor^(n-1), capped, with ±20% jitter. */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
}

const RELEASE_DELAY_MS = 100;

export const defaultBackoff: Backoff = { initialMs: 250, maxMs: 30_000, factor: 2 };

/** The delay before redelivery after the `deliveryCount`-th delivery failed. */
export function backoffDelay(b: Backoff, deliveryCount: number, random: () => number = Math.random): number {
  const base = Math.min(b.maxMs, b.initialMs * b.factor ** Math.max(0, deliveryCount - 1));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export interface ConsumeOptions<T> {
  service: string;
  /** Stage name for the latency histogram, e.g. "resolve". */
  stage: string;
  spec: ConsumerSpec;
  js: JetStreamClient;
  tracer: Tracer;
  metrics: Metrics;
  logger: Logger;
  /** Decodes the payload; a throw is a permanent error. */
  decode: (data: Uint8Array) => T;
  handle: (message: T, ctx: MessageContext) => Promise<void>;
  concurrency?: number;
  backoff?: Backoff;
}

export interface RunningConsumer {
  /** True once the durable consumer was found and messages are being pulled. */
  readonly ready: boolean;
  /** Stops pulling, releases buffered messages, waits for in-flight ones up to `graceMs`. */
  stop(graceMs: number): Promise<void>;
}

function headersToRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const k of h.keys()) out[k] = h.get(k);
  return out;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Starts consuming; the loop restarts `consume()` if it ends while not stopping. */
export function startConsumer<T>(opts: ConsumeOptions<T>): RunningConsumer {
  const concurrency = opts.concurrency ?? 64;
  const backoff = opts.backoff ?? defaultBackoff;
  const slots = new Semaphore(concurrency);
  const { spec, metrics, logger } = opts;
  const labels = { stream: spec.stream, consumer: spec.durable };
  let stopping = false;
  let ready = false;
  let iter: ConsumerMessages | undefined;

  const deadLetter = async (m: JsMsg, reason: string, error: string): Promise<void> => {
    const dl = create(DeadLetterSchema, {
      data: m.data,
      subject: m.subject,
      headers: headersToRecord(m.headers),
      service: opts.service,
      error,
      reason,
      deliveryCount: m.info.deliveryCount,
      stream: m.info.stream,
      streamSequence: BigInt(m.info.streamSequence),
      consumer: spec.durable,
      failedAt: timestampFromMs(Date.now()),
    });
    const h = natsHeaders();
    h.set("Kairos-Service", opts.service);
    h.set("Kairos-Dlq-Reason", reason);
    h.set("Kairos-Error", error.slice(0, 1000).replace(/[\r\n]+/g, " "));
    await opts.js.publish(subjects.dlq(opts.service), toBinaryFast(DeadLetterSchema, dl), {
      headers: h,
      msgID: `${m.info.stream}:${m.info.streamSequence}`,
    });
    metrics.deadLetters.inc({ reason });
    logger.warn({ subject: m.subject, seq: m.info.streamSequence, reason, error }, "message dead-lettered");
  };

  const handleOne = async (m: JsMsg): Promise<void> => {
    const started = performance.now();
    const parent = m.headers ? extractTraceContext(natsHeaderCarrier(m.headers), ROOT_CONTEXT) : ROOT_CONTEXT;
    const span = opts.tracer.startSpan(
      `${m.subject} process`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.system": "nats",
          "messaging.destination.name": m.subject,
          "messaging.consumer.group.name": spec.durable,
          [`kairos.${opts.service}.delivery_count`]: m.info.deliveryCount,
          [`kairos.${opts.service}.stream_sequence`]: m.info.streamSequence,
        },
      },
      parent,
    );
    // Keep the message ours while a slow handler runs.
    const keepAlive = setInterval(() => m.working(), Math.max(1000, spec.ackWaitMs / 2));
    let result: "ack" | "retry" | "dead" = "ack";
    try {
      await context.with(trace.setSpan(parent, span), async () => {
        if (m.info.deliveryCount > spec.maxDeliver) {
          // A previous last delivery never finished (its process died): give up now.
          result = "dead";
          await deadLetter(m, "max_deliveries", "delivery count exceeded before handling");
          m.term("max deliveries");
          return;
        }
        let decoded: T;
        try {
          decoded = opts.decode(m.data);
        } catch (e) {
          throw new PermanentError(`cannot decode payload: ${errorMessage(e)}`, { cause: e });
        }
        await opts.handle(decoded, {
          subject: m.subject,
          headers: m.headers,
          deliveryCount: m.info.deliveryCount,
          streamSequence: m.info.streamSequence,
          storedAtMs: Math.floor(m.info.timestampNanos / 1e6),
          span,
          raw: m.data,
        });
        m.ack();
      });
    } catch (e) {
      recordSpanError(span, e);
      const permanent = e instanceof PermanentError;
      if (permanent || m.info.deliveryCount >= spec.maxDeliver) {
        result = "dead";
        try {
          await deadLetter(m, permanent ? "permanent" : "max_deliveries", errorMessage(e));
          m.term(permanent ? "permanent error" : "max deliveries");
        } catch (dlqErr) {
          // Could not record the dead letter: keep the message and try again later.
          result = "retry";
          logger.error({ err: dlqErr, subject: m.subject }, "dead-letter publish failed; will retry");
          m.nak(backoffDelay(backoff, m.info.deliveryCount));
        }
      } else {
        result = "retry";
        const delay =
          e instanceof RetryLater
            ? Math.max(50, Math.round(e.delayMs))
            : backoffDelay(backoff, m.info.deliveryCount);
        // A planned retry (the handler chose when) is routine; anything else is worth a warning.
        (e instanceof RetryLater ? logger.debug.bind(logger) : logger.warn.bind(logger))(
          { err: e, subject: m.subject, delivery: m.info.deliveryCount, retryInMs: delay },
          "handler failed; will retry",
        );
        m.nak(delay);
      }
    } finally {
      clearInterval(keepAlive);
      metrics.stageDuration.observe({ stage: opts.stage, result }, (performance.now() - started) / 1000);
      metrics.messages.inc({ ...labels, result });
      span.setAttribute(`kairos.${opts.service}.result`, result);
      span.end();
    }
  };

  // Hands an unstarted message back for another replica. A short delay rather than
  // an immediate nak: nats-server 2.9 can redeliver the wrong message when several
  // immediate naks arrive back to back (seen in the lifecycle test).
  const release = (m: JsMsg) => {
    logger.debug({ seq: m.info.streamSequence }, "releasing unstarted message");
    m.nak(RELEASE_DELAY_MS);
  };

  const loop = async (): Promise<void> => {
    let attempt = 0;
    while (!stopping) {
      try {
        const c = await opts.js.consumers.get(spec.stream, spec.durable);
        iter = await c.consume({ max_messages: concurrency * 2 });
        ready = true;
        attempt = 0;
        for await (const m of iter) {
          logger.trace(
            { seq: m.info.streamSequence, cseq: m.info.deliverySequence, delivery: m.info.deliveryCount },
            "received",
          );
          if (stopping) {
            // Buffered but never started: hand it back at once for another replica.
            release(m);
            continue;
          }
          await slots.acquire();
          if (stopping) {
            slots.release();
            release(m);
            continue;
          }
          void handleOne(m).finally(() => slots.release());
        }
      } catch (e) {
        if (stopping) break;
        ready = false;
        attempt++;
        const delay = backoffDelay(defaultBackoff, attempt);
        logger.error({ err: e, consumer: spec.durable, retryInMs: delay }, "consume loop failed; restarting");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  };
  const done = loop();

  return {
    get ready() {
      return ready && !stopping;
    },
    async stop(graceMs) {
      stopping = true;
      await iter?.close().catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([done, slots.idle()]),
        new Promise((r) => {
          timer = setTimeout(r, graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (slots.inUse > 0) {
        logger.warn(
          { consumer: spec.durable, inFlight: slots.inUse },
          "shutdown grace ran out; unfinished messages will be redelivered",
        );
      }
    },
  };
}
