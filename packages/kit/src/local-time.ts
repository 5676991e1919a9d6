/**
 * Wall-clock time in a customer's own time zone, and back to instants,
 * correct across daylight-saving changes: a wall time that happens twice
 * (clocks go back) means its first occurrence; one that never happens
 * (clocks go forward) means the instant the clocks jump.
 */

/** A wall-clock reading in some time zone. */
export interface WallTime {
  year: number;
  /** 1–12 */
  month: number;
  day: number;
  hour: number;
  minute: number;
}

const formats = new Map<string, Intl.DateTimeFormat>();

function format(tz: string): Intl.DateTimeFormat {
  let f = formats.get(tz);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formats.set(tz, f);
  }
  return f;
}

/** Whether `tz` is an IANA time zone this runtime knows. */
export function isTimeZone(tz: string): boolean {
  try {
    format(tz);
    return true;
  } catch {
    return false;
  }
}

/** The wall clock at `ms` as the runtime's time-zone data reads it (slow: ~10 µs a call). */
function formattedParts(ms: number, tz: string): WallTime & { second: number } {
  const out = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const p of format(tz).formatToParts(ms)) {
    if (p.type in out) out[p.type as keyof typeof out] = Number(p.value);
  }
  return out;
}

const HOUR = 3_600_000;
/** Per zone and UTC hour: the offset in force through the whole hour, or null when it changes within it. */
const hourOffsets = new Map<string, number | null>();
const MAX_HOURS = 50_000;
const EARLIEST = Date.UTC(1900, 0, 1);

function offsetFromParts(ms: number, p: WallTime & { second: number }): number {
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/**
 * The wall clock at `ms` in `tz`. Offsets change only at transitions, so the offset is looked up
 * once per zone and UTC hour (read at the hour's first and last second: when both agree, it holds
 * through the hour) and the wall clock is UTC arithmetic after that; an hour holding a transition
 * asks the time-zone data every time. The answers are the same as `formattedParts`.
 */
function parts(ms: number, tz: string): WallTime & { second: number } {
  const hour = Math.floor(ms / HOUR);
  const key = `${tz} ${hour}`;
  let offset = hourOffsets.get(key);
  if (offset === undefined) {
    const start = hour * HOUR;
    const end = start + HOUR - 1000;
    const a = offsetFromParts(start, formattedParts(start, tz));
    const b = offsetFromParts(end, formattedParts(end, tz));
    offset = a === b ? a : null;
    if (hourOffsets.size >= MAX_HOURS) hourOffsets.clear();
    hourOffsets.set(key, offset);
  }
  // Before 1900 (local mean times with odd seconds) the zone data answers every time.
  if (offset === null || ms < EARLIEST) {
    return formattedParts(ms, tz);
  }
  const d = new Date(Math.floor(ms / 1000) * 1000 + offset);
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds(),
  };
}

/** For tests: the wall clock straight from the time-zone data. */
export const wallTimeFromZoneData = (ms: number, tz: string): WallTime & { second: number } =>
  formattedParts(ms, tz);

/** A customer's time zone: their `timezone` trait when it is a zone this runtime knows, else `fallback`. */
export function customerTimeZone(
  traits: { readonly [k: string]: unknown } | undefined,
  fallback: string,
): string {
  const tz = traits?.timezone;
  return typeof tz === "string" && tz !== "" && isTimeZone(tz) ? tz : fallback;
}

/** The wall-clock time at instant `ms` in `tz`. */
export function wallTime(ms: number, tz: string): WallTime {
  const { year, month, day, hour, minute } = parts(ms, tz);
  return { year, month, day, hour, minute };
}

/** The calendar day (`YYYY-MM-DD`) at `ms` in `tz`. */
export function localDay(ms: number, tz: string): string {
  const w = wallTime(ms, tz);
  return `${w.year}-${String(w.month).padStart(2, "0")}-${String(w.day).padStart(2, "0")}`;
}

/** The zone's offset from UTC at instant `ms`, in milliseconds (whole seconds). */
function offsetAt(ms: number, tz: string): number {
  return offsetFromParts(ms, parts(ms, tz));
}

const sameWall = (a: WallTime, b: WallTime) =>
  a.year === b.year && a.month === b.month && a.day === b.day && a.hour === b.hour && a.minute === b.minute;

/**
 * The instant at which the wall clock in `tz` reads `w`: its first occurrence
 * when it reads so twice, the moment the clocks jump past it when it never does.
 */
export function instantOf(w: WallTime, tz: string): number {
  const naive = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute);
  // The offsets in force on either side of any transition near this wall time.
  const before = offsetAt(naive - 86_400_000, tz);
  const after = offsetAt(naive + 86_400_000, tz);
  const candidates = [naive - before, naive - after].sort((a, b) => a - b);
  for (const c of candidates) if (sameWall(wallTime(c, tz), w)) return c;
  // A gap: find the first instant with the later offset (the jump), to the second.
  let lo = Math.min(...candidates);
  let hi = Math.max(...candidates);
  while (hi - lo > 1000) {
    const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
    if (offsetAt(mid, tz) === after) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** `HH:MM` (24 h) as minutes after midnight; throws naming the value when it is not one. */
export function minutesOf(hhmm: string): number {
  const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(hhmm);
  if (!m) throw new Error(`"${hhmm}" is not a time of day (HH:MM, 00:00–23:59)`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** A daily window of local time, e.g. 21:00–08:00 (it may cross midnight). */
export interface DailyWindow {
  start: string;
  end: string;
}

/** The calendar day after `w`'s. */
function nextDay(w: WallTime): WallTime {
  const d = new Date(Date.UTC(w.year, w.month - 1, w.day + 1));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), hour: 0, minute: 0 };
}

/**
 * When `ms` falls inside the daily window in `tz`, the instant the window ends
 * (the next time the local clock reads `end`); undefined outside it.
 */
export function windowEnd(ms: number, tz: string, window: DailyWindow): number | undefined {
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  if (start === end) return undefined;
  const w = wallTime(ms, tz);
  const now = w.hour * 60 + w.minute;
  const overnight = start > end;
  const inside = overnight ? now >= start || now < end : now >= start && now < end;
  if (!inside) return undefined;
  const endDay = overnight && now >= start ? nextDay(w) : w;
  return instantOf({ ...endDay, hour: Math.floor(end / 60), minute: end % 60 }, tz);
}
