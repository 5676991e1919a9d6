/**
 * The suppression decision, as a pure function of the facts: may this action
 * reach this customer on this channel now, later, or never — and why.
 *
 * The rules, in the order they are applied (the first that says no gives the reason):
 *   1. cancelled    — a cancellation of one of its keys came after it was intended
 *   2. expired      — its relevance deadline (`not_after`) has passed
 *   3. unknown_profile
 *   4. suppression_list — an identifier of the profile is listed for the channel
 *   5. opted_out / no_consent — the opt_out trait, or the latest consent record
 *   6. not_preferred_channel — the customer's preferred channels exclude this one
 *   7. scheduled (defer) — its `not_before` is still ahead
 *   8. quiet_hours (defer, or expire when the deadline comes first)
 *   9. caps — per channel per local day / rolling week, across channels, and the
 *      customer's own weekly preference
 * Exempt purposes (transactional by default) skip 6, 8 and 9, and need only
 * consent for their own purpose.
 *
 * Nothing here knows NATS or gRPC: the service gathers the facts and acts on the verdict.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Intent, Profile } from "@kairos/contracts";
import type { ChannelConfig, SuppressionPolicy } from "@kairos/mesh-config";
import { customerTimeZone, localDay, windowEnd, type DailyWindow } from "@kairos/kit";

export { isTimeZone, localDay } from "@kairos/kit";

const WEEK = 7 * 86_400_000;

/** What of an intent the decision reads (a `Check` call builds one without the rest). */
export type IntentFacts = Pick<Intent, "actionId" | "channel" | "purpose" | "notAfter"> &
  Partial<Pick<Intent, "notBefore" | "intendedAt" | "cancelKeys" | "priority">>;

/** What of a profile the decision reads; `undefined` means identity has no such profile. */
export type ProfileFacts = Pick<Profile, "traits"> & Partial<Pick<Profile, "traitTimes" | "identifiers">>;

/** One consent statement: for a purpose (`""` = every purpose but the exempt ones), with its time. */
export interface ConsentRecord {
  purpose: string;
  granted: boolean;
  /** Where the customer said so, e.g. "preference-centre" or "trait consent_email". */
  source: string;
  atMs: number;
}

/** An action counted against the caps. */
export interface SentEntry {
  id: string;
  channel: string;
  atMs: number;
}

/** The customer's contact preferences. */
export interface Preferences {
  /** Channels they want to be contacted on; empty: any. */
  channels: string[];
  /** Non-exempt contacts per rolling week they accept; 0: no limit of their own. */
  maxPerWeek: number;
  source: string;
  atMs: number;
}

/**
 * Everything suppression keeps about one profile, in one record written by
 * compare-and-set, so a cap slot, a consent change and a cancellation never
 * race each other.
 */
export interface ContactState {
  /** `<channel>|<purpose>` → the latest statement recorded through the API. */
  consent: Record<string, ConsentRecord>;
  preferences?: Preferences;
  /**
   * Preference statements a merge replaced with the other profile's later one (remembered for an
   * unmerge, like `withdrawn`; not read by decisions).
   */
  replacedPreferences?: Preferences[];
  /**
   * After an unmerge, which cannot tell whose they were: every preference statement either customer
   * made by then, all of which apply (the channels each allows, the lowest weekly limit) until the
   * customer states their preferences again.
   */
  heldPreferences?: Preferences[];
  /** Actions counted against caps within the last 8 days. */
  sent: SentEntry[];
  /** Cancel key → when it was cancelled (kept 8 days). */
  cancelled: Record<string, { atMs: number; reason: string }>;
  /**
   * `<channel>|<purpose>` → the latest withdrawal recorded, even one a later grant replaced in
   * `consent`. Not read by decisions: an unmerge (`afterUnmerge`), which cannot tell whose statements
   * a merged record holds, keeps every withdrawal either customer made.
   */
  withdrawn?: Record<string, ConsentRecord>;
  /** Set on the record of a profile an unmerge split off that one, once split (`afterUnmerge`). */
  splitFrom?: string;
  /**
   * With `splitFrom`: that profile's version after the split (0: not known); a merge of the two at
   * that version or before is the one the split undid, and does not take this record again.
   */
  splitVersion?: number;
}

