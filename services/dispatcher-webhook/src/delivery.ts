/**
 * What a webhook delivery sends and what its answer means. Pure: the
 * request body of a dispatch, and the classification of a response or error
 * into delivered, retry later, or failed for good.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Dispatch } from "@kairos/contracts";

/** The JSON a channel endpoint receives. */
export function requestBody(d: Dispatch): JsonObject {
  const i = d.intent;
  const iso = (t: Parameters<typeof timestampMs>[0] | undefined) =>
    t === undefined ? null : new Date(timestampMs(t)).toISOString();
  return {
    action_id: i?.actionId ?? "",
    workspace: i?.workspace ?? "",
    profile_id: i?.profileId ?? "",
    channel: i?.channel ?? "",
    journey: i?.journey ?? "",
    purpose: i?.purpose ?? "",
    priority: i?.priority ?? 0,
    payload: i?.payload ?? {},
    destinations: d.destinations.map((x) => ({ type: x.type, value: x.value })),
    traits: d.profileTraits ?? {},
    due_at: iso(d.dueAt),
    not_after: iso(i?.notAfter),
    event_received_at: iso(i?.eventReceivedAt),
  };
}

export type Classified =
  { kind: "delivered" } | { kind: "retry"; reason: string } | { kind: "fail"; reason: string };

/** Statuses worth another attempt: the endpoint may answer differently later. */
const RETRYABLE = new Set([408, 425, 429, 500, 502, 503, 504]);

/** Classifies an HTTP status. */
export function classifyStatus(status: number): Classified {
  if (status >= 200 && status < 300) return { kind: "delivered" };
  if (RETRYABLE.has(status) || status >= 500) return { kind: "retry", reason: `http_${status}` };
  return { kind: "fail", reason: `http_${status}` };
}

/** Classifies a failure to get any answer (refused, reset, timed out): always worth a retry. */
export function classifyError(e: unknown): Classified {
  const err = e as { name?: string; code?: string; cause?: { code?: string } };
  if (err.name === "TimeoutError" || err.name === "AbortError") return { kind: "retry", reason: "timeout" };
  // node:http puts the system error code on the error, fetch on its cause.
  const code = err.code ?? err.cause?.code;
  return { kind: "retry", reason: code === undefined ? "network_error" : `network_${code.toLowerCase()}` };
}
