import { describe, expect, it } from "vitest";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { JsonObject } from "@bufbuild/protobuf";
import {
  afterUnmerge,
  applicableConsent,
  asOf,
  cancellationTargets,
  capDay,
  consentRecords,
  decide,
  dueAtOf,
  emptyContact,
  mergeContacts,
  optOuts,
  timeZoneOf,
  withCancelled,
  withConsent,
  withPreferences,
  withSent,
  type ContactState,
  type IntentFacts,
  type Policy,
  type ProfileFacts,
} from "./decide.js";

const NOW = Date.parse("2026-11-22T12:00:00Z");
const H = 3_600_000;
const intent: IntentFacts = {
  actionId: "act_1",
  channel: "email",
  purpose: "marketing",
  notAfter: undefined,
  priority: 50,
};
const profile = (traits: JsonObject = {}, traitTimes: Record<string, number> = {}): ProfileFacts => ({
  traits,
  traitTimes: Object.fromEntries(Object.entries(traitTimes).map(([k, ms]) => [k, timestampFromMs(ms)])),
});
const policy = (
  channel: Partial<Policy["channel"]> = {},
  workspace: Partial<Policy["workspace"]> = {},
): Policy => ({
  workspaceTz: "UTC",
  channel: { name: "email", consent: "opt-out", ...channel },
  workspace: { exemptPurposes: ["transactional"], ...workspace },
});
const contact = (c: Partial<ContactState> = {}): ContactState => ({ ...emptyContact(), ...c });
const sent = (n: number, atMs = NOW - H, channel = "email") =>
  Array.from({ length: n }, (_, i) => ({ id: `s${i}`, channel, atMs }));