export const emptyContact = (): ContactState => ({ consent: {}, sent: [], cancelled: {} });

/** The preference statements that apply: the customer's, and those an unmerge held for both. */
export function preferencesOf(contact: ContactState): Preferences[] {
  return [
    ...(contact.preferences === undefined ? [] : [contact.preferences]),
    ...(contact.heldPreferences ?? []),
  ];
}

function lowestWeekly(prefs: readonly Preferences[]): number | undefined {
  const limits = prefs.map((p) => p.maxPerWeek).filter((n) => n > 0);
  return limits.length > 0 ? Math.min(...limits) : undefined;
}

/** A preference statement of the customer's own: it replaces whatever an unmerge held. */
export function withPreferences(contact: ContactState, p: Preferences): ContactState {
  if ((contact.preferences?.atMs ?? 0) > p.atMs) return contact;
  const { heldPreferences: _, ...rest } = contact;
  return { ...rest, preferences: p };
}

/** A suppression-list entry that applies to the profile on the channel. */
export interface ListedEntry {
  /** The identifier's type and value. */
  type: string;
  value: string;
  /** The channel, or `*` for every channel. */
  channel: string;
  reason: string;
}

/** The channel and workspace rules the decision applies. */
export interface Policy {
  workspaceTz: string;
  channel: Pick<ChannelConfig, "name" | "dailyCap" | "weeklyCap" | "quietHours" | "consent"> &
    Partial<Pick<ChannelConfig, "contact">>;
  workspace: Pick<SuppressionPolicy, "quietHours" | "dailyCap" | "weeklyCap" | "exemptPurposes">;
}

/** Machine-readable reasons, as they appear in `Outcome.reason`. */
export type SuppressReason =
  | "unknown_profile"
  | "suppression_list"
  | "opted_out"
  | "no_consent"
  | "not_preferred_channel"
  | "daily_cap"
  | "weekly_cap"
  | "workspace_daily_cap"
  | "workspace_weekly_cap"
  | "preferred_frequency";

export type Verdict =
  | {
      kind: "dispatch";
      /** True when the action takes a cap slot (it is not exempt, some cap applies, and it was not counted before). */
      count: boolean;
    }
  | { kind: "defer"; reason: "scheduled" | "quiet_hours"; untilMs: number; detail: string }
  | { kind: "suppress"; reason: SuppressReason; detail: string }
  | { kind: "expire"; reason: "expired" | "quiet_hours"; detail: string }
  | { kind: "cancel"; reason: "cancelled" | "profile_deleted"; detail: string };

/** The channels a profile opted out of, from its `opt_out` trait (a list, or one string). */
export function optOuts(traits: JsonObject | undefined): string[] {
  const v: JsonValue | undefined = traits?.opt_out;
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === "string");
  return [];
}

/** The customer's time zone: the `timezone` trait when valid, else the workspace's. */
export function timeZoneOf(profile: ProfileFacts | undefined, workspaceTz: string): string {
  return customerTimeZone(profile?.traits, workspaceTz);
}

/** The local day (`YYYY-MM-DD`) that caps count an action decided at `nowMs` against. */
export function capDay(profile: ProfileFacts | undefined, nowMs: number, workspaceTz: string): string {
  return localDay(nowMs, timeZoneOf(profile, workspaceTz));
}

const msOf = (t: Timestamp | undefined) => (t === undefined ? undefined : timestampMs(t));

/**
 * The consent statements of the profile for a channel: those recorded through
 * the API, and the trait `consent_<channel>` (`true`/`false` for every
 * purpose, or `{ "<purpose>": true|false }`), timed by when the trait was set.
 */
