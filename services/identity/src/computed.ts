/**
 * Computed traits: counts, sums, minima, maxima, first and last values over a
 * profile's events, optionally within a time window. Each rule keeps small
 * per-day aggregates, so a window slides without the events being kept, and
 * two profiles' aggregates merge exactly. Pure.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Event } from "@kairos/contracts";
import type { ComputedTraitConfig } from "@kairos/mesh-config";

const DAY = 86_400_000;

/** One day's aggregate of one rule. */
interface DayAggregate {
  n: number;
  sum: number;
  min?: number;
  max?: number;
}

/** What a rule remembers. */
export interface RuleState {
  /** UTC day number (or `all` without a window) → aggregate. */
  days: Record<string, DayAggregate>;
  first?: { at: number; value: JsonValue };
  last?: { at: number; value: JsonValue };
}

/** Computed state of a profile: rule name → its state. */
export type ComputedState = Record<string, RuleState>;

function matches(rule: ComputedTraitConfig, e: Event): boolean {
  return rule.event === "*" || rule.event === e.name;
}

function propertyOf(rule: ComputedTraitConfig, e: Event): JsonValue | undefined {
  if (rule.property === undefined) return undefined;
  return e.properties?.[rule.property];
}

function dayKey(rule: ComputedTraitConfig, atMs: number): string {
  return rule.window === undefined ? "all" : String(Math.floor(atMs / DAY));
}

/** Folds one event (at its event time) into the state. */
export function applyComputed(
  state: ComputedState,
  rules: readonly ComputedTraitConfig[],
  e: Event,
  atMs: number,
  nowMs: number,
): void {
  for (const rule of rules) {
    if (!matches(rule, e)) continue;
    const raw = propertyOf(rule, e);
    const needsNumber = rule.op === "sum" || rule.op === "min" || rule.op === "max";
    const num =
      typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
    if (needsNumber && !Number.isFinite(num)) continue;
    const s = (state[rule.name] ??= { days: {} });
    if (rule.window !== undefined && atMs < nowMs - rule.window - DAY) continue; // already outside
    const key = dayKey(rule, atMs);
    const d = (s.days[key] ??= { n: 0, sum: 0 });
    d.n += 1;
    if (needsNumber) {
      d.sum += num;
      d.min = d.min === undefined ? num : Math.min(d.min, num);
      d.max = d.max === undefined ? num : Math.max(d.max, num);
    }
    const value: JsonValue = raw ?? new Date(atMs).toISOString();
    if (s.first === undefined || atMs < s.first.at) s.first = { at: atMs, value };
    if (s.last === undefined || atMs >= s.last.at) s.last = { at: atMs, value };
    prune(s, rule, nowMs);
  }
}

function prune(s: RuleState, rule: ComputedTraitConfig, nowMs: number): void {
  if (rule.window === undefined) return;
  const oldest = Math.floor((nowMs - rule.window) / DAY);
  for (const k of Object.keys(s.days)) if (Number(k) < oldest) delete s.days[k];
}

/** Folds `from` into `into` (a merge): aggregates add up, first is the earliest, last the latest. */
export function mergeComputed(into: ComputedState, from: ComputedState): void {
  for (const [name, f] of Object.entries(from)) {
    const t = (into[name] ??= { days: {} });
    for (const [k, d] of Object.entries(f.days)) {
      const x = t.days[k];
      if (x === undefined) {
        t.days[k] = { ...d };
        continue;
      }
      x.n += d.n;
      x.sum += d.sum;
      if (d.min !== undefined) x.min = x.min === undefined ? d.min : Math.min(x.min, d.min);
      if (d.max !== undefined) x.max = x.max === undefined ? d.max : Math.max(x.max, d.max);
    }
    if (f.first !== undefined && (t.first === undefined || f.first.at < t.first.at)) t.first = f.first;
    if (f.last !== undefined && (t.last === undefined || f.last.at > t.last.at)) t.last = f.last;
  }
}

/** The computed traits' values at `nowMs` (windows slide with time). */
export function computedValues(
  state: ComputedState,
  rules: readonly ComputedTraitConfig[],
  nowMs: number,
): JsonObject {
  const out: JsonObject = {};
  for (const rule of rules) {
    const s = state[rule.name];
    const oldest =
      rule.window === undefined ? Number.NEGATIVE_INFINITY : Math.floor((nowMs - rule.window) / DAY);
    const days = Object.entries(s?.days ?? {})
      .filter(([k]) => k === "all" || Number(k) >= oldest)
      .map(([, d]) => d);
    switch (rule.op) {
      case "count":
        out[rule.name] = days.reduce((a, d) => a + d.n, 0);
        break;
      case "sum":
        out[rule.name] = days.reduce((a, d) => a + d.sum, 0);
        break;
      case "min": {
        const v = days.map((d) => d.min).filter((x): x is number => x !== undefined);
        if (v.length > 0) out[rule.name] = Math.min(...v);
        break;
      }
      case "max": {
        const v = days.map((d) => d.max).filter((x): x is number => x !== undefined);
        if (v.length > 0) out[rule.name] = Math.max(...v);
        break;
      }
      case "first":
        if (s?.first !== undefined) out[rule.name] = s.first.value;
        break;
      case "last":
        if (s?.last !== undefined) out[rule.name] = s.last.value;
        break;
    }
  }
  return out;
}
