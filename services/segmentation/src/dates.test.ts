import { describe, expect, it } from "vitest";
import { customerTimeZone } from "@kairos/kit";
import { monthDayOf, nextLocalTime, nextOccurrence, ruleOf } from "./dates.js";

const utc = (iso: string) => Date.parse(iso);

describe("fixed-date triggers", () => {
  const birthday = { trait: "birthday", at: "09:00" };

  it("is 09:00 in the customer's own time zone, across the world and both sides of DST", () => {
    const now = utc("2026-11-24T12:00:00Z");
    const at = (tz: string, b: string) => nextOccurrence(ruleOf(birthday, { birthday: b }, tz)!, now);
    // Berlin in winter (UTC+1) and in summer (UTC+2).
    expect(at("Europe/Berlin", "1990-12-03")).toEqual({
      atMs: utc("2026-12-03T08:00:00Z"),
      date: "2026-12-03",
    });
    expect(at("Europe/Berlin", "1985-07-14")).toEqual({
      atMs: utc("2027-07-14T07:00:00Z"),
      date: "2027-07-14",
    });
    // The same birthday is a different instant in Tokyo and in New York.
    expect(at("Asia/Tokyo", "2000-12-03")?.atMs).toBe(utc("2026-12-03T00:00:00Z"));
    expect(at("America/New_York", "2000-12-03")?.atMs).toBe(utc("2026-12-03T14:00:00Z"));
  });

  it("today before 09:00 is today; after it, next year", () => {
    const rule = ruleOf(birthday, { birthday: "11-24" }, "UTC")!;
    expect(nextOccurrence(rule, utc("2026-11-24T08:59:00Z"))?.date).toBe("2026-11-24");
    expect(nextOccurrence(rule, utc("2026-11-24T09:00:00Z"))?.date).toBe("2027-11-24");
  });

  it("29 February falls on the 28th in other years", () => {
    const rule = ruleOf(birthday, { birthday: "2000-02-29" }, "UTC")!;
    expect(nextOccurrence(rule, utc("2026-11-24T00:00:00Z"))?.date).toBe("2027-02-28");
    expect(nextOccurrence(rule, utc("2027-03-01T00:00:00Z"))?.date).toBe("2028-02-29");
  });

  it("a local time the clocks skip is the moment they jump", () => {
    // Berlin, 29 March 2026: 02:00 → 03:00 (CET → CEST).
    const rule = ruleOf({ on: "2026-03-29", at: "02:30" }, {}, "Europe/Berlin")!;
    expect(nextOccurrence(rule, utc("2026-01-01T00:00:00Z"))?.atMs).toBe(utc("2026-03-29T01:00:00Z"));
  });

  it("a calendar date happens once; a past one never", () => {
    const rule = ruleOf({ on: "2026-12-24", at: "10:00" }, {}, "Europe/London")!;
    expect(nextOccurrence(rule, utc("2026-11-24T00:00:00Z"))).toEqual({
      atMs: utc("2026-12-24T10:00:00Z"),
      date: "2026-12-24",
    });
    expect(nextOccurrence(rule, utc("2026-12-24T10:00:00Z"))).toBeUndefined();
  });

  it("reads date traits in the usual shapes and ignores what is not a date", () => {
    expect(monthDayOf("1990-12-03")).toEqual({ month: 12, day: 3 });
    expect(monthDayOf("1990-12-03T00:00:00.000Z")).toEqual({ month: 12, day: 3 });
    expect(monthDayOf("--12-03")).toEqual({ month: 12, day: 3 });
    expect(monthDayOf("12-03")).toEqual({ month: 12, day: 3 });
    expect(monthDayOf("13-40")).toBeUndefined();
    expect(monthDayOf(19901203)).toBeUndefined();
    expect(ruleOf(birthday, {}, "UTC")).toBeUndefined();
  });

  it("uses the customer's timezone trait when it is a real zone, else the workspace's", () => {
    expect(customerTimeZone({ timezone: "Asia/Tokyo" }, "UTC")).toBe("Asia/Tokyo");
    expect(customerTimeZone({ timezone: "Mars/Olympus" }, "Europe/Berlin")).toBe("Europe/Berlin");
    expect(customerTimeZone({}, "Europe/Berlin")).toBe("Europe/Berlin");
  });
});

describe("waiting until a local time of day", () => {
  it("is later today, or tomorrow once it has passed, in the customer's zone", () => {
    // 07:30 in Berlin (UTC+1): 09:00 is later today.
    expect(nextLocalTime(utc("2026-11-24T06:30:00Z"), "09:00", "Europe/Berlin")).toBe(
      utc("2026-11-24T08:00:00Z"),
    );
    // 22:00 in Berlin: tomorrow.
    expect(nextLocalTime(utc("2026-11-24T21:00:00Z"), "09:00", "Europe/Berlin")).toBe(
      utc("2026-11-25T08:00:00Z"),
    );
    // Exactly then is now.
    expect(nextLocalTime(utc("2026-11-24T08:00:00Z"), "09:00", "Europe/Berlin")).toBe(
      utc("2026-11-24T08:00:00Z"),
    );
    // New York's evening is already Tokyo's tomorrow.
    expect(nextLocalTime(utc("2026-11-24T23:00:00Z"), "09:00", "Asia/Tokyo")).toBe(
      utc("2026-11-25T00:00:00Z"),
    );
  });
});
