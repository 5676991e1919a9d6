/**
 * Fixed-date triggers, pure: the next occurrence of a date trigger at a local
 * time in the customer's own time zone (their `timezone` trait, else the
 * workspace's), correct across daylight-saving changes. A yearly date on
 * 29 February falls on 28 February in other years.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { instantOf, wallTime } from "@kairos/kit";
import type { DateTrigger } from "@kairos/mesh-config";

/** One occurrence: its instant and its local calendar date (`YYYY-MM-DD`, used in the action id). */
export interface Occurrence {
  atMs: number;
  date: string;
}

/** The recurrence the timer keeps, so the next year needs no profile. */
export interface DateRule {
  month: number;
  day: number;
  /** Minutes after local midnight. */
  minutes: number;
  tz: string;
  /** A calendar date happens once; a trait date every year. */
  yearly: boolean;
  year?: number;
}

const pad = (n: number) => String(n).padStart(2, "0");
const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

/** Month and day of a date trait (`YYYY-MM-DD`, an ISO date-time, `MM-DD` or `--MM-DD`), or undefined. */
export function monthDayOf(value: unknown): { month: number; day: number } | undefined {
  if (typeof value !== "string") return undefined;
  const m = /^(?:\d{4}-|--)?(\d{2})-(\d{2})(?:$|T)/.exec(value.trim());
  if (m === null) return undefined;
  const month = Number(m[1]);
  const day = Number(m[2]);
  if (month < 1 || month > 12 || day < 1 || day > 31) return undefined;
  return { month, day };
}

/** The rule of a trigger for one profile, or undefined when it has no usable date. */
export function ruleOf(trigger: DateTrigger, traits: JsonObject, tz: string): DateRule | undefined {
  const [h, min] = trigger.at.split(":").map(Number) as [number, number];
  const minutes = h * 60 + min;
  if ("trait" in trigger) {
    const md = monthDayOf(traits[trigger.trait]);
    return md === undefined ? undefined : { ...md, minutes, tz, yearly: true };
  }
  const [year, month, day] = trigger.on.split("-").map(Number) as [number, number, number];
  return { year, month, day, minutes, tz, yearly: false };
}

function at(rule: DateRule, year: number): Occurrence {
  const day = rule.month === 2 && rule.day === 29 && !isLeap(year) ? 28 : rule.day;
  const atMs = instantOf(
    { year, month: rule.month, day, hour: Math.floor(rule.minutes / 60), minute: rule.minutes % 60 },
    rule.tz,
  );
  return { atMs, date: `${year}-${pad(rule.month)}-${pad(day)}` };
}

/** The first occurrence strictly after `afterMs`, or undefined (a calendar date already past). */
export function nextOccurrence(rule: DateRule, afterMs: number): Occurrence | undefined {
  if (!rule.yearly) {
    const o = at(rule, rule.year ?? 0);
    return o.atMs > afterMs ? o : undefined;
  }
  const year = wallTime(afterMs, rule.tz).year;
  for (const y of [year - 1, year, year + 1, year + 2]) {
    const o = at(rule, y);
    if (o.atMs > afterMs) return o;
  }
  return undefined;
}

/** The first instant at or after `fromMs` when the wall clock in `tz` reads `hhmm` (`HH:MM`). */
export function nextLocalTime(fromMs: number, hhmm: string, tz: string): number {
  const [hour, minute] = hhmm.split(":").map(Number) as [number, number];
  const today = wallTime(fromMs, tz);
  for (let d = 0; d < 3; d++) {
    const day = new Date(Date.UTC(today.year, today.month - 1, today.day + d));
    const at = instantOf(
      { year: day.getUTCFullYear(), month: day.getUTCMonth() + 1, day: day.getUTCDate(), hour, minute },
      tz,
    );
    if (at >= fromMs) return at;
  }
  return fromMs;
}
