/**
 * The action a delivery function sees: a plain view of a `Dispatch`, with times
 * in ms and the idempotency key the endpoint should be given.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Dispatch } from "@kairos/contracts";

export interface Destination {
  readonly type: string;
  readonly value: string;
}

export interface Action {
  readonly actionId: string;
  /** Send this to the endpoint as its idempotency key: the same action always carries the same key. */
  readonly idempotencyKey: string;
  readonly workspace: string;
  readonly profileId: string;
  readonly channel: string;
  readonly journey: string;
  readonly step: string;
  readonly purpose: string;
  readonly priority: number;
  /** What the journey asked for, rendered from profile fields. */
  readonly payload: JsonObject;
  /** The profile's identifiers (email address, phone, user id, anonymous ids, ...). */
  readonly destinations: readonly Destination[];
  /** Profile traits the channel may render. */
  readonly traits: JsonObject;
  readonly cancelKeys: readonly string[];
  /** When the action was due: lateness is measured against it. */
  readonly dueAtMs: number | undefined;
  /** Relevance deadline: never delivered after it. */
  readonly notAfterMs: number | undefined;
  readonly eventReceivedAtMs: number | undefined;
  readonly intendedAtMs: number | undefined;
  /** 1 on the first attempt. */
  readonly attempt: number;
  /** The message itself, and its bytes when it came off the stream (to pass on without re-encoding). */
  readonly dispatch: Dispatch;
  readonly bytes: Uint8Array | undefined;
}

const ms = (t: Timestamp | undefined) => (t === undefined ? undefined : timestampMs(t));

/** The action view of a dispatch; undefined when it has no intent or action id. */
export function actionOf(d: Dispatch, attempt: number, bytes?: Uint8Array): Action | undefined {
  const i = d.intent;
  if (i === undefined || i.actionId === "") return undefined;
  return {
    actionId: i.actionId,
    idempotencyKey: i.actionId,
    workspace: i.workspace,
    profileId: i.profileId,
    channel: i.channel,
    journey: i.journey,
    step: i.step,
    purpose: i.purpose,
    priority: i.priority,
    payload: i.payload ?? {},
    destinations: d.destinations.map((x) => ({ type: x.type, value: x.value })),
    traits: d.profileTraits ?? {},
    cancelKeys: i.cancelKeys,
    dueAtMs: ms(d.dueAt),
    notAfterMs: ms(i.notAfter),
    eventReceivedAtMs: ms(i.eventReceivedAt),
    intendedAtMs: ms(i.intendedAt),
    attempt,
    dispatch: d,
    bytes,
  };
}

/** The first destination of the given types, in the order given (e.g. `"email"`). */
export function destinationOf(a: Action, ...types: string[]): string | undefined {
  for (const t of types) {
    const d = a.destinations.find((x) => x.type === t);
    if (d !== undefined) return d.value;
  }
  return undefined;
}

/** ISO-8601 text of a time in ms, or null. */
export const iso = (t: number | undefined): string | null =>
  t === undefined ? null : new Date(t).toISOString();
