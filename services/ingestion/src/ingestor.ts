/**
 * Accepting events: each valid event is published to EVENTS with its message
 * id as Nats-Msg-Id, and the caller hears back only once JetStream has stored
 * every one of them. Shared by the HTTP and gRPC doors.
 */
import { EventSchema, type Event, toBinaryFast } from "@kairos/contracts";
import { partitionOf, subjects, type Publisher } from "@kairos/kit";
import { Counter, Histogram, type Registry } from "prom-client";
import { LATENCY_BUCKETS_S } from "@kairos/kit";

export interface Rejected {
  index: number;
  messageId: string;
  reason: string;
}

export interface AcceptResult {
  accepted: number;
  duplicates: number;
  rejections: Rejected[];
}

/** Thrown when JetStream did not store the events: the caller should retry (503). */
export class NotDurable extends Error {
  constructor(cause: unknown) {
    super(`events were not stored: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = "NotDurable";
  }
}

/** The key that keeps one customer's events on one partition, in order. */
export function partitionKey(e: Pick<Event, "userId" | "anonymousId">): string {
  return e.userId !== "" ? e.userId : e.anonymousId;
}

export class Ingestor {
  private readonly events: Counter<"workspace" | "source" | "result">;
  private readonly durable: Histogram<"door">;

  constructor(
    private readonly publisher: Publisher,
    private readonly partitions: number,
    registry: Registry,
  ) {
    this.events = new Counter({
      name: "kairos_ingest_events_total",
      help: "Events received, by result (accepted, duplicate, rejected).",
      labelNames: ["workspace", "source", "result"],
      registers: [registry],
    });
    this.durable = new Histogram({
      name: "kairos_ingest_accept_duration_seconds",
      help: "From a request's arrival to JetStream's ack of all its events, in seconds.",
      labelNames: ["door"],
      buckets: LATENCY_BUCKETS_S,
      registers: [registry],
    });
  }

  /** Records rejections found before publishing (parse and validation errors). */
  countRejected(workspace: string, source: string, n: number): void {
    if (n > 0) this.events.inc({ workspace, source, result: "rejected" }, n);
  }

  /**
   * Publishes the events and waits for every JetStream ack. Events of one
   * customer are published in order of the batch; the publisher's window keeps
   * many in flight. Throws `NotDurable` if any publish failed (the client
   * retries the whole request; message ids make the retry safe).
   */
  async accept(
    events: Event[],
    startedAtMs: number,
    door: "http" | "grpc",
  ): Promise<{ accepted: number; duplicates: number }> {
    if (events.length === 0) return { accepted: 0, duplicates: 0 };
    const results = await Promise.allSettled(
      events.map((e) =>
        this.publisher.publish(
          subjects.events(e.workspace, partitionOf(partitionKey(e), this.partitions)),
          toBinaryFast(EventSchema, e),
          { msgID: `${e.workspace}:${e.messageId}` },
        ),
      ),
    );
    let duplicates = 0;
    for (const r of results) {
      if (r.status === "rejected") throw new NotDurable(r.reason);
      if (r.value.duplicate) duplicates++;
    }
    this.durable.observe({ door }, (Date.now() - startedAtMs) / 1000);
    const first = events[0]!;
    this.events.inc(
      { workspace: first.workspace, source: first.source, result: "accepted" },
      events.length - duplicates,
    );
    if (duplicates > 0)
      this.events.inc({ workspace: first.workspace, source: first.source, result: "duplicate" }, duplicates);
    return { accepted: events.length - duplicates, duplicates };
  }
}