export function consentRecords(
  profile: ProfileFacts | undefined,
  contact: ContactState,
  channel: string,
): ConsentRecord[] {
  const out = Object.entries(contact.consent)
    .filter(([k]) => k.startsWith(`${channel}|`))
    .map(([, r]) => r);
  const key = `consent_${channel}`;
  const trait = profile?.traits?.[key];
  const atMs = msOf(profile?.traitTimes?.[key]) ?? 0;
  const source = `trait ${key}`;
  if (typeof trait === "boolean") out.push({ purpose: "", granted: trait, source, atMs });
  else if (trait !== null && typeof trait === "object" && !Array.isArray(trait)) {
    for (const [purpose, granted] of Object.entries(trait)) {
      if (typeof granted === "boolean") out.push({ purpose, granted, source, atMs });
    }
  }
  return out;
}

/**
 * The statement that decides `purpose`: the latest of those for the purpose
 * itself and (unless the purpose is exempt) those for every purpose.
 */
export function applicableConsent(
  records: readonly ConsentRecord[],
  purpose: string,
  exempt: boolean,
): ConsentRecord | undefined {
  let best: ConsentRecord | undefined;
  for (const r of records) {
    const applies = r.purpose === purpose || (r.purpose === "" && !exempt);
    // On a tie the more specific statement wins.
    if (applies && (best === undefined || r.atMs > best.atMs || (r.atMs === best.atMs && r.purpose !== "")))
      best = r;
  }
  return best;
}

/** The caps that apply to a non-exempt action on the channel, with the entries each counts. */
function capRules(policy: Policy, contact: ContactState, channel: string, nowMs: number, tz: string) {
  const today = localDay(nowMs, tz);
  const week = contact.sent.filter((e) => e.atMs > nowMs - WEEK);
  const todays = week.filter((e) => localDay(e.atMs, tz) === today);
  const onChannel = (list: SentEntry[]) => list.filter((e) => e.channel === channel);
  const rules: { reason: SuppressReason; limit: number | undefined; counted: SentEntry[]; what: string }[] = [
    { reason: "daily_cap", limit: policy.channel.dailyCap, counted: onChannel(todays), what: `on ${today}` },
    {
      reason: "weekly_cap",
      limit: policy.channel.weeklyCap,
      counted: onChannel(week),
      what: "in the last 7 days",
    },
    {
      reason: "workspace_daily_cap",
      limit: policy.workspace.dailyCap,
      counted: todays,
      what: `across channels on ${today}`,
    },
    {
      reason: "workspace_weekly_cap",
      limit: policy.workspace.weeklyCap,
      counted: week,
      what: "across channels in the last 7 days",
    },
    {
      reason: "preferred_frequency",
      limit: lowestWeekly(preferencesOf(contact)),
      counted: week,
      what: "in the last 7 days, as the customer asked",
    },
  ];
  return rules.filter((r) => r.limit !== undefined);
}

/**
 * Decides one action.
 *
 * @param intent the action
 * @param profile the customer, or undefined when identity has none
 * @param contact suppression's record of the customer (consent, preferences, counted sends, cancellations)
 * @param listed suppression-list entries that match the customer's identifiers on this channel
 * @param policy the channel's and workspace's rules
 * @param nowMs the decision time
 */
