/**
 * Windowed JetStream publishing: many publishes in flight, bounded, each
 * carrying the W3C trace context of a PRODUCER span in its headers.
 */
import { toBinaryFast } from "@kairos/contracts";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { context, SpanKind, trace, type Tracer } from "@opentelemetry/api";
import { type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Semaphore } from "./semaphore.js";
import { injectTraceContext, recordSpanError } from "./telemetry.js";

export interface PublishOptions {
  /** Nats-Msg-Id: JetStream stores a message with the same id once within the stream's window. */
  msgID?: string;
  headers?: Record<string, string>;
}

/** NATS headers as a trace-context carrier. */
export function natsHeaderCarrier(h: MsgHdrs) {
  return {
    get: (k: string) => (h.has(k) ? h.get(k) : undefined),
    set: (k: string, v: string) => h.set(k, v),
  };
}

export class Publisher {
  private readonly slots: Semaphore;
  private readonly pending = new Set<Promise<unknown>>();

  /** @param window maximum publishes awaiting their JetStream ack at once. */
  constructor(
    private readonly js: JetStreamClient,
    private readonly tracer: Tracer,
    window = 512,
  ) {
    this.slots = new Semaphore(window);
  }

  /** Publishes raw bytes; resolves with the ack once JetStream has stored the message. */
  async publish(subject: string, data: Uint8Array, opts: PublishOptions = {}): Promise<PubAck> {
    await this.slots.acquire();
    const span = this.tracer.startSpan(`${subject} publish`, {
      kind: SpanKind.PRODUCER,
      attributes: { "messaging.system": "nats", "messaging.destination.name": subject },
    });
    const h = natsHeaders();
    for (const [k, v] of Object.entries(opts.headers ?? {})) h.set(k, v);
    injectTraceContext(natsHeaderCarrier(h), trace.setSpan(context.active(), span));
    const p = this.js.publish(subject, data, {
      headers: h,
      ...(opts.msgID === undefined ? {} : { msgID: opts.msgID }),
    });
    this.pending.add(p);
    try {
      const ack = await p;
      if (ack.duplicate) span.setAttribute("kairos.publish.duplicate", true);
      return ack;
    } catch (e) {
      recordSpanError(span, e);
      throw e;
    } finally {
      this.pending.delete(p);
      span.end();
      this.slots.release();
    }
  }

  /** Publishes a protobuf message. */
  publishMessage<D extends DescMessage>(
    subject: string,
    schema: D,
    message: MessageShape<D>,
    opts?: PublishOptions,
  ): Promise<PubAck> {
    return this.publish(subject, toBinaryFast(schema, message), opts);
  }

  /** Publishes without waiting for a window slot's ack; errors go to `onError`. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Resolves when every publish started so far has settled. */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }
}
