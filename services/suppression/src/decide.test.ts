import { describe, expect, it } from "vitest";
import { decide, localDay, optOuts, timeZoneOf, type Facts } from "./decide.js";

const base: Facts = {
  nowMs: Date.parse("2026-11-22T12:00:00Z"),
  channel: "email",
  purpose: "marketing",
  actionId: "act_1",
  notAfterMs: undefined,
  traits: {},
  consentWithdrawn: false,
  dailyCap: undefined,
  countedToday: [],
};

describe("decide", () => {
  it("dispatches when nothing says no", () => {
    expect(decide(base)).toEqual({ kind: "dispatch", countsAgainstCap: false });
  });

  it.each([
    [{ notAfterMs: base.nowMs - 1 }, { kind: "expire", reason: "expired" }],
    [{ traits: undefined }, { kind: "suppress", reason: "unknown_profile" }],
    [{ traits: { opt_out: ["email"] } }, { kind: "suppress", reason: "opted_out" }],
    [{ traits: { opt_out: "all" } }, { kind: "suppress", reason: "opted_out" }],
    [{ consentWithdrawn: true }, { kind: "suppress", reason: "consent_withdrawn" }],
    [
      { dailyCap: 2, countedToday: ["a", "b"] },
      { kind: "suppress", reason: "daily_cap" },
    ],
  ] as [Partial<Facts>, unknown][])("%j → %j", (over, verdict) => {
    expect(decide({ ...base, ...over })).toEqual(verdict);
  });

  it("counts an action against the cap once, and lets its redelivery through", () => {
    expect(decide({ ...base, dailyCap: 2, countedToday: ["a"] })).toEqual({
      kind: "dispatch",
      countsAgainstCap: true,
    });
    expect(decide({ ...base, dailyCap: 2, countedToday: ["a", "act_1"] })).toEqual({
      kind: "dispatch",
      countsAgainstCap: false,
    });
  });

  it("does not cap transactional messages", () => {
    expect(decide({ ...base, purpose: "transactional", dailyCap: 1, countedToday: ["x"] }).kind).toBe(
      "dispatch",
    );
  });

  it("ignores opt-outs of other channels", () => {
    expect(optOuts({ opt_out: ["sms", 3] })).toEqual(["sms"]);
    expect(decide({ ...base, traits: { opt_out: ["sms"] } }).kind).toBe("dispatch");
  });
});

describe("local days", () => {
  it("counts the day in the customer's time zone", () => {
    const ms = Date.parse("2026-11-22T23:30:00Z");
    expect(localDay(ms, "UTC")).toBe("2026-11-22");
    expect(localDay(ms, "Europe/Paris")).toBe("2026-11-23");
    expect(localDay(ms, "America/Los_Angeles")).toBe("2026-11-22");
  });

  it("uses the profile's timezone trait when valid, else the workspace's", () => {
    expect(timeZoneOf({ timezone: "Asia/Tokyo" }, "UTC")).toBe("Asia/Tokyo");
    expect(timeZoneOf({ timezone: "Mars/Base" }, "Europe/London")).toBe("Europe/London");
    expect(timeZoneOf(undefined, "UTC")).toBe("UTC");
  });
});
