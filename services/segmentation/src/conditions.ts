/**
 * CEL conditions over the profile and the event that changed it, compiled
 * once at start. A runtime error (a missing field, a type mismatch) means
 * "not satisfied" and is reported, never thrown.
 */
import { celEnv, isCelError, parse, plan, type CelInput } from "@bufbuild/cel";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { ProfileChanged } from "@kairos/contracts";
import { compileFast, UNSURE, type JsonVars } from "./fast-cel.js";

export type Verdict = { ok: true; value: boolean } | { ok: false; error: string };

/** A compiled condition. */
export type Condition = (bindings: Bindings) => Verdict;

/** A change's variables: as plain JSON (the fast path), and as CEL input (built when needed). */
export interface Bindings {
  readonly vars: JsonVars;
  cel(): Record<string, CelInput>;
}

const env = celEnv();
// Shared answers: a change evaluates every segment's condition, so no allocation per condition.
const HOLDS: Verdict = Object.freeze({ ok: true, value: true });
const FAILS: Verdict = Object.freeze({ ok: true, value: false });

/**
 * Compiles `expr`; throws with the expression named if it does not parse. `fast: false` leaves
 * every answer to `@bufbuild/cel` (the reference the fast path is tested against).
 */
export function compileCondition(expr: string, { fast: useFast = true } = {}): Condition {
  let program: (b: Record<string, CelInput>) => unknown;
  let fast: ((vars: JsonVars) => boolean) | undefined;
  try {
    const parsed = parse(expr);
    program = plan(env, parsed);
    fast = parsed.expr === undefined || !useFast ? undefined : compileFast(parsed.expr);
  } catch (e) {
    throw new Error(`CEL condition ${JSON.stringify(expr)}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return (bindings) => {
    if (fast !== undefined) {
      try {
        return fast(bindings.vars) ? HOLDS : FAILS;
      } catch (e) {
        if (e !== UNSURE) throw e;
      }
    }
    let r: unknown;
    try {
      r = program(bindings.cel());
    } catch (e) {
      return { ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    if (isCelError(r)) return { ok: false, error: r.message };
    if (typeof r !== "boolean") return { ok: false, error: `the condition gave ${typeof r}, not a bool` };
    return { ok: true, value: r };
  };
}

/** JSON as CEL input: objects become maps (CEL reads plain objects only as messages). */
export function toCel(v: JsonValue | undefined): CelInput {
  if (v === undefined) return null;
  if (Array.isArray(v)) return v.map(toCel);
  if (v !== null && typeof v === "object") return new Map(Object.entries(v).map(([k, x]) => [k, toCel(x)]));
  return v;
}

/**
 * The variables a condition sees: `profile` (`profile_id`/`id`, `traits`,
 * `computed_traits`/`computed`, `identifiers` as `[{type, value}]`) and `event`
 * (`name`, `type`, `properties`) of the change being evaluated.
 */
export function bindingsOf(change: ProfileChanged): Bindings {
  const p = change.profile;
  const traits: JsonObject = p?.traits ?? {};
  const computed: JsonObject = p?.computedTraits ?? {};
  const identifiers = (p?.identifiers ?? []).map((i) => ({ type: i.type, value: i.value }));
  const vars: JsonVars = {
    profile: {
      profile_id: change.profileId,
      id: change.profileId,
      traits,
      computed_traits: computed,
      computed,
      identifiers,
    },
    event: {
      name: change.eventName,
      type: change.eventType,
      properties: change.eventProperties ?? {},
    },
  };
  let cel: Record<string, CelInput> | undefined;
  return {
    vars,
    cel: () => (cel ??= { profile: toCel(vars.profile), event: toCel(vars.event) }),
  };
}
