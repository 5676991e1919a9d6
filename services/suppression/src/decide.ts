/**
 * The suppression decision, as a pure function of the facts: is the action
 * still relevant, may this customer be contacted on this channel for this
 * purpose, and is there room under the channel's daily cap today (in the
 * customer's time zone)? The first rule that says no gives the reason.
 *
 * Nothing here knows NATS or gRPC: the service gathers the facts (profile,
 * consent records, today's cap ledger) and acts on the verdict.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Intent, Profile } from "@kairos/contracts";

/** What of an intent the decision reads (a `Check` call builds one without the rest). */
export type IntentFacts = Pick<Intent, "actionId" | "channel" | "purpose" | "notAfter">;

/** What of a profile the decision reads; `undefined` means identity has no such profile. */
export type ProfileFacts = Pick<Profile, "traits">;

/** One recorded consent of the profile for the intent's channel. */
export interface ConsentRecord {
  /** The purpose it covers; `""` covers every purpose. */
  purpose: string;
  granted: boolean;
  /** Where the customer said so, e.g. "preference-centre". */
  source: string;
}

/** The channel's daily cap and the ledger of one local day, as read from the store. */
export interface CapState {
  /** The channel's per-profile daily cap; undefined means none. */
  dailyCap: number | undefined;
  /** The local day (`YYYY-MM-DD`) the ledger below belongs to. */
  day: string;
  /** Action ids already counted on that day. */
  counted: readonly string[];
}

/** Machine-readable reasons of a suppression, as they appear in `Outcome.reason`. */
export type SuppressReason = "unknown_profile" | "opted_out" | "daily_cap";

export type Verdict =
  | {
      kind: "dispatch";
      /** Set when the action takes a slot in this day's ledger; absent when uncapped or already counted. */
      count?: { day: string };
    }
  | { kind: "suppress"; reason: SuppressReason; detail: string }
  | { kind: "expire"; reason: "expired"; detail: string };

/** The channels a profile opted out of, from its `opt_out` trait (a list, or one string). */
export function optOuts(traits: JsonObject | undefined): string[] {
  const v: JsonValue | undefined = traits?.opt_out;
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === "string");
  return [];
}

/**
 * The consent record that applies to `purpose`: a purpose-specific record wins
 * over the all-purposes one; undefined when the customer never said.
 */
export function applicableConsent(
  records: readonly ConsentRecord[],
  purpose: string,
): ConsentRecord | undefined {
  return (
    (purpose === "" ? undefined : records.find((r) => r.purpose === purpose)) ??
    records.find((r) => r.purpose === "")
  );
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
export function timeZoneOf(profile: ProfileFacts | undefined, workspaceTz: string): string {
  const tz = profile?.traits?.timezone;
  return typeof tz === "string" && tz !== "" && isTimeZone(tz) ? tz : workspaceTz;
}

const dayFormats = new Map<string, Intl.DateTimeFormat>();

/** The calendar day (`YYYY-MM-DD`) at `ms` in time zone `tz`. */
export function localDay(ms: number, tz: string): string {
  let f = dayFormats.get(tz);
  if (f === undefined) {
    // en-CA formats dates as YYYY-MM-DD.
    f = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" });
    dayFormats.set(tz, f);
  }
  return f.format(ms);
}

/** The day whose cap ledger an action decided at `nowMs` counts against. */
export function capDay(profile: ProfileFacts | undefined, nowMs: number, workspaceTz: string): string {
  return localDay(nowMs, timeZoneOf(profile, workspaceTz));
}

/**
 * Decides one intent.
 *
 * @param intent the action (its deadline, channel, purpose and id)
 * @param profile the customer, or undefined when identity has none
 * @param consent the customer's consent records for the intent's channel
 * @param cap the channel's cap and the ledger the caller read (normally of `capDay(profile, now, tz)`)
 * @param nowMs the decision time
 * @param workspaceTz the workspace's IANA time zone, used when the profile has none
 */
export function decide(
  intent: IntentFacts,
  profile: ProfileFacts | undefined,
  consent: readonly ConsentRecord[],
  cap: CapState,
  nowMs: number,
  workspaceTz: string,
): Verdict {
  if (intent.notAfter !== undefined && nowMs > timestampMs(intent.notAfter)) {
    return {
      kind: "expire",
      reason: "expired",
      detail: `relevant until ${new Date(timestampMs(intent.notAfter)).toISOString()}`,
    };
  }
  if (profile === undefined)
    return { kind: "suppress", reason: "unknown_profile", detail: "no such profile" };
  const out = optOuts(profile.traits);
  if (out.includes(intent.channel) || out.includes("all")) {
    return { kind: "suppress", reason: "opted_out", detail: "opt_out trait" };
  }
  const c = applicableConsent(consent, intent.purpose);
  if (c !== undefined && !c.granted) {
    return {
      kind: "suppress",
      reason: "opted_out",
      detail: `consent withdrawn${c.purpose === "" ? "" : ` for ${c.purpose}`}${c.source === "" ? "" : ` (${c.source})`}`,
    };
  }
  if (cap.dailyCap === undefined) return { kind: "dispatch" };
  const today = capDay(profile, nowMs, workspaceTz);
  // A ledger of another local day (read across midnight) says nothing about today.
  const counted = cap.day === today ? cap.counted : [];
  // An action counted before (a redelivery) keeps its slot; it does not take a second one.
  if (intent.actionId !== "" && counted.includes(intent.actionId)) return { kind: "dispatch" };
  if (counted.length >= cap.dailyCap) {
    return {
      kind: "suppress",
      reason: "daily_cap",
      detail: `${counted.length} of ${cap.dailyCap} on ${today}`,
    };
  }
  return { kind: "dispatch", count: { day: today } };
}

/**
 * When a dispatched action is due, the reference of its lateness: an immediate
 * action (not_before no later than when it was intended) is due when the
 * customer acted, the event's arrival; a scheduled one at its not_before.
 */
export function dueAtOf(
  intent: Pick<Intent, "notBefore" | "intendedAt" | "eventReceivedAt">,
): Timestamp | undefined {
  const { notBefore, intendedAt, eventReceivedAt } = intent;
  if (notBefore === undefined) return eventReceivedAt ?? intendedAt;
  const reference = intendedAt ?? eventReceivedAt;
  const scheduled = reference === undefined || timestampMs(notBefore) > timestampMs(reference);
  return scheduled ? notBefore : (eventReceivedAt ?? notBefore);
}