describe("decide", () => {
  it("dispatches when nothing says no, taking no slot when no cap applies", () => {
    expect(decide(intent, profile(), contact(), [], policy(), NOW)).toEqual({
      kind: "dispatch",
      count: false,
    });
  });

  it("expires an action past its deadline; at the deadline itself it is still relevant", () => {
    const late = { ...intent, notAfter: timestampFromMs(NOW - 1) };
    expect(decide(late, undefined, contact(), [], policy(), NOW)).toMatchObject({
      kind: "expire",
      reason: "expired",
    });
    expect(
      decide({ ...intent, notAfter: timestampFromMs(NOW) }, profile(), contact(), [], policy(), NOW).kind,
    ).toBe("dispatch");
  });

  it("suppresses an unknown profile", () => {
    expect(decide(intent, undefined, contact(), [], policy(), NOW)).toMatchObject({
      kind: "suppress",
      reason: "unknown_profile",
    });
  });

  it("cancels an action whose cancel key was cancelled after it was intended, not one intended later", () => {
    const c = withCancelled(contact(), ["journey:cart:p1"], NOW - 1000, "event Order Completed");
    const pending = { ...intent, cancelKeys: ["journey:cart:p1"], intendedAt: timestampFromMs(NOW - 2000) };
    expect(decide(pending, profile(), c, [], policy(), NOW)).toMatchObject({
      kind: "cancel",
      reason: "cancelled",
    });
    const newer = { ...pending, intendedAt: timestampFromMs(NOW - 500) };
    expect(decide(newer, profile(), c, [], policy(), NOW).kind).toBe("dispatch");
  });

  it("suppresses a listed identifier; an unsubscribe does not stop a transactional message, a hard bounce does", () => {
    const unsub = [{ type: "email", value: "a@x.io", channel: "email", reason: "unsubscribed" }];
    const bounce = [{ type: "email", value: "a@x.io", channel: "*", reason: "hard_bounced" }];
    expect(decide(intent, profile(), contact(), unsub, policy(), NOW)).toMatchObject({
      kind: "suppress",
      reason: "suppression_list",
      detail: "email unsubscribed",
    });
    const receipt = { ...intent, purpose: "transactional" };
    expect(decide(receipt, profile(), contact(), unsub, policy(), NOW).kind).toBe("dispatch");
    expect(decide(receipt, profile(), contact(), bounce, policy(), NOW)).toMatchObject({
      reason: "suppression_list",
      detail: "email hard_bounced on every channel",
    });
  });

  it("honours the opt_out trait for the channel or all, but not for transactional messages", () => {
    expect(optOuts({ opt_out: ["sms", 3, "email"] })).toEqual(["sms", "email"]);
    expect(optOuts({ opt_out: "email" })).toEqual(["email"]);
    expect(decide(intent, profile({ opt_out: "all" }), contact(), [], policy(), NOW)).toMatchObject({
      reason: "opted_out",
    });
    expect(decide(intent, profile({ opt_out: ["sms"] }), contact(), [], policy(), NOW).kind).toBe("dispatch");
    const receipt = { ...intent, purpose: "transactional" };
    expect(decide(receipt, profile({ opt_out: "email" }), contact(), [], policy(), NOW).kind).toBe(
      "dispatch",
    );
  });

  it("takes the latest consent statement, from the API or the consent_<channel> trait", () => {
    // Withdrawn through the API at NOW-2h, granted again by an identify at NOW-1h.
    const c = withConsent(contact(), "email", {
      purpose: "marketing",
      granted: false,
      source: "pc",
      atMs: NOW - 2 * H,
    });
    const regranted = profile({ consent_email: { marketing: true } }, { consent_email: NOW - H });
    expect(decide(intent, regranted, c, [], policy(), NOW).kind).toBe("dispatch");
    // Granted long ago by trait, withdrawn later through the API.
    const old = profile({ consent_email: true }, { consent_email: NOW - 48 * H });
    expect(decide(intent, old, c, [], policy(), NOW)).toMatchObject({
      kind: "suppress",
      reason: "opted_out",
      detail: "consent withdrawn for marketing (pc)",
    });
  });

  it("lets a withdrawal for every purpose stop marketing but not transactional messages", () => {
    const p = profile({ consent_email: false }, { consent_email: NOW - H });
    expect(decide(intent, p, contact(), [], policy(), NOW)).toMatchObject({ reason: "opted_out" });
    const receipt = { ...intent, purpose: "transactional" };
    expect(decide(receipt, p, contact(), [], policy(), NOW).kind).toBe("dispatch");
    const noReceipts = profile({ consent_email: { transactional: false } }, { consent_email: NOW - H });
    expect(decide(receipt, noReceipts, contact(), [], policy(), NOW)).toMatchObject({ reason: "opted_out" });
  });

  it("on an opt-in channel contacts only a customer who said yes", () => {
    const optIn = policy({ consent: "opt-in" });
    expect(decide(intent, profile(), contact(), [], optIn, NOW)).toMatchObject({ reason: "no_consent" });
    const yes = withConsent(contact(), "email", {
      purpose: "",
      granted: true,
      source: "signup",
      atMs: NOW - H,
    });
    expect(decide(intent, profile(), yes, [], optIn, NOW).kind).toBe("dispatch");
  });

  it("reads consent records and resolves ties toward the more specific purpose", () => {
    const recs = consentRecords(
      profile({ consent_email: { marketing: false, x: "no" } }, { consent_email: 5 }),
      contact(),
      "email",
    );
    expect(recs).toEqual([{ purpose: "marketing", granted: false, source: "trait consent_email", atMs: 5 }]);
    const all = { purpose: "", granted: true, source: "", atMs: 5 };
    const specific = { purpose: "marketing", granted: false, source: "", atMs: 5 };
    expect(applicableConsent([all, specific], "marketing", false)).toBe(specific);
    expect(applicableConsent([all], "transactional", true)).toBeUndefined();
  });

  it("suppresses a channel the customer does not prefer, except for transactional messages", () => {
    const c = contact({ preferences: { channels: ["sms"], maxPerWeek: 0, source: "pc", atMs: NOW - H } });
    expect(decide(intent, profile(), c, [], policy(), NOW)).toMatchObject({
      reason: "not_preferred_channel",
    });
    expect(decide({ ...intent, purpose: "transactional" }, profile(), c, [], policy(), NOW).kind).toBe(
      "dispatch",
    );
  });

  it("defers an action until its not_before, or expires it when its deadline comes first", () => {
    const later = { ...intent, notBefore: timestampFromMs(NOW + H) };
    expect(decide(later, profile(), contact(), [], policy(), NOW)).toMatchObject({
      kind: "defer",
      reason: "scheduled",
      untilMs: NOW + H,
    });
    const impossible = { ...later, notAfter: timestampFromMs(NOW + H / 2) };
    expect(decide(impossible, profile(), contact(), [], policy(), NOW)).toMatchObject({ kind: "expire" });
  });

  it("counts caps per channel per local day, per rolling week, across channels and by preference", () => {
    const daily = policy({ dailyCap: 2 });
    expect(decide(intent, profile(), contact({ sent: sent(1) }), [], daily, NOW)).toEqual({
      kind: "dispatch",
      count: true,
    });
    expect(decide(intent, profile(), contact({ sent: sent(2) }), [], daily, NOW)).toMatchObject({
      reason: "daily_cap",
      detail: "2 of 2 on 2026-11-22",
    });
    // Yesterday's sends do not count today, but do count this week.
    const yesterday = contact({ sent: sent(2, NOW - 20 * H) });
    expect(decide(intent, profile(), yesterday, [], daily, NOW).kind).toBe("dispatch");
    expect(decide(intent, profile(), yesterday, [], policy({ weeklyCap: 2 }), NOW)).toMatchObject({
      reason: "weekly_cap",
    });
    // Eight days ago is outside the rolling week.
    expect(
      decide(
        intent,
        profile(),
        contact({ sent: sent(5, NOW - 8 * 24 * H) }),
        [],
        policy({ weeklyCap: 2 }),
        NOW,
      ).kind,
    ).toBe("dispatch");
    const otherChannel = contact({ sent: sent(2, NOW - H, "sms") });
    expect(decide(intent, profile(), otherChannel, [], daily, NOW).kind).toBe("dispatch");
    expect(decide(intent, profile(), otherChannel, [], policy({}, { dailyCap: 2 }), NOW)).toMatchObject({
      reason: "workspace_daily_cap",
    });
    const prefers = contact({
      sent: sent(1),
      preferences: { channels: [], maxPerWeek: 1, source: "", atMs: 0 },
    });
    expect(decide(intent, profile(), prefers, [], policy(), NOW)).toMatchObject({
      reason: "preferred_frequency",
    });
  });

  it("lets a redelivered action through on its slot, and exempts transactional messages from caps", () => {
    const full = contact({ sent: [{ id: "act_1", channel: "email", atMs: NOW - H }] });
    expect(decide(intent, profile(), full, [], policy({ dailyCap: 1 }), NOW)).toEqual({
      kind: "dispatch",
      count: false,
    });
    const other = contact({ sent: sent(1) });
    expect(
      decide({ ...intent, purpose: "transactional" }, profile(), other, [], policy({ dailyCap: 1 }), NOW),
    ).toEqual({
      kind: "dispatch",
      count: false,
    });
  });

  it("counts the day in the customer's time zone across midnight", () => {
    // 23:30 UTC on the 22nd is the 23rd in Tokyo: a send at 14:00 UTC on the 22nd was "yesterday" there.
    const late = Date.parse("2026-11-22T23:30:00Z");
    const c = contact({ sent: [{ id: "x", channel: "email", atMs: Date.parse("2026-11-22T14:00:00Z") }] });
    expect(
      decide(intent, profile({ timezone: "Asia/Tokyo" }), c, [], policy({ dailyCap: 1 }), late).kind,
    ).toBe("dispatch");
    expect(decide(intent, profile(), c, [], policy({ dailyCap: 1 }), late)).toMatchObject({
      reason: "daily_cap",
    });
    expect(capDay(profile({ timezone: "Asia/Tokyo" }), late, "UTC")).toBe("2026-11-23");
  });

  it("uses the profile's timezone trait when valid, else the workspace's", () => {
    expect(timeZoneOf(profile({ timezone: "Europe/Berlin" }), "UTC")).toBe("Europe/Berlin");
    expect(timeZoneOf(profile({ timezone: "Mars/Olympus" }), "Europe/Paris")).toBe("Europe/Paris");
    expect(timeZoneOf(undefined, "UTC")).toBe("UTC");
  });

  it("a channel that does not message the customer (ad audiences) needs consent, not caps or quiet hours", () => {
    const ads = policy(
      { name: "ads", contact: false, dailyCap: 1 },
      { dailyCap: 1, quietHours: { start: "00:00", end: "23:59" } },
    );
    const busy = contact({
      sent: sent(5, NOW - H, "email"),
      preferences: { channels: ["email"], maxPerWeek: 0, source: "test", atMs: NOW - H },
    });
    expect(decide({ ...intent, channel: "ads" }, profile(), busy, [], ads, NOW)).toEqual({
      kind: "dispatch",
      count: false,
    });
    // Marketing consent withdrawn still stops it.
    const noMarketing = profile({ consent_ads: false }, { consent_ads: NOW - H });
    expect(decide({ ...intent, channel: "ads" }, noMarketing, busy, [], ads, NOW)).toMatchObject({
      kind: "suppress",
      reason: "opted_out",
    });
  });
});

