/**
 * What one profile change means for segments and journeys: the membership
 * transitions, and the journeys they (or the event itself) trigger. Pure.
 */
import { createHash } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { ProfileChanged } from "@kairos/contracts";
import type { JourneyConfig, WorkspaceConfig } from "@kairos/mesh-config";
import { customerTimeZone } from "@kairos/kit";
import { bindingsOf, compileCondition, type Condition } from "./conditions.js";
import { nextOccurrence, ruleOf, type DateRule, type Occurrence } from "./dates.js";
import { compileArms, horizonOf } from "./steps.js";

/** A workspace's segments and journeys, with their conditions compiled. */
export interface CompiledWorkspace {
  config: WorkspaceConfig;
  segments: { name: string; condition: Condition }[];
  eventJourneys: { journey: JourneyConfig; condition: Condition | undefined }[];
  /** Per journey, its exit rules with event conditions compiled. */
  exits: { journey: JourneyConfig; rules: CompiledExit[] }[];
  /** Per journey with branches, its arms' `when` conditions by path. */
  arms: Map<string, ReturnType<typeof compileArms>>;
}

type CompiledExit =
  | { kind: "event"; event: string; condition: Condition | undefined }
  | { kind: "segmentEntered" | "segmentExited"; segment: string };

export function compileWorkspace(ws: WorkspaceConfig): CompiledWorkspace {
  return {
    config: ws,
    segments: ws.segments.map((s) => ({ name: s.name, condition: compileCondition(s.condition) })),
    eventJourneys: ws.journeys
      .filter((j) => "event" in j.trigger)
      .map((j) => ({
        journey: j,
        condition:
          "event" in j.trigger && j.trigger.condition !== undefined
            ? compileCondition(j.trigger.condition)
            : undefined,
      })),
    arms: new Map(ws.journeys.filter((j) => j.branches !== undefined).map((j) => [j.name, compileArms(j)])),
    exits: ws.journeys
      .filter((j) => j.exit.length > 0)
      .map((j) => ({
        journey: j,
        rules: j.exit.map((x): CompiledExit => {
          if ("event" in x) {
            return {
              kind: "event",
              event: x.event,
              condition: x.condition === undefined ? undefined : compileCondition(x.condition),
            };
          }
          return "segmentEntered" in x
            ? { kind: "segmentEntered", segment: x.segmentEntered }
            : { kind: "segmentExited", segment: x.segmentExited };
        }),
      })),
  };
}

/** Stored membership of one profile. */
export interface MembershipState {
  /** Highest profile version evaluated. */
  version: number;
  /** Segment → since when (ms) the profile is a member. */
  members: Record<string, number>;
  /** "once" journeys already fired for this profile. */
  firedOnce: string[];
  /** Journeys with an exit rule that have an action pending for this profile → until when (ms). */
  inJourney?: Record<string, number>;
  /** `oncePer` journeys → when they last started for this profile (ms). */
  lastStarted?: Record<string, number>;
  /** Journeys with branches → when the profile last exited them (ms); their later steps stop. */
  exitedAt?: Record<string, number>;
  /** Date journeys → the occurrence their timer is set for (ms). */
  dates?: Record<string, number>;
  /** What the evaluation of `version` produced, re-published if its delivery is repeated. */
  last: Plan | undefined;
  /** On a survivor: per profile merged into it, the journeys that profile handed over. */
  handedFrom?: Record<string, string[]>;
  /** On a merged-away profile: the journeys it handed to its survivor; its removal does not exit them. */
  handedOver?: string[];
  /**
   * On a profile an unmerge split back off: from which profile, and that profile's version after
   * the split (a merge of it at that version or before is the one undone: not made again).
   */
  splitFrom?: { profileId: string; version: number };
}

export interface Transition {
  segment: string;
  entered: boolean;
  reason: string;
}

export interface Firing {
  journey: string;
  actionId: string;
  /** For a journey with branches: which start of it this is (its branch timers' and actions' ids). */
  instance?: string;
}

/** A journey the profile left: everything it has pending for them is cancelled. */
export interface Exit {
  journey: string;
  reason: string;
}

/** A date journey's timer to set (with its rule and first occurrence) or, without them, to remove. */
export interface Schedule {
  journey: string;
  rule?: DateRule;
  occurrence?: Occurrence;
}