export function decide(
  intent: IntentFacts,
  profile: ProfileFacts | undefined,
  contact: ContactState,
  listed: readonly ListedEntry[],
  policy: Policy,
  nowMs: number,
): Verdict {
  const intendedMs = msOf(intent.intendedAt) ?? 0;
  for (const key of intent.cancelKeys ?? []) {
    const c = contact.cancelled[key];
    if (c !== undefined && c.atMs >= intendedMs) {
      return { kind: "cancel", reason: "cancelled", detail: `${key} cancelled (${c.reason})` };
    }
  }
  const notAfter = msOf(intent.notAfter);
  if (notAfter !== undefined && nowMs > notAfter) {
    return { kind: "expire", reason: "expired", detail: `relevant until ${iso(notAfter)}` };
  }
  if (profile === undefined)
    return { kind: "suppress", reason: "unknown_profile", detail: "no such profile" };
  const exempt = policy.workspace.exemptPurposes.includes(intent.purpose);
  // A channel that does not message the customer (ad audiences) needs consent, not caps or quiet hours.
  const messages = policy.channel.contact !== false;

  const list = listed.find((l) => !exempt || l.reason !== "unsubscribed");
  if (list !== undefined) {
    return {
      kind: "suppress",
      reason: "suppression_list",
      detail: `${list.type} ${list.reason}${list.channel === "*" ? " on every channel" : ""}`,
    };
  }

  const out = optOuts(profile.traits);
  if (!exempt && (out.includes(intent.channel) || out.includes("all"))) {
    return { kind: "suppress", reason: "opted_out", detail: "opt_out trait" };
  }
  const consent = applicableConsent(consentRecords(profile, contact, intent.channel), intent.purpose, exempt);
  if (consent !== undefined && !consent.granted) {
    return {
      kind: "suppress",
      reason: "opted_out",
      detail: `consent withdrawn${consent.purpose === "" ? "" : ` for ${consent.purpose}`}${consent.source === "" ? "" : ` (${consent.source})`}`,
    };
  }
  if (consent === undefined && policy.channel.consent === "opt-in") {
    return {
      kind: "suppress",
      reason: "no_consent",
      detail: `${intent.channel} needs opt-in consent for ${intent.purpose || "this purpose"}`,
    };
  }

  const prefs = preferencesOf(contact).find(
    (p) => p.channels.length > 0 && !p.channels.includes(intent.channel),
  );
  if (!exempt && messages && prefs !== undefined) {
    return {
      kind: "suppress",
      reason: "not_preferred_channel",
      detail: `prefers ${prefs.channels.join(", ")}`,
    };
  }

  const notBefore = msOf(intent.notBefore);
  if (notBefore !== undefined && notBefore > nowMs) {
    if (notAfter !== undefined && notAfter < notBefore) {
      return {
        kind: "expire",
        reason: "expired",
        detail: `relevant until ${iso(notAfter)}, due ${iso(notBefore)}`,
      };
    }
    return { kind: "defer", reason: "scheduled", untilMs: notBefore, detail: `due ${iso(notBefore)}` };
  }

  const tz = timeZoneOf(profile, policy.workspaceTz);
  if (!exempt && messages) {
    const quiet: DailyWindow | undefined =
      policy.channel.quietHours === false
        ? undefined
        : (policy.channel.quietHours ?? policy.workspace.quietHours);
    const end = quiet === undefined ? undefined : windowEnd(nowMs, tz, quiet);
    if (quiet !== undefined && end !== undefined) {
      const window = `${quiet.start}–${quiet.end} ${tz}`;
      if (notAfter !== undefined && notAfter < end) {
        return {
          kind: "expire",
          reason: "quiet_hours",
          detail: `quiet hours ${window} last past its deadline ${iso(notAfter)}`,
        };
      }
      return { kind: "defer", reason: "quiet_hours", untilMs: end, detail: `quiet hours ${window}` };
    }
  }

  if (exempt || !messages) return { kind: "dispatch", count: false };
  // An action counted before (a redelivery) keeps its slot; it does not take a second one.
  if (intent.actionId !== "" && contact.sent.some((e) => e.id === intent.actionId)) {
    return { kind: "dispatch", count: false };
  }
  const rules = capRules(policy, contact, intent.channel, nowMs, tz);
  for (const r of rules) {
    if (r.counted.length >= (r.limit ?? Infinity)) {
      return { kind: "suppress", reason: r.reason, detail: `${r.counted.length} of ${r.limit} ${r.what}` };
    }
  }
  return { kind: "dispatch", count: rules.length > 0 };
}

/** Records a counted send, dropping entries no cap can see any more (older than 8 days). */
export function withSent(contact: ContactState, entry: SentEntry): ContactState {
  const horizon = entry.atMs - WEEK - 86_400_000;
  return { ...contact, sent: [...contact.sent.filter((e) => e.atMs > horizon), entry] };
}

