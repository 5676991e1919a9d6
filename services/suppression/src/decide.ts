/**
 * The suppression decision, as a pure function of the facts: is the action
 * still relevant, may this customer be contacted on this channel for this
 * purpose, and is there room under the channel's daily cap today (in the
 * customer's time zone)? The first rule that says no gives the reason.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

export interface Facts {
  nowMs: number;
  channel: string;
  purpose: string;
  actionId: string;
  /** The intent's relevance deadline, if any. */
  notAfterMs: number | undefined;
  /** The profile's traits, or undefined when there is no such profile. */
  traits: JsonObject | undefined;
  /** Consent withdrawn for this channel (this purpose, or every purpose). */
  consentWithdrawn: boolean;
  /** The channel's per-profile daily cap; undefined means none. */
  dailyCap: number | undefined;
  /** Actions already counted against today's cap. */
  countedToday: readonly string[];
}

export type Verdict =
  | { kind: "dispatch"; countsAgainstCap: boolean }
  | { kind: "suppress"; reason: "unknown_profile" | "opted_out" | "consent_withdrawn" | "daily_cap" }
  | { kind: "expire"; reason: "expired" };

/** Purposes that caps do not limit: a receipt is not a marketing touch. */
const UNCAPPED_PURPOSES = new Set(["transactional"]);

/** The channels a profile opted out of, from its `opt_out` trait (a list, or one string). */
export function optOuts(traits: JsonObject | undefined): string[] {
  const v: JsonValue | undefined = traits?.opt_out;
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === "string");
  return [];
}

export function decide(f: Facts): Verdict {
  if (f.notAfterMs !== undefined && f.nowMs > f.notAfterMs) return { kind: "expire", reason: "expired" };
  if (f.traits === undefined) return { kind: "suppress", reason: "unknown_profile" };
  const out = optOuts(f.traits);
  if (out.includes(f.channel) || out.includes("all")) return { kind: "suppress", reason: "opted_out" };
  if (f.consentWithdrawn) return { kind: "suppress", reason: "consent_withdrawn" };
  if (f.dailyCap === undefined || UNCAPPED_PURPOSES.has(f.purpose))
    return { kind: "dispatch", countsAgainstCap: false };
  // An action counted before (a redelivery) keeps its slot; it does not take a second one.
  if (f.countedToday.includes(f.actionId)) return { kind: "dispatch", countsAgainstCap: false };
  if (f.countedToday.length >= f.dailyCap) return { kind: "suppress", reason: "daily_cap" };
  return { kind: "dispatch", countsAgainstCap: true };
}

/** Whether `tz` is an IANA time zone this runtime knows. */
export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-CA", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** The customer's time zone: the `timezone` trait when valid, else the workspace's. */
export function timeZoneOf(traits: JsonObject | undefined, workspaceTz: string): string {
  const tz = traits?.timezone;
  return typeof tz === "string" && tz !== "" && isTimeZone(tz) ? tz : workspaceTz;
}

const dayFormats = new Map<string, Intl.DateTimeFormat>();

/** The calendar day (`YYYY-MM-DD`) at `ms` in time zone `tz`. */
export function localDay(ms: number, tz: string): string {
  let f = dayFormats.get(tz);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" });
    dayFormats.set(tz, f);
  }
  return f.format(ms);
}
