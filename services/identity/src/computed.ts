/**
 * Computed traits: counts, sums, minima, maxima, first and last values over a
 * profile's events, optionally within a time window. Each rule keeps small
 * per-bucket aggregates, so a window slides without the events being kept, and
 * two profiles' aggregates merge exactly. A bucket is a thirtieth of the window
 * (at least 1 s, at most a UTC day): an event stays counted until the end of its
 * bucket plus the window, so a value is late to slide by at most that much.
 * `nextWindowChange` says when a value next slides, for identity to re-publish
 * the profile then (a segment such as "3 orders in 30 days" exits with time). Pure.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Event } from "@kairos/contracts";
import type { ComputedTraitConfig } from "@kairos/mesh-config";

const DAY = 86_400_000;
const SECOND = 1_000;

/** The bucket width of a windowed rule (ms). */
export function bucketOf(rule: ComputedTraitConfig): number {
  if (rule.window === undefined) return DAY;
  return Math.min(DAY, Math.max(SECOND, Math.floor(rule.window / 30 / SECOND) * SECOND));
}

/** One day's aggregate of one rule. */
interface DayAggregate {
  n: number;
  sum: number;
  min?: number;
  max?: number;
}

/** What a rule remembers. */
export interface RuleState {
  /** Bucket number (time / bucket width; `all` without a window) → aggregate. */
  days: Record<string, DayAggregate>;
  /** The bucket width the keys are in, when not a day (state written before buckets were a day). */
  bucketMs?: number;
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
  return rule.window === undefined ? "all" : String(Math.floor(atMs / bucketOf(rule)));
}

/** A rule state's buckets keyed in buckets of `width` (the same object when they already are). */
function daysIn(s: RuleState, width: number): Record<string, DayAggregate> {
  const was = s.bucketMs ?? DAY;
  if (was === width) return s.days;
  const out: Record<string, DayAggregate> = {};
  for (const [k, d] of Object.entries(s.days)) {
    const key = k === "all" ? k : String(Math.floor((Number(k) * was) / width));
    const x = out[key];
    out[key] = x === undefined ? { ...d } : addAggregates(x, d);
  }
  return out;
}

/** Re-keys a rule's buckets when the window (so the bucket width) changed since they were written. */
function rebucket(s: RuleState, rule: ComputedTraitConfig): void {
  if (rule.window === undefined) return;
  const width = bucketOf(rule);
  if ((s.bucketMs ?? DAY) === width) return;
  s.days = daysIn(s, width);
  delete s.days.all;
  if (width === DAY) delete s.bucketMs;
  else s.bucketMs = width;
}

function addAggregates(x: DayAggregate, d: DayAggregate): DayAggregate {
  x.n += d.n;
  x.sum += d.sum;
  if (d.min !== undefined) x.min = x.min === undefined ? d.min : Math.min(x.min, d.min);
  if (d.max !== undefined) x.max = x.max === undefined ? d.max : Math.max(x.max, d.max);
  return x;
}

/** The oldest bucket (of `width`) still inside a window at `nowMs`. */
function oldestBucket(window: number, width: number, nowMs: number): number {
  return Math.floor((nowMs - window) / width);
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
    const s = (state[rule.name] ??=
      rule.window === undefined || bucketOf(rule) === DAY
        ? { days: {} }
        : { days: {}, bucketMs: bucketOf(rule) });
    rebucket(s, rule);
    if (
      rule.window !== undefined &&
      Math.floor(atMs / bucketOf(rule)) < oldestBucket(rule.window, bucketOf(rule), nowMs)
    )
      continue; // already outside
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

/** Drops a rule's buckets that have left its window; true when any did. */
function prune(s: RuleState, rule: ComputedTraitConfig, nowMs: number): boolean {
  if (rule.window === undefined) return false;
  const oldest = oldestBucket(rule.window, bucketOf(rule), nowMs);
  let dropped = false;
  for (const k of Object.keys(s.days)) {
    if (Number(k) < oldest) {
      delete s.days[k];
      dropped = true;
    }
  }
  return dropped;
}

/** Drops every bucket that has left its window (the windows slid); true when any did. */
export function slideWindows(
  state: ComputedState,
  rules: readonly ComputedTraitConfig[],
  nowMs: number,
): boolean {
  let dropped = false;
  for (const rule of rules) {
    const s = state[rule.name];
    if (s === undefined || rule.window === undefined) continue;
    rebucket(s, rule);
    if (prune(s, rule, nowMs)) dropped = true;
  }
  return dropped;
}

/**
 * When, after `nowMs`, a windowed value next changes because its oldest bucket leaves the
 * window; undefined when nothing windowed is held.
 */
export function nextWindowChange(
  state: ComputedState,
  rules: readonly ComputedTraitConfig[],
  nowMs: number,
): number | undefined {
  let next: number | undefined;
  for (const rule of rules) {
    const s = state[rule.name];
    if (s === undefined || rule.window === undefined) continue;
    const width = s.bucketMs ?? DAY;
    const oldest = oldestBucket(rule.window, width, nowMs);
    for (const k of Object.keys(s.days)) {
      const b = Number(k);
      if (!Number.isFinite(b) || b < oldest) continue;
      // Bucket b is inside while floor((t - window) / width) <= b.
      const leaves = (b + 1) * width + rule.window;
      if (next === undefined || leaves < next) next = leaves;
    }
  }
  return next;
}

/** Folds `from` into `into` (a merge): aggregates add up, first is the earliest, last the latest. */
export function mergeComputed(into: ComputedState, from: ComputedState): void {
  for (const [name, f] of Object.entries(from)) {
    const t = (into[name] ??= f.bucketMs === undefined ? { days: {} } : { days: {}, bucketMs: f.bucketMs });
    // Both in one bucket width (the surviving one's) before they add up.
    for (const [k, d] of Object.entries(daysIn(f, t.bucketMs ?? DAY))) {
      const x = t.days[k];
      if (x === undefined) t.days[k] = { ...d };
      else addAggregates(x, d);
    }
    if (f.first !== undefined && (t.first === undefined || f.first.at < t.first.at)) t.first = f.first;
    if (f.last !== undefined && (t.last === undefined || f.last.at > t.last.at)) t.last = f.last;
  }
}

/**
 * Takes `from`'s counts and sums back out of `into` (an unmerge). Minima, maxima, first and
 * last values cannot be taken apart and stay.
 */
export function subtractComputed(into: ComputedState, from: ComputedState): void {
  for (const [name, f] of Object.entries(from)) {
    const t = into[name];
    if (t === undefined) continue;
    for (const [k, d] of Object.entries(daysIn(f, t.bucketMs ?? DAY))) {
      const x = t.days[k];
      if (x === undefined) continue;
      x.n -= d.n;
      x.sum -= d.sum;
      if (x.n <= 0) delete t.days[k];
    }
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
      rule.window === undefined
        ? Number.NEGATIVE_INFINITY
        : oldestBucket(rule.window, s?.bucketMs ?? DAY, nowMs);
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
