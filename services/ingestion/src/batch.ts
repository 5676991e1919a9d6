/**
 * One request's worth of events, whichever door it came in by: parse or
 * validate each, keep the valid ones, name the invalid ones by index.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Event } from "@kairos/contracts";
import { fromSegmentJson, InvalidEvent, validateEvent, type CallType } from "./segment-spec.js";
import type { Rejected } from "./ingestor.js";

export interface Source {
  workspace: string;
  source: string;
}

export interface Sorted {
  valid: Event[];
  rejections: Rejected[];
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Sorts the JSON body of `/v1/<type>` or `/v1/batch`. A batch's top-level
 * `context` is merged under each event's own, and its `sentAt` applies to
 * events without one, as in Segment's batch endpoint. Throws `InvalidEvent`
 * when the body as a whole is unusable (not an object, no `batch` array).
 */
export function sortJsonBody(
  body: unknown,
  path: CallType | "batch",
  src: Source,
  receivedAtMs: number,
  newId: () => string,
): Sorted {
  if (!isObject(body)) throw new InvalidEvent("", "the request body must be a JSON object");
  const opts = { ...src, receivedAtMs, newId };
  if (path !== "batch") {
    const parsed = fromSegmentJson(body, { ...opts, expected: path });
    return parsed.ok
      ? { valid: [parsed.event], rejections: [] }
      : { valid: [], rejections: [{ index: 0, messageId: parsed.messageId, reason: parsed.reason }] };
  }
  const items = body.batch;
  if (!Array.isArray(items)) throw new InvalidEvent("batch", "must be an array of events");
  const sharedContext = isObject(body.context) ? body.context : undefined;
  const sentAt = typeof body.sentAt === "string" ? body.sentAt : undefined;
  const out: Sorted = { valid: [], rejections: [] };
  items.forEach((item, index) => {
    let raw = item;
    if (isObject(item)) {
      raw = { ...item };
      if (sharedContext !== undefined) {
        raw.context = isObject(item.context)
          ? { ...sharedContext, ...item.context }
          : (item.context ?? sharedContext);
      }
      if (sentAt !== undefined && raw.sentAt === undefined) raw.sentAt = sentAt;
    }
    const parsed = fromSegmentJson(raw, opts);
    if (parsed.ok) out.valid.push(parsed.event);
    else out.rejections.push({ index, messageId: parsed.messageId, reason: parsed.reason });
  });
  return out;
}

/**
 * Sorts events sent over gRPC. Ingestion owns `workspace`, `source` and
 * `received_at`: whatever the client put there is overwritten.
 */
export function sortProtoEvents(
  events: Event[],
  src: Source,
  receivedAtMs: number,
  newId: () => string,
  firstIndex = 0,
): Sorted {
  const out: Sorted = { valid: [], rejections: [] };
  events.forEach((e, i) => {
    e.workspace = src.workspace;
    e.source = src.source;
    e.receivedAt = timestampFromMs(receivedAtMs);
    const sentId = e.messageId;
    if (e.messageId === "") e.messageId = newId();
    try {
      validateEvent(e);
      out.valid.push(e);
    } catch (err) {
      if (!(err instanceof InvalidEvent)) throw err;
      out.rejections.push({ index: firstIndex + i, messageId: sentId, reason: err.message });
    }
  });
  return out;
}
