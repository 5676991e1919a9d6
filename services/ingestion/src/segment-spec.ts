/**
 * The Segment tracking spec, turned into the mesh's `Event`.
 *
 * Two steps, both pure: `fromSegmentJson` maps one JSON call (as the Segment
 * and RudderStack SDKs send it) onto an `Event`, rejecting values of the wrong
 * shape; `validateEvent` then checks what every event must satisfy whatever
 * door it came in by (HTTP or gRPC). Each failure names the field and why.
 */
import { create, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, EventType, type Event, toBinaryFast } from "@kairos/contracts";

/** Segment's limit for one event, in bytes. */
export const MAX_EVENT_BYTES = 32 * 1024;
/** Segment's limit for one batch request, in bytes (after decompression). */
export const MAX_BATCH_BYTES = 500 * 1024;
/** Longest accepted message id and identifier. */
export const MAX_ID_LENGTH = 256;

/** The spec's call types, by the name used in JSON and in the `/v1/<type>` path. */
export const callTypes = {
  track: EventType.TRACK,
  identify: EventType.IDENTIFY,
  page: EventType.PAGE,
  screen: EventType.SCREEN,
  group: EventType.GROUP,
  alias: EventType.ALIAS,
} as const;

export type CallType = keyof typeof callTypes;

export function isCallType(s: string): s is CallType {
  return Object.hasOwn(callTypes, s);
}

/** The name of an `EventType`, as in the Segment spec. */
export function callTypeName(t: EventType): string {
  for (const [name, value] of Object.entries(callTypes)) if (value === t) return name;
  return "unspecified";
}

/** A reason an event was refused; `field` is the JSON path at fault. */
export class InvalidEvent extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(field === "" ? problem : `${field}: ${problem}`);
    this.name = "InvalidEvent";
  }
}

export type Parsed = { ok: true; event: Event } | { ok: false; reason: string; messageId: string };

const CONTEXT_FIELDS = new Set(["ip", "userAgent", "locale", "timezone", "campaign", "device"]);

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optionalObject(raw: JsonObject, field: string): JsonObject | undefined {
  const v = raw[field];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw new InvalidEvent(field, `must be an object, got ${describe(v)}`);
  return v;
}

/** Ids may be sent as numbers by some SDKs; they travel as strings. */
function optionalId(raw: JsonObject, field: string): string {
  const v = raw[field];
  if (v === undefined || v === null) return "";
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  if (typeof v !== "string") throw new InvalidEvent(field, `must be a string, got ${describe(v)}`);
  if (v.length > MAX_ID_LENGTH) throw new InvalidEvent(field, `longer than ${MAX_ID_LENGTH} characters`);
  return v;
}

function optionalString(obj: JsonObject, field: string, path: string): string {
  const v = obj[field];
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw new InvalidEvent(path, `must be a string, got ${describe(v)}`);
  return v;
}