export interface Plan {
  version: number;
  transitions: Transition[];
  firings: Firing[];
  exits?: Exit[];
  schedules?: Schedule[];
}

export interface Evaluation {
  plan: Plan;
  next: MembershipState;
  /** Conditions that could not be evaluated (missing field, type error). */
  errors: { segment: string; error: string }[];
}

export const emptyState = (): MembershipState => ({
  version: 0,
  members: {},
  firedOnce: [],
  last: undefined,
});

/**
 * Which of a merged-away profile's pending journeys go to its survivor in a merge (the survivor's
 * change at `mergeVersion`): each one it is in, unless the survivor is in it too and it is not
 * `reentry: every` (once per customer: the merged-away profile's is cancelled). None when the
 * survivor was already evaluated past the merge (its later change, a purchase perhaps, was decided
 * without them): they are cancelled with the merged-away profile, never sent after a purchase.
 * Asked again (a redelivery, a stop in between), the answer first given, kept on the survivor.
 */
export function journeysToHandOver(
  ws: CompiledWorkspace,
  survivor: MembershipState,
  merged: MembershipState,
  mergedId: string,
  mergeVersion: number,
): string[] {
  const given = survivor.handedFrom?.[mergedId];
  if (given !== undefined) return given;
  if (survivor.version > mergeVersion) return [];
  return Object.keys(merged.inJourney ?? {}).filter((name) => {
    if (survivor.inJourney?.[name] === undefined) return true;
    return ws.config.journeys.find((j) => j.name === name)?.reentry === "every";
  });
}

/**
 * The survivor with the journeys `handed` over by a merged-away profile (`journeysToHandOver`): the
 * customer is still in them (a reminder intended before the login still goes, and the survivor's
 * exit cancels it: suppression reaches the actions of the profiles merged into the one a
 * cancellation names), and what the merged-away profile started counts for the customer (`once`,
 * `oncePer`). Its exits stay its own (they stop its own branch steps only). Memberships, dates and
 * the version stay the survivor's: its own change re-evaluates them. Idempotent.
 */
export function withJourneysOf(
  survivor: MembershipState,
  merged: MembershipState,
  mergedId: string,
  handed: readonly string[],
): MembershipState {
  const later = (a: Record<string, number> | undefined, b: Record<string, number>) => {
    const out = { ...(a ?? {}) };
    for (const [k, v] of Object.entries(b)) out[k] = Math.max(out[k] ?? v, v);
    return out;
  };
  const inJourney = later(
    survivor.inJourney,
    Object.fromEntries(Object.entries(merged.inJourney ?? {}).filter(([name]) => handed.includes(name))),
  );
  const lastStarted = later(survivor.lastStarted, merged.lastStarted ?? {});
  const next: MembershipState = {
    ...survivor,
    firedOnce: [...new Set([...survivor.firedOnce, ...merged.firedOnce])],
    handedFrom: { ...survivor.handedFrom, [mergedId]: [...handed] },
  };
  if (Object.keys(inJourney).length > 0) next.inJourney = inJourney;
  if (Object.keys(lastStarted).length > 0) next.lastStarted = lastStarted;
  return next;
}

/** Whether a profile has journey state for a merge to hand to its survivor. */
export function hasJourneys(s: MembershipState): boolean {
  return (
    s.firedOnce.length > 0 ||
    Object.keys(s.inJourney ?? {}).length > 0 ||
    Object.keys(s.lastStarted ?? {}).length > 0
  );
}

/** Whether a merge into `survivor` at `mergeVersion` is one an unmerge of `merged` undid since. */
export function undoneMerge(merged: MembershipState, survivor: string, mergeVersion: number): boolean {
  return merged.splitFrom?.profileId === survivor && mergeVersion <= merged.splitFrom.version;
}

/**
 * A profile split back off its survivor (unmerge) starts afresh, but for its journeys: those still
 * pending for it (handed over or not, none was cancelled by the merge) and what it started.
 */
export function restoredState(s: MembershipState, nowMs: number): MembershipState {
  const next = emptyState();
  next.firedOnce = [...s.firedOnce];
  const inJourney = Object.fromEntries(
    Object.entries(s.inJourney ?? {}).filter(([, until]) => until > nowMs),
  );
  if (Object.keys(inJourney).length > 0) next.inJourney = inJourney;
  if (s.lastStarted !== undefined) next.lastStarted = { ...s.lastStarted };
  if (s.exitedAt !== undefined) next.exitedAt = { ...s.exitedAt };
  return next;
}