/** Records cancelled keys, dropping cancellations older than 8 days. */
export function withCancelled(
  contact: ContactState,
  keys: readonly string[],
  atMs: number,
  reason: string,
): ContactState {
  const horizon = atMs - WEEK - 86_400_000;
  const cancelled = Object.fromEntries(Object.entries(contact.cancelled).filter(([, c]) => c.atMs > horizon));
  for (const k of keys) {
    const prev = cancelled[k];
    if (prev === undefined || prev.atMs < atMs) cancelled[k] = { atMs, reason };
  }
  return { ...contact, cancelled };
}

/**
 * What a cancellation of `profileId`'s `keys` cancels for each profile merged into it: the same keys
 * with the merged-away profile's id in place of the survivor's. Keys name the profile their actions
 * were intended for (`journey:<journey>:<profile>`, `{{profile_id}}` in configured keys), and an
 * action intended before a merge keeps the merged-away id; a key without the id (`promo:spring`)
 * applies to every one of the customer's profiles as it is. The named profile comes first.
 */
export function cancellationTargets(
  profileId: string,
  keys: readonly string[],
  mergedFrom: readonly string[],
): { profileId: string; keys: string[] }[] {
  const targets = [{ profileId, keys: [...new Set(keys)] }];
  for (const id of new Set(mergedFrom)) {
    if (id === profileId || id === "" || profileId === "") continue;
    targets.push({ profileId: id, keys: [...new Set(keys.map((k) => k.replaceAll(profileId, id)))] });
  }
  return targets;
}

/** Records a consent statement made through the API; an older one than what is recorded changes nothing. */
export function withConsent(contact: ContactState, channel: string, r: ConsentRecord): ContactState {
  const key = `${channel}|${r.purpose}`;
  const prev = contact.consent[key];
  const out = withWithdrawal(contact, key, r);
  if (prev !== undefined && prev.atMs > r.atMs) return out;
  return { ...out, consent: { ...out.consent, [key]: r } };
}

/** `contact` remembering `r` under `withdrawn` when it is a withdrawal later than the one held. */
function withWithdrawal(contact: ContactState, key: string, r: ConsentRecord): ContactState {
  if (r.granted) return contact;
  const prev = contact.withdrawn?.[key];
  if (prev !== undefined && prev.atMs >= r.atMs) return contact;
  return { ...contact, withdrawn: { ...contact.withdrawn, [key]: r } };
}

/**
 * What the record had been told by `atMs`: statements (consent, withdrawals, preferences) made
 * later are left out; sends and cancellations are all kept (they only hold back).
 */
export function asOf(contact: ContactState, atMs: number): ContactState {
  const by = (rs: Record<string, ConsentRecord> | undefined) =>
    Object.fromEntries(Object.entries(rs ?? {}).filter(([, r]) => r.atMs <= atMs));
  const out: ContactState = { ...contact, consent: by(contact.consent) };
  if (contact.withdrawn !== undefined) out.withdrawn = by(contact.withdrawn);
  if (contact.preferences !== undefined && contact.preferences.atMs > atMs) delete out.preferences;
  for (const f of ["replacedPreferences", "heldPreferences"] as const) {
    const kept = contact[f]?.filter((p) => p.atMs <= atMs);
    if (kept === undefined || kept.length === 0) delete out[f];
    else out[f] = kept;
  }
  return out;
}

/**
 * A record as it stands after an unmerge at `atMs` split apart the customers it was merged from
 * (given to both profiles): which of them said what cannot be told, so every withdrawal either made
 * stands and no grant made by then does (a channel that needs consent waits for a new one; traits
 * still speak for their own profile). Sends stay counted and cancellations stay. What was said after
 * the unmerge is kept, so applying it again (a redelivery) changes nothing.
 */
