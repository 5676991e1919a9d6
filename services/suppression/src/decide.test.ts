import { describe, expect, it } from "vitest";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { JsonObject } from "@bufbuild/protobuf";
import {
  applicableConsent,
  capDay,
  decide,
  dueAtOf,
  localDay,
  optOuts,
  timeZoneOf,
  type CapState,
  type ConsentRecord,
  type IntentFacts,
} from "./decide.js";

const NOW = Date.parse("2026-11-22T12:00:00Z");
const intent: IntentFacts = {
  actionId: "act_1",
  channel: "email",
  purpose: "marketing",
  notAfter: undefined,
};
const profile = (traits: JsonObject = {}) => ({ traits });
const noCap: CapState = { dailyCap: undefined, day: "2026-11-22", counted: [] };
const cap = (dailyCap: number, counted: string[], day = "2026-11-22"): CapState => ({
  dailyCap,
  day,
  counted,
});
const withdrawn = (purpose = "", source = "preference-centre"): ConsentRecord => ({
  purpose,
  granted: false,
  source,
});

describe("decide", () => {
  it("dispatches when nothing says no, taking no slot on an uncapped channel", () => {
    expect(decide(intent, profile(), [], noCap, NOW, "UTC")).toEqual({ kind: "dispatch" });
  });

  it("expires an intent past its deadline, before anything else", () => {
    const late = { ...intent, notAfter: timestampFromMs(NOW - 1) };
    expect(decide(late, undefined, [withdrawn()], cap(1, ["x"]), NOW, "UTC")).toMatchObject({
      kind: "expire",
      reason: "expired",
    });
    // At the deadline itself the action is still relevant.
    expect(decide({ ...intent, notAfter: timestampFromMs(NOW) }, profile(), [], noCap, NOW, "UTC").kind).toBe(
      "dispatch",
    );
  });

  it("suppresses an unknown profile", () => {
    expect(decide(intent, undefined, [], noCap, NOW, "UTC")).toMatchObject({
      kind: "suppress",
      reason: "unknown_profile",
    });
  });

  it.each([[["email"]], [["sms", "email"]], ["email"], [["all"]], ["all"]] as const)(
    "suppresses opt_out %j as opted_out",
    (optOut) => {
      expect(decide(intent, profile({ opt_out: optOut as never }), [], noCap, NOW, "UTC")).toMatchObject({
        kind: "suppress",
        reason: "opted_out",
        detail: "opt_out trait",
      });
    },
  );

  it("ignores opt-outs of other channels and values that are not channel names", () => {
    expect(optOuts({ opt_out: ["sms", 3, null] })).toEqual(["sms"]);
    expect(optOuts({ opt_out: true })).toEqual([]);
    expect(decide(intent, profile({ opt_out: ["sms"] }), [], noCap, NOW, "UTC").kind).toBe("dispatch");
  });

  it("suppresses when consent was withdrawn for the channel, as opted_out", () => {
    expect(decide(intent, profile(), [withdrawn()], noCap, NOW, "UTC")).toEqual({
      kind: "suppress",
      reason: "opted_out",
      detail: "consent withdrawn (preference-centre)",
    });
    expect(decide(intent, profile(), [withdrawn("marketing", "")], noCap, NOW, "UTC")).toMatchObject({
      reason: "opted_out",
      detail: "consent withdrawn for marketing",
    });
  });

  it("lets a purpose-specific consent win over the all-purposes one", () => {
    const grantedMarketing: ConsentRecord = { purpose: "marketing", granted: true, source: "" };
    expect(decide(intent, profile(), [grantedMarketing, withdrawn()], noCap, NOW, "UTC").kind).toBe(
      "dispatch",
    );
    expect(decide(intent, profile(), [withdrawn("service")], noCap, NOW, "UTC").kind).toBe("dispatch");
    expect(applicableConsent([withdrawn("marketing"), withdrawn()], "")).toEqual(withdrawn());
    expect(applicableConsent([], "marketing")).toBeUndefined();
  });

  it("takes a cap slot while there is room, and suppresses once the cap is reached", () => {
    expect(decide(intent, profile(), [], cap(2, ["a"]), NOW, "UTC")).toEqual({
      kind: "dispatch",
      count: { day: "2026-11-22" },
    });
    expect(decide(intent, profile(), [], cap(2, ["a", "b"]), NOW, "UTC")).toEqual({
      kind: "suppress",
      reason: "daily_cap",
      detail: "2 of 2 on 2026-11-22",
    });
  });

  it("lets a redelivered action through on its slot without taking a second one", () => {
    expect(decide(intent, profile(), [], cap(2, ["a", "act_1"]), NOW, "UTC")).toEqual({ kind: "dispatch" });
  });

  it("a ledger of another day does not count today", () => {
    expect(decide(intent, profile(), [], cap(1, ["a"], "2026-11-21"), NOW, "UTC")).toEqual({
      kind: "dispatch",
      count: { day: "2026-11-22" },
    });
  });

  it("counts the day in the profile's time zone across midnight", () => {
    // 23:30 UTC: already the 23rd in Paris, still the 22nd in London and Los Angeles.
    const late = Date.parse("2026-11-22T23:30:00Z");
    const full22 = cap(1, ["a"], "2026-11-22");
    expect(decide(intent, profile(), [], full22, late, "Europe/London").kind).toBe("suppress");
    expect(decide(intent, profile({ timezone: "Europe/Paris" }), [], full22, late, "Europe/London")).toEqual({
      kind: "dispatch",
      count: { day: "2026-11-23" },
    });
    // Workspace in Paris, customer in Los Angeles: the customer's day counts.
    expect(
      decide(intent, profile({ timezone: "America/Los_Angeles" }), [], full22, late, "Europe/Paris").kind,
    ).toBe("suppress");
    expect(decide(intent, profile(), [], full22, late, "Europe/Paris").kind).toBe("dispatch");
  });
});

