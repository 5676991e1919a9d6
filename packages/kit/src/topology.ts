/**
 * Every JetStream stream and durable consumer of the mesh (design §4), declared
 * in one place and created idempotently by whichever service starts first.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Subjects of the mesh. Tokens must not contain `.`, `*`, `>` or spaces. */
export const subjects = {
  events: (workspace: string, partition: number) => `kairos.events.${workspace}.${partition}`,
  profiles: (workspace: string, partition: number) => `kairos.profiles.${workspace}.${partition}`,
  intents: (workspace: string, channel: string) => `kairos.intents.${workspace}.${channel}`,
  dispatch: (workspace: string, channel: string) => `kairos.dispatch.${workspace}.${channel}`,
  outcomes: (workspace: string, channel: string) => `kairos.outcomes.${workspace}.${channel}`,
  segments: (workspace: string, segment: string) => `kairos.segments.${workspace}.${segment}`,
  cancels: (workspace: string) => `kairos.cancels.${workspace}`,
  dlq: (service: string) => `kairos.dlq.${service}`,
} as const;

/** True when `token` can be used as one subject token. */
export function isSubjectToken(token: string): boolean {
  return /^[A-Za-z0-9_-]+$/.test(token);
}

export type StreamName =
  "EVENTS" | "PROFILES" | "SEGMENTS" | "INTENTS" | "CANCELS" | "DISPATCH" | "OUTCOMES" | "DLQ";

/** Stream declarations; `replicas` is applied at creation. */
export const streams: Record<StreamName, Partial<StreamConfig> & { name: StreamName; subjects: string[] }> = {
  EVENTS: {
    name: "EVENTS",
    subjects: ["kairos.events.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(7 * DAY),
    // Nats-Msg-Id = workspace:message_id; a retried send within the window is stored once.
    duplicate_window: nanos(10 * 60_000),
  },
  PROFILES: {
    name: "PROFILES",
    subjects: ["kairos.profiles.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(DAY),
    duplicate_window: nanos(10 * 60_000),
  },
  SEGMENTS: {
    name: "SEGMENTS",
    subjects: ["kairos.segments.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(30 * DAY),
    duplicate_window: nanos(HOUR),
  },
  INTENTS: {
    name: "INTENTS",
    subjects: ["kairos.intents.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(7 * DAY),
    // Deterministic action ids: a replayed trigger yields the same id and is dropped here.
    duplicate_window: nanos(HOUR),
  },
  CANCELS: {
    name: "CANCELS",
    subjects: ["kairos.cancels.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(7 * DAY),
    // Deterministic cancellation ids: a replayed exit cancels once.
    duplicate_window: nanos(HOUR),
  },
  DISPATCH: {
    name: "DISPATCH",
    subjects: ["kairos.dispatch.>"],
    // Each channel's dispatcher owns its subjects: a slow channel never holds another back.
    retention: RetentionPolicy.Workqueue,
    max_age: nanos(7 * DAY),
    duplicate_window: nanos(HOUR),
  },
  OUTCOMES: {
    name: "OUTCOMES",
    subjects: ["kairos.outcomes.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(30 * DAY),
    duplicate_window: nanos(HOUR),
  },
  DLQ: {
    name: "DLQ",
    subjects: ["kairos.dlq.>"],
    retention: RetentionPolicy.Limits,
    max_age: nanos(30 * DAY),
    duplicate_window: nanos(10 * 60_000),
  },
};

/** A durable pull consumer declaration, with the kit's redelivery policy. */
export interface ConsumerSpec {
  stream: StreamName;
  durable: string;
  filterSubject?: string;
  /** Deliveries before a failing message is dead-lettered. */
  maxDeliver: number;
  ackWaitMs: number;
  maxAckPending: number;
}

// A short ack wait bounds how long the messages in flight in a crashed process stay
// unseen; handlers that run longer keep theirs with `working()` (see consumer.ts).
const defaults = { maxDeliver: 8, ackWaitMs: 5_000, maxAckPending: 4096 } as const;

/** A durable consumer with the kit's redelivery policy (for a service's own, beyond those below). */
export function durableConsumer(stream: StreamName, durable: string, filterSubject?: string): ConsumerSpec {
  return { stream, durable, ...(filterSubject === undefined ? {} : { filterSubject }), ...defaults };
}

/** The mesh's durable consumers. */
export const consumers = {
  identity: { stream: "EVENTS", durable: "identity", ...defaults },
  segmentation: { stream: "PROFILES", durable: "segmentation", ...defaults },
  suppression: { stream: "INTENTS", durable: "suppression", ...defaults },
  suppressionOutcomes: { stream: "OUTCOMES", durable: "suppression-outcomes", ...defaults },
  suppressionCancels: { stream: "CANCELS", durable: "suppression-cancels", ...defaults },
  /** One consumer per channel on the DISPATCH work queue. */
  dispatcher: (channel: string): ConsumerSpec =>
    durableConsumer("DISPATCH", `dispatcher-${channel}`, `kairos.dispatch.*.${channel}`),
} satisfies Record<string, ConsumerSpec | ((c: string) => ConsumerSpec)>;

function consumerConfig(spec: ConsumerSpec): Partial<ConsumerConfig> {
  return {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(spec.ackWaitMs),
    // Unlimited on the server: the kit dead-letters after spec.maxDeliver itself, so
    // a message whose last delivery dies with its process is still redelivered.
    max_deliver: -1,
    max_ack_pending: spec.maxAckPending,
    ...(spec.filterSubject === undefined ? {} : { filter_subject: spec.filterSubject }),
  };
}

async function exists(fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (e) {
    if (e instanceof Error && /not found/i.test(e.message)) return false;
    throw e;
  }
}

/** Creates every stream, or updates it to the declared config; safe to run from every replica. */
export async function ensureStreams(jsm: JetStreamManager, opts: { replicas?: number } = {}): Promise<void> {
  for (const s of Object.values(streams)) {
    const cfg = {
      ...s,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: opts.replicas ?? 1,
    };
    if (await exists(() => jsm.streams.info(s.name))) {
      await jsm.streams.update(s.name, cfg);
    } else {
      try {
        await jsm.streams.add(cfg);
      } catch (e) {
        // Another replica created it between our check and our add.
        if (!(e instanceof Error && /already in use|already exists/i.test(e.message))) throw e;
      }
    }
  }
}

/** Creates the durable consumer if missing, or updates its mutable settings. */
export async function ensureConsumer(jsm: JetStreamManager, spec: ConsumerSpec): Promise<void> {
  const cfg = consumerConfig(spec);
  if (await exists(() => jsm.consumers.info(spec.stream, spec.durable))) {
    await jsm.consumers.update(spec.stream, spec.durable, {
      ack_wait: cfg.ack_wait,
      max_deliver: cfg.max_deliver,
      max_ack_pending: cfg.max_ack_pending,
    });
  } else {
    await jsm.consumers.add(spec.stream, cfg);
  }
}

/** FNV-1a 32-bit: a stable hash so the same customer always lands on the same partition. */
export function fnv1a(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The partition of a key among `partitions`. */
export function partitionOf(key: string, partitions: number): number {
  return fnv1a(key) % partitions;
}