describe("quiet hours", () => {
  const quiet = policy({}, { quietHours: { start: "22:00", end: "07:00" } });
  const berlin = profile({ timezone: "Europe/Berlin" });

  it("defers to the end of the quiet window in the customer's time zone", () => {
    // 22:30 UTC is 23:30 in Berlin (CET): quiet until 07:00 CET = 06:00 UTC.
    const at = Date.parse("2026-11-22T22:30:00Z");
    expect(decide(intent, berlin, contact(), [], quiet, at)).toMatchObject({
      kind: "defer",
      reason: "quiet_hours",
      untilMs: Date.parse("2026-11-23T06:00:00Z"),
    });
    // The same instant is 07:30 in Tokyo: not quiet there.
    expect(decide(intent, profile({ timezone: "Asia/Tokyo" }), contact(), [], quiet, at).kind).toBe(
      "dispatch",
    );
  });

  it("ends at 07:00 local on the night clocks go forward (one hour less) and back (one hour more)", () => {
    // 2026-03-29: Berlin goes from CET (+1) to CEST (+2) at 02:00.
    expect(decide(intent, berlin, contact(), [], quiet, Date.parse("2026-03-28T22:00:00Z"))).toMatchObject({
      untilMs: Date.parse("2026-03-29T05:00:00Z"),
    });
    // 2026-10-25: back from CEST to CET at 03:00.
    expect(decide(intent, berlin, contact(), [], quiet, Date.parse("2026-10-24T21:00:00Z"))).toMatchObject({
      untilMs: Date.parse("2026-10-25T06:00:00Z"),
    });
  });

  it("expires an action whose deadline comes before the quiet window ends", () => {
    const at = Date.parse("2026-11-22T22:30:00Z");
    const offer = { ...intent, notAfter: timestampFromMs(at + H) };
    expect(decide(offer, berlin, contact(), [], quiet, at)).toMatchObject({
      kind: "expire",
      reason: "quiet_hours",
    });
  });

  it("does not hold transactional messages, nor channels that switch quiet hours off", () => {
    const at = Date.parse("2026-11-22T22:30:00Z");
    expect(decide({ ...intent, purpose: "transactional" }, berlin, contact(), [], quiet, at).kind).toBe(
      "dispatch",
    );
    const web = policy({ quietHours: false }, { quietHours: { start: "22:00", end: "07:00" } });
    expect(decide(intent, berlin, contact(), [], web, at).kind).toBe("dispatch");
    const own = policy({ quietHours: { start: "20:00", end: "21:00" } });
    expect(decide(intent, profile(), contact(), [], own, Date.parse("2026-11-22T20:30:00Z"))).toMatchObject({
      untilMs: Date.parse("2026-11-22T21:00:00Z"),
    });
  });
});

