/**
 * The stored profile and the pure rules that change it: which identifiers an
 * event carries, applying an event, merging two profiles. No I/O here.
 */
import { createHash } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { EventType, type Event } from "@kairos/contracts";
import { mergeComputed, subtractComputed, type ComputedState } from "./computed.js";

export interface Ident {
  /** A type of the workspace's identity rules, e.g. `user_id`, `email`, `phone`. */
  type: string;
  value: string;
}

/** How many applied event ids a profile remembers, to recognise redeliveries. */
export const APPLIED_MEMORY = 256;

/** An event a profile has applied, and the change it produced (profile id and version). */
export interface AppliedEvent {
  eventId: string;
  version: number;
  profileId?: string;
}

/** A merge into a profile, kept so that it can be split back apart (unmerge). */
export interface MergeRecord {
  /** The profile merged in (its tombstone keeps what it had then). */
  profileId: string;
  atMs: number;
  /** The event whose identifiers joined the two ("" when not known). */
  eventId: string;
  /** Why: the event's identifiers that led to the merged profile. */
  linkedBy?: Ident[];
  /** The identifiers the merge added to the survivor. */
  added: Ident[];
  /** Traits the merge took from the merged profile: the survivor's value (and its time) before. */
  replaced: Record<string, { value?: JsonValue; at?: number }>;
}

/** A profile as stored (JSON) in the profile store. */
export interface ProfileRecord {
  workspace: string;
  profileId: string;
  version: number;
  identifiers: Ident[];
  traits: JsonObject;
  /**
   * When each trait's current value was true: the event time of the event that set it
   * (its `timestamp`, else `received_at`). A later-arriving but older event does not overwrite.
   * Absent in records written before it existed: such values count as oldest.
   */
  traitTimes?: Record<string, number>;
  /** When each identifier (key: `identKey`) was added (for limits with a window). */
  identifierTimes?: Record<string, number>;
  /** Aggregates behind the workspace's computed traits (see computed.ts). */
  computed?: ComputedState;
  mergedFrom: string[];
  createdAtMs: number;
  updatedAtMs: number;
  /**
   * Recently applied events and the version each produced, newest last;
   * `profileId` is set when the event was applied to a profile merged into this one since.
   */
  applied: AppliedEvent[];
  /** Set when this profile was merged into another: lookups follow it. */
  mergedInto?: string;
  /**
   * Set on a stand-in (`standIn`): a profile never written, whose claims another writer took over;
   * created at its id so that its writer, stalled rather than dead, cannot create it any more.
   * Not a profile: lookups find nothing there.
   */
  neverWritten?: true;
  /**
   * Profiles a merge into this one is retiring: written before it retires them, each kept until
   * it is merged here (or brought back), so that an erasure finds them should the merge stop.
   */
  merging?: string[];
  /**
   * Set (when, in ms) by a deletion before it erases anything, compare-and-set as a new version:
   * a write that read the profile before fails, and the resolver waits rather than write to it.
   * The deletion is published under this version.
   */
  erasing?: number;
  /** Set on a profile an unmerge restored: the survivor it was split from (a stopped split resumes). */
  splitFrom?: string;
  /** With `splitFrom`: when it was split off, and the survivor's version after the split. */
  split?: { atMs: number; survivorVersion: number };
  /** Merges split back apart by an unmerge: a redelivery of the event that made one does not make it again. */
  unmerged?: { profileId: string; eventId: string }[];
  /** Merges into this profile still in force, oldest first (absent in records older than it). */
  merges?: MergeRecord[];
}

/** Email as identity compares it: trimmed, lower-cased. */
export function normalizeEmail(v: string): string {
  return v.trim().toLowerCase();
}

function objectOf(v: JsonValue | undefined): JsonObject | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? v : undefined;
}

/** The traits an event sets: identify traits, and `context.traits` on any call (as Segment SDKs send them). */
export function traitsOf(e: Event): JsonObject {
  const contextTraits = objectOf(e.context?.extra?.traits);
  const own = e.type === EventType.IDENTIFY ? (e.traits ?? {}) : {};
  return { ...(contextTraits ?? {}), ...own };
}

/**
 * A new profile's id, derived from its first identifier so a retried creation yields the same id
 * (`salt`, the event's id: when that id is already another customer's profile).
 */
export function profileIdFor(workspace: string, first: Ident, salt?: string): string {
  const key = `${workspace}|${first.type}|${first.value}${salt === undefined ? "" : `|${salt}`}`;
  const h = createHash("sha256").update(key).digest("hex");
  return `prof_${h.slice(0, 24)}`;
}

export function newProfile(workspace: string, profileId: string, nowMs: number): ProfileRecord {
  return {
    workspace,
    profileId,
    version: 0,
    identifiers: [],
    traits: {},
    traitTimes: {},
    mergedFrom: [],
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    applied: [],
  };
}

/** The change an event produced, if this profile (or one merged into it) already applied it. */
export function appliedChange(
  p: ProfileRecord,
  eventId: string,
): { profileId: string; version: number } | undefined {
  const a = p.applied.find((x) => x.eventId === eventId);
  return a === undefined ? undefined : { profileId: a.profileId ?? p.profileId, version: a.version };
}