function optionalTime(raw: JsonObject, field: string) {
  const v = raw[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string")
    throw new InvalidEvent(field, `must be an ISO-8601 date string, got ${describe(v)}`);
  const ms = Date.parse(v);
  if (Number.isNaN(ms)) throw new InvalidEvent(field, `is not an ISO-8601 date: ${JSON.stringify(v)}`);
  return timestampFromMs(ms);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}

function stringFields<K extends string>(obj: JsonObject | undefined, fields: readonly K[], path: string) {
  const out = {} as Record<K, string>;
  for (const f of fields) out[f] = obj === undefined ? "" : optionalString(obj, f, `${path}.${f}`);
  return out;
}

function contextOf(raw: JsonObject) {
  const ctx = optionalObject(raw, "context");
  if (ctx === undefined) return undefined;
  const extra: JsonObject = {};
  for (const [k, v] of Object.entries(ctx)) if (!CONTEXT_FIELDS.has(k)) extra[k] = v;
  const campaign = optionalObject(ctx, "campaign");
  const device = optionalObject(ctx, "device");
  return {
    ...stringFields(ctx, ["ip", "userAgent", "locale", "timezone"] as const, "context"),
    campaign:
      campaign && stringFields(campaign, ["name", "source", "medium", "term", "content"], "context.campaign"),
    device:
      device &&
      stringFields(device, ["id", "advertisingId", "manufacturer", "model", "type"], "context.device"),
    extra,
  };
}

/**
 * Maps one Segment JSON call onto an `Event`. `expected` is the call type the
 * path names (`/v1/track`); in a batch each item names its own `type`.
 */
export function fromSegmentJson(
  raw: unknown,
  opts: { expected?: CallType; workspace: string; source: string; receivedAtMs: number; newId: () => string },
): Parsed {
  let messageId = "";
  try {
    if (!isObject(raw)) throw new InvalidEvent("", `an event must be a JSON object, got ${describe(raw)}`);
    messageId = optionalId(raw, "messageId");
    const size = Buffer.byteLength(JSON.stringify(raw));
    if (size > MAX_EVENT_BYTES) {
      throw new InvalidEvent("", `event is ${size} bytes, over the ${MAX_EVENT_BYTES}-byte limit`);
    }
    const declared = raw.type;
    let type: CallType;
    if (declared === undefined || declared === null) {
      if (opts.expected === undefined) throw new InvalidEvent("type", "is required in a batch");
      type = opts.expected;
    } else if (typeof declared !== "string" || !isCallType(declared)) {
      throw new InvalidEvent(
        "type",
        `must be one of ${Object.keys(callTypes).join(", ")}, got ${describe(declared)}`,
      );
    } else if (opts.expected !== undefined && declared !== opts.expected) {
      throw new InvalidEvent("type", `is ${JSON.stringify(declared)} but was sent to /v1/${opts.expected}`);
    } else {
      type = declared;
    }
    const properties = optionalObject(raw, "properties");
    const traits = optionalObject(raw, "traits");
    const name =
      type === "track" ? optionalString(raw, "event", "event") : optionalString(raw, "name", "name");
    const context = contextOf(raw);
    const event = create(EventSchema, {
      messageId: messageId === "" ? opts.newId() : messageId,
      workspace: opts.workspace,
      source: opts.source,
      type: callTypes[type],
      name,
      userId: optionalId(raw, "userId"),
      anonymousId: optionalId(raw, "anonymousId"),
      previousId: optionalId(raw, "previousId"),
      groupId: optionalId(raw, "groupId"),
      ...(traits === undefined ? {} : { traits }),
      ...(properties === undefined ? {} : { properties }),
      ...(context === undefined ? {} : { context }),
      timestamp: optionalTime(raw, "timestamp") ?? optionalTime(raw, "originalTimestamp"),
      sentAt: optionalTime(raw, "sentAt"),
      receivedAt: timestampFromMs(opts.receivedAtMs),
    });
    validateEvent(event);
    return { ok: true, event };
  } catch (e) {
    if (e instanceof InvalidEvent) return { ok: false, reason: e.message, messageId };
    throw e;
  }
}

/**
 * The rules every event obeys, whichever door it came in by. Throws
 * `InvalidEvent` naming the first field at fault.
 */
export function validateEvent(event: Event): void {
  if (event.messageId === "") throw new InvalidEvent("messageId", "is required");
  if (event.messageId.length > MAX_ID_LENGTH) {
    throw new InvalidEvent("messageId", `longer than ${MAX_ID_LENGTH} characters`);
  }
  if (event.type === EventType.UNSPECIFIED) throw new InvalidEvent("type", "is required");
  if (event.userId === "" && event.anonymousId === "") {
    throw new InvalidEvent("userId", "either userId or anonymousId is required");
  }
  switch (event.type) {
    case EventType.TRACK:
      if (event.name.trim() === "") throw new InvalidEvent("event", "a track call needs an event name");
      break;
    case EventType.GROUP:
      if (event.groupId === "") throw new InvalidEvent("groupId", "a group call needs a groupId");
      break;
    case EventType.ALIAS:
      if (event.previousId === "") throw new InvalidEvent("previousId", "an alias call needs a previousId");
      if (event.userId === "") throw new InvalidEvent("userId", "an alias call needs a userId");
      break;
    default:
      break;
  }
  const size = toBinaryFast(EventSchema, event).byteLength;
  if (size > MAX_EVENT_BYTES) {
    throw new InvalidEvent("", `event is ${size} bytes encoded, over the ${MAX_EVENT_BYTES}-byte limit`);
  }
}

/** A JSON value as a plain object, when it is one. */
export function asObject(v: JsonValue | undefined): JsonObject | undefined {
  return isObject(v) ? v : undefined;
}