describe("local days", () => {
  it("formats the calendar day in a time zone", () => {
    const ms = Date.parse("2026-11-22T23:30:00Z");
    expect(localDay(ms, "UTC")).toBe("2026-11-22");
    expect(localDay(ms, "Europe/Paris")).toBe("2026-11-23");
    expect(localDay(ms, "America/Los_Angeles")).toBe("2026-11-22");
    expect(localDay(Date.parse("2026-11-22T10:59:59Z"), "Pacific/Auckland")).toBe("2026-11-22");
    expect(localDay(Date.parse("2026-11-22T11:00:00Z"), "Pacific/Auckland")).toBe("2026-11-23");
  });

  it("follows daylight saving time", () => {
    // London is UTC+1 in summer: 23:30 UTC on 1 July is already 2 July there.
    expect(localDay(Date.parse("2026-07-01T23:30:00Z"), "Europe/London")).toBe("2026-07-02");
    expect(localDay(Date.parse("2026-01-01T23:30:00Z"), "Europe/London")).toBe("2026-01-01");
  });

  it("uses the profile's timezone trait when valid, else the workspace's", () => {
    expect(timeZoneOf(profile({ timezone: "Asia/Tokyo" }), "UTC")).toBe("Asia/Tokyo");
    expect(timeZoneOf(profile({ timezone: "Mars/Base" }), "Europe/London")).toBe("Europe/London");
    expect(timeZoneOf(profile({ timezone: 9 }), "Europe/London")).toBe("Europe/London");
    expect(timeZoneOf(undefined, "UTC")).toBe("UTC");
    expect(capDay(profile({ timezone: "Asia/Tokyo" }), Date.parse("2026-11-22T15:00:00Z"), "UTC")).toBe(
      "2026-11-23",
    );
  });
});

describe("due time", () => {
  const at = (iso: string) => timestampFromMs(Date.parse(iso));
  it("is the event's arrival for an immediate action", () => {
    const received = at("2026-11-22T12:00:00.000Z");
    const intended = at("2026-11-22T12:00:00.040Z");
    expect(dueAtOf({ eventReceivedAt: received, intendedAt: intended, notBefore: intended })).toBe(received);
  });

  it("is not_before for a scheduled action", () => {
    const notBefore = at("2026-11-23T09:00:00Z");
    expect(
      dueAtOf({
        eventReceivedAt: at("2026-11-22T12:00:00Z"),
        intendedAt: at("2026-11-22T12:00:01Z"),
        notBefore,
      }),
    ).toBe(notBefore);
  });
});