/** `act_` + 32 hex of sha256(ws|journey|profile[|trigger]): the same trigger always yields the same action. */
export function actionIdFor(ws: string, journey: string, profileId: string, trigger?: string): string {
  const key =
    trigger === undefined ? `${ws}|${journey}|${profileId}` : `${ws}|${journey}|${profileId}|${trigger}`;
  return `act_${createHash("sha256").update(key).digest("hex").slice(0, 32)}`;
}

/** Evaluates a change against the previous state. The caller ignores changes older than `state.version`. */
export function evaluate(
  ws: CompiledWorkspace,
  change: ProfileChanged,
  state: MembershipState,
  nowMs: number,
): Evaluation {
  const version = Number(change.version);
  const bindings = bindingsOf(change);
  const members = { ...state.members };
  const transitions: Transition[] = [];
  const errors: Evaluation["errors"] = [];
  // A change without an event, not a deletion, is identity re-publishing a profile whose
  // windowed computed traits slid: the segment changed because time passed.
  const because = change.eventId === "" && !change.deleted ? " (time passed: a computed window slid)" : "";
  for (const s of ws.segments) {
    let isMember = false;
    if (!change.deleted) {
      const v = s.condition(bindings);
      if (v.ok) isMember = v.value;
      else errors.push({ segment: s.name, error: v.error });
    }
    const was = members[s.name] !== undefined;
    if (isMember && !was) {
      members[s.name] = nowMs;
      transitions.push({ segment: s.name, entered: true, reason: `condition became true${because}` });
    } else if (!isMember && was) {
      delete members[s.name];
      transitions.push({
        segment: s.name,
        entered: false,
        reason: change.deleted ? "profile_deleted" : `condition became false${because}`,
      });
    }
  }
  // Journeys: segment triggers fire on transitions, event triggers on the event.
  const firedOnce = [...state.firedOnce];
  const lastStarted = { ...(state.lastStarted ?? {}) };
  const firings: Firing[] = [];
  const fire = (j: JourneyConfig, trigger: string) => {
    const branches = j.branches === undefined ? {} : { instance: j.reentry === "once" ? "once" : trigger };
    if (j.reentry === "once") {
      if (firedOnce.includes(j.name)) return;
      firedOnce.push(j.name);
      firings.push({
        journey: j.name,
        actionId: actionIdFor(change.workspace, j.name, change.profileId),
        ...branches,
      });
      return;
    }
    if (j.reentry !== "every") {
      const last = lastStarted[j.name];
      if (last !== undefined && nowMs - last < j.reentry.oncePer) return;
      lastStarted[j.name] = nowMs;
    }
    firings.push({
      journey: j.name,
      actionId: actionIdFor(change.workspace, j.name, change.profileId, trigger),
      ...branches,
    });
  };
  // Exits first: they end what was pending before this change; a trigger in the same change starts anew.
  const inJourney = Object.fromEntries(
    Object.entries(state.inJourney ?? {}).filter(([, until]) => until > nowMs),
  );
  const exits: Exit[] = [];
  const exitedAt = { ...(state.exitedAt ?? {}) };
  for (const { journey, rules } of ws.exits) {
    if (inJourney[journey.name] === undefined) continue;
    // Handed to the survivor in a merge: the customer is still in it there.
    if (change.deleted && state.handedOver?.includes(journey.name)) continue;
    for (const r of rules) {
      let reason: string | undefined;
      if (change.deleted) reason = "profile_deleted";
      else if (r.kind === "event" && change.eventName !== "" && r.event === change.eventName) {
        const v = r.condition === undefined ? { ok: true as const, value: true } : r.condition(bindings);
        if (!v.ok) errors.push({ segment: `journey:${journey.name}:exit`, error: v.error });
        else if (v.value) reason = `event ${change.eventName}`;
      } else if (r.kind !== "event") {
        const entered = r.kind === "segmentEntered";
        if (transitions.some((t) => t.segment === r.segment && t.entered === entered))
          reason = `${entered ? "entered" : "exited"} segment ${r.segment}`;
      }
      if (reason !== undefined) {
        exits.push({ journey: journey.name, reason });
        delete inJourney[journey.name];
        if (journey.branches !== undefined) exitedAt[journey.name] = nowMs;
        break;
      }
    }
  }
  if (!change.deleted) {
    for (const j of ws.config.journeys) {
      const t = j.trigger;
      if ("segmentEntered" in t && transitions.some((x) => x.entered && x.segment === t.segmentEntered))
        fire(j, `v${version}`);
      if ("segmentExited" in t && transitions.some((x) => !x.entered && x.segment === t.segmentExited))
        fire(j, `v${version}`);
    }
    for (const { journey, condition } of ws.eventJourneys) {
      if (
        !("event" in journey.trigger) ||
        journey.trigger.event !== change.eventName ||
        change.eventName === ""
      )
        continue;
      if (condition !== undefined) {
        const v = condition(bindings);
        if (!v.ok) {
          errors.push({ segment: `journey:${journey.name}`, error: v.error });
          continue;
        }
        if (!v.value) continue;
      }
      fire(journey, change.eventId !== "" ? change.eventId : `v${version}`);
    }
  }
  // A journey with exit rules is entered by its firing, until its action's deadline (30 days without one).
  for (const f of firings) {
    const j = ws.config.journeys.find((x) => x.name === f.journey);
    if (j === undefined || j.exit.length === 0) continue;
    // (A waitUntil adds at most a day; with branches, the longest path through them.)
    inJourney[j.name] = nowMs + horizonOf(j);
  }
  // Date journeys: the timer follows the profile's date trait and time zone.
  const dates = { ...(state.dates ?? {}) };
  const schedules: Schedule[] = [];
  for (const j of ws.config.journeys) {
    if (!("date" in j.trigger)) continue;
    const traits = change.profile?.traits ?? {};
    const rule = change.deleted
      ? undefined
      : ruleOf(j.trigger.date, traits, customerTimeZone(traits, ws.config.timezone));
    const occurrence = rule === undefined ? undefined : nextOccurrence(rule, nowMs);
    if (occurrence?.atMs === dates[j.name]) continue;
    if (occurrence === undefined) {
      if (dates[j.name] === undefined) continue;
      delete dates[j.name];
      schedules.push({ journey: j.name });
    } else {
      dates[j.name] = occurrence.atMs;
      schedules.push({ journey: j.name, ...(rule === undefined ? {} : { rule }), occurrence });
    }
  }
  const plan: Plan = {
    version,
    transitions,
    firings,
    ...(exits.length > 0 ? { exits } : {}),
    ...(schedules.length > 0 ? { schedules } : {}),
  };
  const next: MembershipState = { version, members, firedOnce, last: plan };
  if (Object.keys(inJourney).length > 0) next.inJourney = inJourney;
  if (Object.keys(lastStarted).length > 0) next.lastStarted = lastStarted;
  if (Object.keys(exitedAt).length > 0) next.exitedAt = exitedAt;
  if (Object.keys(dates).length > 0) next.dates = dates;
  if (state.handedFrom !== undefined) next.handedFrom = state.handedFrom;
  if (state.handedOver !== undefined) next.handedOver = state.handedOver;
  if (state.splitFrom !== undefined) next.splitFrom = state.splitFrom;
  return { plan, next, errors };
}

/** Renders `{{traits.x}}`, `{{profile_id}}`, `{{event.properties.x}}` placeholders in string values. */
export function renderPayload(template: Record<string, unknown>, change: ProfileChanged): JsonObject {
  const scope: JsonObject = {
    profile_id: change.profileId,
    traits: change.profile?.traits ?? {},
    event: { name: change.eventName, properties: change.eventProperties ?? {} },
  };
  const lookup = (path: string): string => {
    let cur: JsonValue | undefined = scope;
    for (const part of path.split(".")) {
      cur = cur !== null && typeof cur === "object" && !Array.isArray(cur) ? cur[part] : undefined;
    }
    if (cur === undefined || cur === null) return "";
    return typeof cur === "object" ? JSON.stringify(cur) : String(cur);
  };
  const render = (v: unknown): JsonValue => {
    if (typeof v === "string") return v.replace(/\{\{\s*([\w.]+)\s*\}\}/g, (_, p: string) => lookup(p));
    if (Array.isArray(v)) return v.map(render);
    if (v !== null && typeof v === "object")
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, render(x)]));
    return v as JsonValue;
  };
  return render(template) as JsonObject;
}
