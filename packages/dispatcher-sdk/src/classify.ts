/**
 * What a delivery's answer means: delivered, worth another try later, or failed
 * for good. Delivery functions return one of these; the SDK classifies a thrown
 * error as a transient failure.
 */
export type DeliveryResult =
  | { kind: "delivered"; detail?: string }
  | { kind: "retry"; reason: string; retryAfterMs?: number }
  | { kind: "fail"; reason: string }
  /** Not deliverable while it mattered, through no fault of the endpoint (no live subscriber): EXPIRED, no dead letter. */
  | { kind: "expire"; reason: string };

export const delivered = (detail?: string): DeliveryResult =>
  detail === undefined ? { kind: "delivered" } : { kind: "delivered", detail };
export const retry = (reason: string, retryAfterMs?: number): DeliveryResult =>
  retryAfterMs === undefined ? { kind: "retry", reason } : { kind: "retry", reason, retryAfterMs };
export const fail = (reason: string): DeliveryResult => ({ kind: "fail", reason });
export const expired = (reason: string): DeliveryResult => ({ kind: "expire", reason });

/** Statuses worth another attempt: the endpoint may answer differently later. */
const RETRYABLE = new Set([408, 425, 429]);

/** Classifies an HTTP status (and its `Retry-After`, in seconds or an HTTP date). */
export function classifyStatus(
  status: number,
  retryAfter?: string,
  nowMs: number = Date.now(),
): DeliveryResult {
  if (status >= 200 && status < 300) return delivered();
  if (RETRYABLE.has(status) || status >= 500) {
    return retry(`http_${status}`, parseRetryAfter(retryAfter, nowMs));
  }
  return fail(`http_${status}`);
}

/** `Retry-After` in ms from now, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** Classifies a failure to get any answer (refused, reset, timed out): always worth a retry. */
export function classifyError(e: unknown): DeliveryResult {
  const err = e as { name?: string; code?: string; cause?: { code?: string } } | null;
  if (err?.name === "TimeoutError" || err?.name === "AbortError") return retry("timeout");
  // node:http puts the system error code on the error, fetch on its cause.
  const code = err?.code ?? err?.cause?.code;
  return retry(code === undefined ? "network_error" : `network_${code.toLowerCase()}`);
}