export function afterUnmerge(contact: ContactState, atMs: number): ContactState {
  const withdrawn = { ...contact.withdrawn };
  for (const [key, r] of Object.entries(contact.consent)) {
    const prev = withdrawn[key];
    if (!r.granted && (prev === undefined || prev.atMs < r.atMs)) withdrawn[key] = r;
  }
  const consent: Record<string, ConsentRecord> = {};
  for (const key of new Set([...Object.keys(contact.consent), ...Object.keys(withdrawn)])) {
    const r = contact.consent[key];
    const w = withdrawn[key];
    if (r !== undefined && r.granted && r.atMs > atMs) consent[key] = r;
    else if (w !== undefined) consent[key] = w;
  }
  const out: ContactState = { ...contact, consent };
  if (Object.keys(withdrawn).length > 0) out.withdrawn = withdrawn;
  // Preferences stated after the unmerge are the customer's own; else every statement made by then holds.
  if (contact.preferences === undefined || contact.preferences.atMs <= atMs) {
    const held = latestPreferences(
      [...preferencesOf(contact), ...(contact.replacedPreferences ?? [])].filter((p) => p.atMs <= atMs),
    );
    delete out.preferences;
    delete out.replacedPreferences;
    if (held.length > 0) out.heldPreferences = held;
    else delete out.heldPreferences;
  }
  return out;
}

const preferenceKey = (p: Preferences) =>
  JSON.stringify([p.atMs, p.source, p.maxPerWeek, [...p.channels].sort()]);

/** At most this many preference statements are remembered for an unmerge: the latest. */
const REMEMBERED_PREFERENCES = 10;

/**
 * Each statement once, oldest first, the latest `REMEMBERED_PREFERENCES`: the same whatever order
 * they came in, so merging a record again changes nothing.
 */
function latestPreferences(prefs: readonly Preferences[]): Preferences[] {
  return uniquePreferences(prefs)
    .sort((a, b) => a.atMs - b.atMs || (preferenceKey(a) < preferenceKey(b) ? -1 : 1))
    .slice(-REMEMBERED_PREFERENCES);
}

function uniquePreferences(prefs: readonly Preferences[]): Preferences[] {
  const seen = new Set<string>();
  return prefs.filter((p) => {
    const k = preferenceKey(p);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * One customer's record from two profiles that identity merged: what either was told stands
 * (the later statement of consent and of preferences wins, so a withdrawal made on the merged-away
 * profile is not lost), and sends counted on either count against the survivor's caps. Idempotent:
 * merging the same record again changes nothing.
 */
export function mergeContacts(survivor: ContactState, merged: ContactState): ContactState {
  let out: ContactState = { ...survivor, consent: { ...survivor.consent } };
  for (const [key, r] of Object.entries(merged.consent)) {
    const prev = out.consent[key];
    if (prev === undefined || prev.atMs < r.atMs) out.consent[key] = r;
  }
  // A withdrawal the later statement replaces is still remembered (for an unmerge).
  for (const [key, r] of [
    ...Object.entries(survivor.consent),
    ...Object.entries(merged.consent),
    ...Object.entries(merged.withdrawn ?? {}),
  ])
    out = withWithdrawal(out, key, r);
  if (
    merged.preferences !== undefined &&
    (out.preferences === undefined || out.preferences.atMs < merged.preferences.atMs)
  )
    out.preferences = merged.preferences;
  // The statement not kept is remembered (for an unmerge), as are those either remembered; those
  // an earlier unmerge held stay held.
  const others = latestPreferences(
    [
      ...(survivor.preferences === undefined ? [] : [survivor.preferences]),
      ...(merged.preferences === undefined ? [] : [merged.preferences]),
      ...(survivor.replacedPreferences ?? []),
      ...(merged.replacedPreferences ?? []),
    ].filter((p) => out.preferences === undefined || preferenceKey(p) !== preferenceKey(out.preferences)),
  );
  if (others.length > 0) out.replacedPreferences = others;
  else delete out.replacedPreferences;
  const held = latestPreferences([...(survivor.heldPreferences ?? []), ...(merged.heldPreferences ?? [])]);
  if (held.length > 0) out.heldPreferences = held;
  else delete out.heldPreferences;
  const ids = new Set(out.sent.map((e) => e.id));
  out.sent = [...out.sent, ...merged.sent.filter((e) => !ids.has(e.id))].sort((a, b) => a.atMs - b.atMs);
  for (const [key, c] of Object.entries(merged.cancelled)) out = withCancelled(out, [key], c.atMs, c.reason);
  return out;
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

const iso = (ms: number) => new Date(ms).toISOString();