describe("contact record", () => {
  it("keeps sends and cancellations only as long as a cap or a pending action can need them", () => {
    let c = withSent(contact(), { id: "old", channel: "email", atMs: NOW - 9 * 24 * H });
    c = withSent(c, { id: "new", channel: "email", atMs: NOW });
    expect(c.sent.map((e) => e.id)).toEqual(["new"]);
    let k = withCancelled(contact(), ["a"], NOW - 9 * 24 * H, "x");
    k = withCancelled(k, ["b"], NOW, "y");
    expect(Object.keys(k.cancelled)).toEqual(["b"]);
  });

  it("ignores a consent statement older than the one recorded", () => {
    const newer = withConsent(contact(), "email", { purpose: "", granted: false, source: "a", atMs: 2 });
    expect(withConsent(newer, "email", { purpose: "", granted: true, source: "b", atMs: 1 })).toBe(newer);
  });
});

describe("dueAtOf", () => {
  it("is the event's arrival for an immediate action", () => {
    const t = timestampFromMs(NOW);
    expect(
      dueAtOf({
        notBefore: t,
        intendedAt: timestampFromMs(NOW + 5),
        eventReceivedAt: timestampFromMs(NOW - 5),
      }),
    ).toEqual(timestampFromMs(NOW - 5));
  });

  it("is not_before for a scheduled action", () => {
    const nb = timestampFromMs(NOW + H);
    expect(
      dueAtOf({ notBefore: nb, intendedAt: timestampFromMs(NOW), eventReceivedAt: timestampFromMs(NOW) }),
    ).toEqual(nb);
  });

  it("merges two profiles' records: a withdrawal on either stands, sends on either count, once", () => {
    const survivor = contact({
      consent: { "email|": { purpose: "", granted: true, source: "signup", atMs: NOW - 10 * H } },
      sent: sent(1, NOW - 2 * H),
      cancelled: { "journey:a:p": { atMs: NOW - H, reason: "order" } },
    });
    const merged = contact({
      consent: {
        "email|": { purpose: "", granted: false, source: "unsubscribe link", atMs: NOW - 3 * H },
        "sms|marketing": { purpose: "marketing", granted: false, source: "stop", atMs: NOW - 5 * H },
      },
      preferences: { channels: ["email"], maxPerWeek: 2, source: "centre", atMs: NOW - H },
      sent: [{ id: "m1", channel: "email", atMs: NOW - H }],
      cancelled: { "journey:b:q": { atMs: NOW - 2 * H, reason: "flight changed" } },
    });
    const out = mergeContacts(survivor, merged);
    expect(out.consent["email|"]?.granted).toBe(false);
    expect(out.consent["sms|marketing"]?.source).toBe("stop");
    expect(out.preferences?.maxPerWeek).toBe(2);
    expect(out.sent.map((e) => e.id)).toEqual(["s0", "m1"]);
    expect(Object.keys(out.cancelled).sort()).toEqual(["journey:a:p", "journey:b:q"]);
    // The merged profile's withdrawal now decides the survivor's marketing on email.
    expect(decide(intent, profile(), out, [], policy(), NOW)).toMatchObject({
      kind: "suppress",
      reason: "opted_out",
    });
    expect(mergeContacts(out, merged)).toEqual(out);
    // A later statement on the survivor is not overturned by an older one merged in.
    const later = withConsent(survivor, "email", {
      purpose: "",
      granted: true,
      source: "re-opt-in",
      atMs: NOW,
    });
    expect(mergeContacts(later, merged).consent["email|"]?.source).toBe("re-opt-in");
    expect(survivor.consent["email|"]?.granted).toBe(true);
  });

  it("split apart by an unmerge: every withdrawal either customer made stands, no grant made by then", () => {
    const withdrew = { purpose: "", granted: false, source: "unsubscribe link", atMs: NOW - 5 * H };
    const granted = { purpose: "", granted: true, source: "preference centre", atMs: NOW - 2 * H };
    // One customer withdrew; the other's later grant won in the merged record.
    const merged = mergeContacts(
      contact({ consent: { "email|": granted }, sent: sent(1, NOW - H) }),
      contact({
        consent: { "email|": withdrew, "sms|marketing": { ...granted, purpose: "marketing" } },
        cancelled: { "journey:a:p": { atMs: NOW - H, reason: "order" } },
      }),
    );
    expect(merged.consent["email|"]).toEqual(granted);
    expect(merged.withdrawn).toEqual({ "email|": withdrew });
    const unmergedAt = NOW - H / 2;
    const split = afterUnmerge(merged, unmergedAt);
    expect(split.consent).toEqual({ "email|": withdrew });
    expect(decide(intent, profile(), split, [], policy(), NOW)).toMatchObject({
      kind: "suppress",
      reason: "opted_out",
    });
    // Sends stay counted and cancellations stay; applying it again changes nothing.
    expect(split.sent).toEqual(merged.sent);
    expect(split.cancelled).toEqual(merged.cancelled);
    expect(afterUnmerge(split, unmergedAt)).toEqual(split);
    // A grant made after the unmerge is the customer's own: kept, also by a repeat.
    const regranted = withConsent(split, "email", { ...granted, atMs: NOW });
    expect(afterUnmerge(regranted, unmergedAt).consent["email|"]).toEqual({ ...granted, atMs: NOW });
    expect(regranted.withdrawn).toEqual({ "email|": withdrew });
  });

  it("split apart by an unmerge: every preference statement either customer made holds, until restated", () => {
    const smsOnly = { channels: ["sms"], maxPerWeek: 0, source: "a's centre", atMs: NOW - 5 * H };
    const both = { channels: ["email", "sms"], maxPerWeek: 5, source: "b's centre", atMs: NOW - 2 * H };
    const merged = mergeContacts(contact({ preferences: both }), contact({ preferences: smsOnly }));
    expect(merged.preferences).toEqual(both);
    expect(merged.replacedPreferences).toEqual([smsOnly]);
    expect(mergeContacts(merged, contact({ preferences: smsOnly }))).toEqual(merged);
    expect(decide(intent, profile(), merged, [], policy(), NOW).kind).toBe("dispatch");
    const split = afterUnmerge(merged, NOW - H);
    expect(split.preferences).toBeUndefined();
    expect(split.heldPreferences).toEqual([smsOnly, both]);
    expect(afterUnmerge(split, NOW - H)).toEqual(split);
    expect(decide(intent, profile(), split, [], policy(), NOW)).toMatchObject({
      reason: "not_preferred_channel",
      detail: "prefers sms",
    });
    // Five a week at most, as one of them asked.
    const sentFive = { ...split, sent: sent(5, NOW - H) };
    expect(
      decide({ ...intent, channel: "sms" }, profile(), sentFive, [], policy({ name: "sms" }), NOW),
    ).toMatchObject({
      reason: "preferred_frequency",
    });
    // Stated again by the customer: their own.
    const restated = withPreferences(split, {
      channels: ["email"],
      maxPerWeek: 0,
      source: "again",
      atMs: NOW,
    });
    expect(restated.heldPreferences).toBeUndefined();
    expect(decide(intent, profile(), restated, [], policy(), NOW).kind).toBe("dispatch");
  });

  it("remembers preference statements the same whatever the order of merges, and at most ten", () => {
    const pref = (i: number) => ({
      channels: [`c${i % 3}`],
      maxPerWeek: i,
      source: `s${i}`,
      atMs: NOW - i * H,
    });
    const one = (i: number) => contact({ preferences: pref(i) });
    let forward = contact();
    let backward = contact();
    for (let i = 0; i < 30; i++) forward = mergeContacts(forward, one(i));
    for (let i = 29; i >= 0; i--) backward = mergeContacts(backward, one(i));
    expect(forward.preferences).toEqual(pref(0));
    expect(backward).toEqual(forward);
    expect(forward.replacedPreferences).toEqual([10, 9, 8, 7, 6, 5, 4, 3, 2, 1].map(pref));
    expect(mergeContacts(forward, one(3))).toEqual(forward);
    expect(mergeContacts(forward, forward)).toEqual(forward);
    const split = afterUnmerge(forward, NOW);
    expect(split.heldPreferences).toHaveLength(10);
    expect(mergeContacts(split, split)).toEqual(split);
  });

  it("as of a time: the statements made by then, every send and cancellation", () => {
    const early = { purpose: "", granted: false, source: "stop", atMs: NOW - 5 * H };
    const late = { purpose: "", granted: true, source: "signup", atMs: NOW - H };
    const c = contact({
      consent: { "email|": late, "sms|": early },
      withdrawn: { "email|": early },
      preferences: { channels: ["sms"], maxPerWeek: 1, source: "centre", atMs: NOW - H },
      sent: sent(1, NOW - H),
      cancelled: { "journey:a:p": { atMs: NOW - H, reason: "order" } },
    });
    const then = asOf(c, NOW - 2 * H);
    expect(then.consent).toEqual({ "sms|": early });
    expect(then.withdrawn).toEqual({ "email|": early });
    expect(then.preferences).toBeUndefined();
    expect(then.sent).toEqual(c.sent);
    expect(then.cancelled).toEqual(c.cancelled);
  });
});

describe("cancellationTargets", () => {
  it("reaches the profiles merged into the one named, with their own ids in its keys", () => {
    expect(
      cancellationTargets(
        "prf_user",
        ["journey:cart:prf_user", "promo:spring", "order:prf_user:x"],
        ["prf_anon", "prf_old"],
      ),
    ).toEqual([
      { profileId: "prf_user", keys: ["journey:cart:prf_user", "promo:spring", "order:prf_user:x"] },
      { profileId: "prf_anon", keys: ["journey:cart:prf_anon", "promo:spring", "order:prf_anon:x"] },
      { profileId: "prf_old", keys: ["journey:cart:prf_old", "promo:spring", "order:prf_old:x"] },
    ]);
  });

  it("names each profile and key once, the one named first, and nothing more without merges", () => {
    expect(cancellationTargets("p", ["k", "k"], [])).toEqual([{ profileId: "p", keys: ["k"] }]);
    expect(cancellationTargets("p1", ["journey:j:p1"], ["p1", "p2", "p2", ""])).toEqual([
      { profileId: "p1", keys: ["journey:j:p1"] },
      { profileId: "p2", keys: ["journey:j:p2"] },
    ]);
  });
});