/** The version an event produced on this profile, if it was already applied. */
export function appliedVersion(p: ProfileRecord, eventId: string): number | undefined {
  return appliedChange(p, eventId)?.version;
}

/**
 * The key of an identifier in `identifierTimes`: `<type>:<base64url value>`, safe as a field name
 * in every store (MongoDB refuses NUL bytes, and dots in older servers).
 */
export const identKey = (i: Ident) => `${i.type}:${Buffer.from(i.value).toString("base64url")}`;

function addIdentifiers(
  p: ProfileRecord,
  ids: readonly Ident[],
  atMs: (i: Ident) => number | undefined,
): void {
  for (const i of ids) {
    if (p.identifiers.some((x) => x.type === i.type && x.value === i.value)) continue;
    p.identifiers.push({ type: i.type, value: i.value });
    const at = atMs(i);
    if (at !== undefined) (p.identifierTimes ??= {})[identKey(i)] = at;
  }
}

/** The profile's identifiers with when each was added, where known. */
export function identifiersWithTimes(p: ProfileRecord): (Ident & { addedAtMs?: number })[] {
  return p.identifiers.map((i) => {
    const at = p.identifierTimes?.[identKey(i)];
    return at === undefined ? i : { ...i, addedAtMs: at };
  });
}

/**
 * Applies an event: new identifiers and traits, a new version. Returns the
 * traits whose value changed. `p` is modified in place.
 */
export function applyEvent(p: ProfileRecord, e: Event, ids: readonly Ident[], nowMs: number): JsonObject {
  addIdentifiers(p, ids, () => nowMs);
  const changed: JsonObject = {};
  const at = eventTimeMs(e, nowMs);
  const times = (p.traitTimes ??= {});
  for (const [k, v] of Object.entries(traitsOf(e))) {
    // Last writer wins by event time: a late, older event never overwrites a newer value.
    if ((times[k] ?? Number.NEGATIVE_INFINITY) > at) continue;
    times[k] = at;
    if (JSON.stringify(p.traits[k]) !== JSON.stringify(v)) {
      p.traits[k] = v;
      changed[k] = v;
    }
  }
  p.version += 1;
  p.updatedAtMs = nowMs;
  p.applied.push({ eventId: e.messageId, version: p.version });
  if (p.applied.length > APPLIED_MEMORY) p.applied.splice(0, p.applied.length - APPLIED_MEMORY);
  return changed;
}

/** When the event happened: the client's `timestamp`, else when ingestion received it, else now. */
export function eventTimeMs(e: Event, nowMs: number): number {
  if (e.timestamp !== undefined) return timestampMs(e.timestamp);
  if (e.receivedAt !== undefined) return timestampMs(e.receivedAt);
  return nowMs;
}

/** The survivor of a merge: the older profile (then the smaller id), so ids seen downstream stay stable. */
export function pickSurvivor(
  a: ProfileRecord,
  b: ProfileRecord,
): [survivor: ProfileRecord, loser: ProfileRecord] {
  if (a.createdAtMs !== b.createdAtMs) return a.createdAtMs < b.createdAtMs ? [a, b] : [b, a];
  return a.profileId < b.profileId ? [a, b] : [b, a];
}

/**
 * Folds `loser` into `survivor` (in place): identifiers join; a trait present
 * on both keeps the value set by the later event (ties and untimed values: the
 * profile updated last); the loser's applied
 * events are remembered so their redelivery is recognised. Idempotent.
 */
export function mergeInto(
  survivor: ProfileRecord,
  loser: ProfileRecord,
  meta: { atMs: number; eventId: string; linkedBy?: Ident[] } = { atMs: 0, eventId: "" },
): void {
  const recorded = survivor.merges?.some((m) => m.profileId === loser.profileId) ?? false;
  const record: MergeRecord = {
    profileId: loser.profileId,
    atMs: meta.atMs,
    eventId: meta.eventId,
    ...(meta.linkedBy === undefined
      ? {}
      : { linkedBy: meta.linkedBy.map((i) => ({ type: i.type, value: i.value })) }),
    added: loser.identifiers.filter((i) => !survivor.identifiers.some((x) => sameIdent(x, i))),
    replaced: {},
  };
  addIdentifiers(survivor, loser.identifiers, (i) => loser.identifierTimes?.[identKey(i)]);
  const loserNewer = loser.updatedAtMs > survivor.updatedAtMs;
  const sTimes = (survivor.traitTimes ??= {});
  const lTimes = loser.traitTimes ?? {};
  for (const [k, v] of Object.entries(loser.traits)) {
    const s = sTimes[k] ?? Number.NEGATIVE_INFINITY;
    const l = lTimes[k] ?? Number.NEGATIVE_INFINITY;
    if (!(k in survivor.traits) || l > s || (l === s && loserNewer)) {
      record.replaced[k] = {
        ...(k in survivor.traits ? { value: survivor.traits[k] } : {}),
        ...(sTimes[k] === undefined ? {} : { at: sTimes[k] }),
      };
      survivor.traits[k] = v;
      if (lTimes[k] !== undefined) sTimes[k] = lTimes[k];
    }
  }
  // Counts and sums add up once: merging the same profile again (a retry) must not count it twice.
  if (loser.computed !== undefined && !recorded) mergeComputed((survivor.computed ??= {}), loser.computed);
  for (const id of [loser.profileId, ...loser.mergedFrom]) {
    if (!survivor.mergedFrom.includes(id)) survivor.mergedFrom.push(id);
  }
  survivor.createdAtMs = Math.min(survivor.createdAtMs, loser.createdAtMs);
  // Applied on the loser: a redelivery is recognised, and re-publishes under the loser's change id.
  for (const a of loser.applied) {
    if (appliedVersion(survivor, a.eventId) === undefined) {
      survivor.applied.unshift({
        eventId: a.eventId,
        version: a.version,
        profileId: a.profileId ?? loser.profileId,
      });
    }
  }
  // Splits made on the loser stay made: a redelivery reaching them through the survivor too.
  for (const u of loser.unmerged ?? []) {
    const known = survivor.unmerged?.some((x) => x.profileId === u.profileId && x.eventId === u.eventId);
    if (known !== true) (survivor.unmerged ??= []).push(u);
  }
  if (survivor.applied.length > APPLIED_MEMORY)
    survivor.applied.splice(0, survivor.applied.length - APPLIED_MEMORY);
  if (!recorded) (survivor.merges ??= []).push(record);
}

