/**
 * What one profile change means for segments and journeys: the membership
 * transitions, and the journeys they (or the event itself) trigger. Pure.
 */
import { createHash } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { ProfileChanged } from "@kairos/contracts";
import type { JourneyConfig, WorkspaceConfig } from "@kairos/mesh-config";
import { bindingsOf, compileCondition, type Condition } from "./conditions.js";

/** A workspace's segments and journeys, with their conditions compiled. */
export interface CompiledWorkspace {
  config: WorkspaceConfig;
  segments: { name: string; condition: Condition }[];
  eventJourneys: { journey: JourneyConfig; condition: Condition | undefined }[];
}

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
  /** What the evaluation of `version` produced, re-published if its delivery is repeated. */
  last: Plan | undefined;
}

export interface Transition {
  segment: string;
  entered: boolean;
  reason: string;
}

export interface Firing {
  journey: string;
  actionId: string;
}

export interface Plan {
  version: number;
  transitions: Transition[];
  firings: Firing[];
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
      transitions.push({ segment: s.name, entered: true, reason: "condition became true" });
    } else if (!isMember && was) {
      delete members[s.name];
      transitions.push({
        segment: s.name,
        entered: false,
        reason: change.deleted ? "profile_deleted" : "condition became false",
      });
    }
  }
  // Journeys: segment triggers fire on transitions, event triggers on the event.
  const firedOnce = [...state.firedOnce];
  const firings: Firing[] = [];
  const fire = (j: JourneyConfig, trigger: string) => {
    if (j.reentry === "once") {
      if (firedOnce.includes(j.name)) return;
      firedOnce.push(j.name);
      firings.push({ journey: j.name, actionId: actionIdFor(change.workspace, j.name, change.profileId) });
    } else {
      firings.push({
        journey: j.name,
        actionId: actionIdFor(change.workspace, j.name, change.profileId, trigger),
      });
    }
  };
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
  const plan: Plan = { version, transitions, firings };
  return { plan, next: { version, members, firedOnce, last: plan }, errors };
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
