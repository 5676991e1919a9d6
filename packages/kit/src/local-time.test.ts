import { describe, expect, it } from "vitest";
import { instantOf, localDay, wallTime, wallTimeFromZoneData } from "./local-time.js";

const zones = [
  "UTC",
  "Europe/London",
  "Europe/Berlin",
  "America/New_York",
  "America/St_Johns", // −3:30, DST
  "Australia/Lord_Howe", // a 30-minute DST shift
  "Asia/Kathmandu", // +5:45
  "Pacific/Chatham", // +12:45 / +13:45
  "Pacific/Apia", // skipped a whole day in 2011
  "Africa/Casablanca", // DST suspended each Ramadan
];

describe("local time", () => {
  it("reads the same wall clock as the time-zone data, every zone, across transitions and ordinary hours", () => {
    let checked = 0;
    for (const tz of zones) {
      // Every 6 h 37 min plus a few seconds through 2024–2029, so every hour and minute is met.
      for (let ms = Date.UTC(2024, 0, 1); ms < Date.UTC(2030, 0, 1); ms += 397 * 60_000 + 7_000) {
        const want = wallTimeFromZoneData(ms, tz);
        const got = wallTime(ms, tz);
        if (got.hour !== want.hour || got.minute !== want.minute || got.day !== want.day) {
          expect({ tz, at: new Date(ms).toISOString(), got }).toEqual({
            tz,
            at: new Date(ms).toISOString(),
            got: want,
          });
        }
        checked++;
      }
      // Every 15 s through each hour of 2026 that holds one of this zone's transitions (found day by day).
      const offset = (ms: number) => {
        const w = wallTimeFromZoneData(ms, tz);
        return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - ms;
      };
      for (let d = Date.UTC(2026, 0, 1); d < Date.UTC(2027, 0, 1); d += 86_400_000) {
        if (offset(d) === offset(d + 86_400_000)) continue;
        for (let h = d; h < d + 86_400_000; h += 3_600_000) {
          if (offset(h) === offset(h + 3_600_000)) continue;
          for (let ms = h; ms <= h + 3_600_000; ms += 15_000) {
            const { year, month, day, hour, minute } = wallTimeFromZoneData(ms, tz);
            expect(wallTime(ms, tz), `${tz} ${new Date(ms).toISOString()}`).toEqual({
              year,
              month,
              day,
              hour,
              minute,
            });
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(50_000);
  });

  it("keeps DST rules: a wall time that happens twice is its first occurrence, one that never happens is the jump", () => {
    // New York 2026: clocks forward at 02:00 on 8 March, back at 02:00 on 1 November.
    expect(
      new Date(
        instantOf({ year: 2026, month: 3, day: 8, hour: 2, minute: 30 }, "America/New_York"),
      ).toISOString(),
    ).toBe("2026-03-08T07:00:00.000Z");
    expect(
      new Date(
        instantOf({ year: 2026, month: 11, day: 1, hour: 1, minute: 30 }, "America/New_York"),
      ).toISOString(),
    ).toBe("2026-11-01T05:30:00.000Z");
    expect(localDay(Date.UTC(2026, 5, 30, 23, 30), "Asia/Kathmandu")).toBe("2026-07-01");
    // Before 1900 the zone data answers directly (local mean time, seconds and all).
    expect(wallTime(Date.UTC(1880, 0, 1, 12), "Europe/Amsterdam")).toEqual(
      (({ second: _s, ...w }) => w)(wallTimeFromZoneData(Date.UTC(1880, 0, 1, 12), "Europe/Amsterdam")),
    );
  });
});
