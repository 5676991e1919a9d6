/** What a webhook delivery sends: the action as JSON. Pure. */
import type { JsonObject } from "@bufbuild/protobuf";
import { iso, type Action } from "@kairos/dispatcher-sdk";

/** The JSON a channel endpoint receives. */
export function requestBody(a: Action): JsonObject {
  return {
    action_id: a.actionId,
    workspace: a.workspace,
    profile_id: a.profileId,
    channel: a.channel,
    journey: a.journey,
    purpose: a.purpose,
    priority: a.priority,
    payload: a.payload,
    destinations: a.destinations.map((x) => ({ type: x.type, value: x.value })),
    traits: a.traits,
    due_at: iso(a.dueAtMs),
    not_after: iso(a.notAfterMs),
    event_received_at: iso(a.eventReceivedAtMs),
  };
}
