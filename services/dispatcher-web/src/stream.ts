/**
 * Server-Sent Events, pure parts: who a stream request subscribes as, and how
 * an action is framed on the wire.
 */
import { iso, type Action, type Destination } from "@kairos/dispatcher-sdk";

export type StreamRequest =
  { ok: true; workspace: string; identifiers: Destination[] } | { ok: false; status: number; error: string };

/**
 * Reads `writeKey` (the workspace's public browser key, as Segment's snippet
 * uses) and `anonymousId` / `userId` from the query.
 */
export function parseStreamRequest(
  query: URLSearchParams,
  workspaceOf: (writeKey: string) => string | undefined,
): StreamRequest {
  const writeKey = query.get("writeKey")?.trim() ?? "";
  if (writeKey === "") return { ok: false, status: 401, error: "writeKey is required" };
  const workspace = workspaceOf(writeKey);
  if (workspace === undefined)
    return { ok: false, status: 401, error: "writeKey is not a write key of any workspace" };
  const identifiers: Destination[] = [];
  const anonymousId = query.get("anonymousId")?.trim() ?? "";
  const userId = query.get("userId")?.trim() ?? "";
  if (anonymousId !== "") identifiers.push({ type: "anonymous_id", value: anonymousId });
  if (userId !== "") identifiers.push({ type: "user_id", value: userId });
  if (identifiers.length === 0) return { ok: false, status: 400, error: "anonymousId or userId is required" };
  for (const i of identifiers) {
    if (i.value.length > 256)
      return { ok: false, status: 400, error: `${i.type} is longer than 256 characters` };
  }
  return { ok: true, workspace, identifiers };
}

/** The JSON a subscriber receives for one action. */
export function liveBody(a: Action) {
  return {
    action_id: a.actionId,
    journey: a.journey,
    channel: a.channel,
    payload: a.payload,
    due_at: iso(a.dueAtMs),
    not_after: iso(a.notAfterMs),
  };
}

/** One SSE frame: the action id as event id (a reconnecting browser sends it back as Last-Event-ID). */
export function sseFrame(a: Action): string {
  return `id: ${a.actionId}\nevent: action\ndata: ${JSON.stringify(liveBody(a))}\n\n`;
}