/** Whether two identifiers are the same (type and value). */
export function sameIdent(a: Ident, b: Ident): boolean {
  return a.type === b.type && a.value === b.value;
}

/** The recorded merge that brought `id` (an identifier, or the merged profile's id) to the profile. */
export function mergeOf(
  p: ProfileRecord,
  id: Ident | { type: "profile_id"; value: string },
): MergeRecord | undefined {
  return p.merges?.find((m) =>
    id.type === "profile_id" ? m.profileId === id.value : m.added.some((x) => sameIdent(x, id)),
  );
}

/**
 * Splits a recorded merge back apart: the merged profile is restored from its tombstone (what
 * it had when merged), and the survivor gives back the identifiers that merge added, the traits
 * it took (unless set again since), and the merged profile's counts and sums. What happened
 * after the merge stays with the survivor: its later events, and minima, maxima, first and last
 * values, which cannot be taken apart. Pure; `restoredAlready` when the tombstone was revived by
 * an earlier, interrupted split.
 */
export function splitOff(
  survivor: ProfileRecord,
  merged: ProfileRecord,
  nowMs: number,
): { survivor: ProfileRecord; restored: ProfileRecord } {
  const m = survivor.merges?.find((x) => x.profileId === merged.profileId);
  if (m === undefined)
    throw new Error(`profile ${merged.profileId} is not merged into ${survivor.profileId}`);
  const s = structuredClone(survivor);
  s.identifiers = s.identifiers.filter((i) => !m.added.some((x) => sameIdent(x, i)));
  for (const i of m.added) delete s.identifierTimes?.[identKey(i)];
  const times = (s.traitTimes ??= {});
  for (const [k, before] of Object.entries(m.replaced)) {
    const unchanged =
      times[k] === merged.traitTimes?.[k] && JSON.stringify(s.traits[k]) === JSON.stringify(merged.traits[k]);
    if (!unchanged) continue;
    if (before.value === undefined) delete s.traits[k];
    else s.traits[k] = before.value;
    if (before.at === undefined) delete times[k];
    else times[k] = before.at;
  }
  if (s.computed !== undefined && merged.computed !== undefined)
    subtractComputed(s.computed, merged.computed);
  const gone = new Set([merged.profileId, ...merged.mergedFrom]);
  s.mergedFrom = s.mergedFrom.filter((id) => !gone.has(id));
  s.merges = (s.merges ?? []).filter((x) => x !== m && !gone.has(x.profileId));
  if (m.eventId !== "") s.unmerged = [...(s.unmerged ?? []), { profileId: m.profileId, eventId: m.eventId }];
  s.version += 1;
  s.updatedAtMs = nowMs;
  const restored = structuredClone(merged);
  if (restored.mergedInto !== undefined) {
    delete restored.mergedInto;
    restored.splitFrom = survivor.profileId;
    restored.split = { atMs: nowMs, survivorVersion: s.version };
    restored.version += 1;
    restored.updatedAtMs = nowMs;
  }
  return { survivor: s, restored };
}

/** The tombstone left where a merged profile was. */
export function tombstone(loser: ProfileRecord, survivorId: string, nowMs: number): ProfileRecord {
  return { ...loser, mergedInto: survivorId, updatedAtMs: nowMs };
}

/**
 * What takes the place of a profile whose writer claimed identifiers for it and was presumed dead
 * before writing it: created at its id by the writer taking the claims over, holding nothing and
 * leading nowhere, so that the first writer, should it only have stalled, fails to create the
 * profile and tries again. Lookups treat it as no profile.
 */
export function standIn(workspace: string, profileId: string, nowMs: number): ProfileRecord {
  return { ...newProfile(workspace, profileId, nowMs), neverWritten: true };
}
