import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { EventSchema, EventType } from "@kairos/contracts";
import { parseMeshConfig } from "@kairos/mesh-config";
import { compileRules, normalizePhone } from "./identity-rules.js";
import type { Ident } from "./profile-record.js";

const mesh = parseMeshConfig(`
workspaces:
  - id: shop
    identity:
      identifiers:
        - { type: user_id, field: userId, limit: 1 }
        - { type: email, field: traits.email, normalize: email, limit: 2 }
        - { type: phone, field: traits.phone, normalize: phone }
        - { type: loyalty, field: properties.loyalty_number }
        - { type: device, field: context.device.id }
        - { type: anonymous_id, field: anonymousId, limit: 3 }
      blocked: ["null", "test@example.com", "/^0+$/"]
`);
const rules = compileRules(mesh.workspaces[0]!.identity);

describe("identity rules", () => {
  it("reads every configured field, normalises, and keeps the priority order", () => {
    const e = create(EventSchema, {
      type: EventType.IDENTIFY,
      userId: " u-1 ",
      anonymousId: "a-1",
      traits: { email: " Ada@Example.ORG", phone: "+44 (20) 7946-0958" },
      properties: { loyalty_number: 12345 },
      context: { device: { id: "dev-9" } },
    });
    expect(rules.identifiersOf(e)).toEqual([
      { type: "user_id", value: "u-1" },
      { type: "email", value: "ada@example.org" },
      { type: "phone", value: "+442079460958" },
      { type: "loyalty", value: "12345" },
      { type: "device", value: "dev-9" },
      { type: "anonymous_id", value: "a-1" },
    ]);
  });

  it("drops blocked values, exact (any case) or by regex, and values that do not normalise", () => {
    const e = create(EventSchema, {
      type: EventType.IDENTIFY,
      userId: "NULL",
      anonymousId: "000",
      traits: { email: "test@example.com", phone: "12" },
    });
    expect(rules.identifiersOf(e)).toEqual([]);
    expect(rules.normalize("email", "not-an-email")).toBeUndefined();
    expect(rules.normalize("nope", "x")).toBeUndefined();
  });

  it("normalises phone numbers to E.164", () => {
    expect(normalizePhone("0044 20 7946 0958")).toBe("+442079460958");
    expect(normalizePhone("+1 (415) 555-2671")).toBe("+14155552671");
    expect(normalizePhone("415 555 2671")).toBeUndefined(); // no country code: not E.164
  });

  it("drops the lowest-priority identifiers until the profile fits the per-type limits", () => {
    const onProfile: Ident[] = [
      { type: "user_id", value: "u-1" },
      { type: "email", value: "a@x.org" },
    ];
    // The anonymous id leads to a profile that already has another user id: merging would give two.
    const ids: Ident[] = [
      { type: "user_id", value: "u-2" },
      { type: "anonymous_id", value: "a-shared" },
    ];
    const existing = (kept: readonly Ident[]) => (kept.some((k) => k.value === "a-shared") ? onProfile : []);
    expect(rules.withinLimits(ids, existing)).toEqual({
      kept: [{ type: "user_id", value: "u-2" }],
      dropped: [{ type: "anonymous_id", value: "a-shared" }],
    });
    // Within limits: nothing dropped.
    expect(rules.withinLimits([{ type: "email", value: "a@x.org" }], () => onProfile).dropped).toEqual([]);
  });

  it("counts only identifiers added within a limit's window", () => {
    const windowed = compileRules(
      parseMeshConfig(`
workspaces:
  - id: ws
    identity:
      identifiers:
        - { type: user_id, field: userId, limit: 1 }
        - { type: email, field: traits.email, normalize: email, limit: 2, limitWindow: 30d }
`).workspaces[0]!.identity,
    );
    const now = Date.parse("2026-11-30T12:00:00Z");
    const day = 86_400_000;
    const onProfile = [
      { type: "user_id", value: "u-1" },
      { type: "email", value: "old@x.org", addedAtMs: now - 40 * day },
      { type: "email", value: "recent@x.org", addedAtMs: now - 2 * day },
    ];
    const ids: Ident[] = [
      { type: "user_id", value: "u-1" },
      { type: "email", value: "third@x.org" },
    ];
    // The old one has left the window: two in 30 days, within the limit.
    expect(windowed.withinLimits(ids, () => onProfile, now).dropped).toEqual([]);
    // Both recent: a third would be too many.
    const recent = onProfile.map((i) => (i.type === "email" ? { ...i, addedAtMs: now - day } : i));
    expect(windowed.withinLimits(ids, () => recent, now).dropped).toEqual([
      { type: "email", value: "third@x.org" },
    ]);
  });
});
