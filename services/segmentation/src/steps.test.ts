import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ProfileChangedSchema } from "@kairos/contracts";
import { parseMeshConfig } from "@kairos/mesh-config";
import { bindingsOf } from "./conditions.js";
import { compileWorkspace, emptyState, evaluate } from "./plan.js";
import { chooseArm, compileArms, dueAfterWait, horizonOf, nodeAt } from "./steps.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const ws = parseMeshConfig(`
workspaces:
  - id: ws
    timezone: Europe/London
    journeys:
      - name: cart
        trigger: { event: Product Added }
        reentry: every
        wait: 1h
        branches:
          - when: 'profile.traits.plan == "gold"'
            action: { channel: webhook, relevance: 2h }
          - when: 'profile.traits.broken.deeper == 1'
            action: { channel: webhook }
          - action: { channel: webhook, relevance: 1d }
            branches:
              - waitUntil: "09:00"
                wait: 2d
                branches: [{ action: { channel: webhook, relevance: 6h } }]
      - name: tip
        trigger: { event: Tip Requested }
        reentry: { oncePer: 7d }
        action: { channel: webhook }
channels:
  - { name: webhook, mode: inspire, freshnessSlo: 30s, webhook: { url: "http://127.0.0.1:1/x" } }
`).workspaces[0]!;
const cart = ws.journeys[0]!;
const profile = (traits: Record<string, string>) =>
  bindingsOf(create(ProfileChangedSchema, { profileId: "p", profile: { profileId: "p", traits } }));

describe("journey branches", () => {
  it("addresses arms by path", () => {
    expect(nodeAt(cart, [])).toBe(cart);
    expect(nodeAt(cart, [2, 0])?.wait).toBe(2 * DAY);
    expect(nodeAt(cart, [5])).toBeUndefined();
  });

  it("takes the first arm that holds, counts a failing condition as not holding, and falls to the otherwise", () => {
    const arms = compileArms(cart);
    expect([...arms.keys()]).toEqual(["0", "1", "2", "2.0", "2.0.0"]);
    expect(chooseArm(cart, arms, [], profile({ plan: "gold" }))).toEqual({ index: 0, errors: [] });
    const other = chooseArm(cart, arms, [], profile({ plan: "silver" }));
    expect(other.index).toBe(2);
    expect(other.errors.map((e) => e.path)).toEqual(["1"]);
    expect(chooseArm(cart, arms, [2], profile({})).index).toBe(0);
  });

  it("waits a duration, then until a local time of day in the customer's zone", () => {
    const from = Date.parse("2026-12-01T20:00:00Z");
    const arm = nodeAt(cart, [2, 0])!;
    expect(new Date(dueAfterWait(arm, {}, "Europe/London", from)).toISOString()).toBe(
      "2026-12-04T09:00:00.000Z",
    );
    expect(
      new Date(dueAfterWait(arm, { timezone: "America/New_York" }, "Europe/London", from)).toISOString(),
    ).toBe("2026-12-04T14:00:00.000Z");
  });

  it("keeps a customer in the journey for its longest path", () => {
    // 1h, then the longest arm: the second's action has no relevance, so 30 days.
    expect(horizonOf(cart)).toBe(HOUR + 30 * DAY);
    // The otherwise arm alone: 2d + up to a day + 6h beats its own 1d relevance.
    expect(horizonOf(nodeAt(cart, [2])!)).toBe(2 * DAY + DAY + 6 * HOUR);
  });

  it("starts a once-per-window journey again only when the window has passed", () => {
    const compiled = compileWorkspace(ws);
    const tip = (version: number) =>
      create(ProfileChangedSchema, {
        workspace: "ws",
        profileId: "p",
        version: BigInt(version),
        eventId: `e${version}`,
        eventName: "Tip Requested",
        profile: { profileId: "p" },
      });
    const a = evaluate(compiled, tip(1), emptyState(), 0);
    expect(a.plan.firings).toHaveLength(1);
    const b = evaluate(compiled, tip(2), a.next, 6 * DAY);
    expect(b.plan.firings).toHaveLength(0);
    const c = evaluate(compiled, tip(3), b.next, 7 * DAY);
    expect(c.plan.firings).toHaveLength(1);
    expect(c.plan.firings[0]?.actionId).not.toBe(a.plan.firings[0]?.actionId);
  });

  it("names each start of a journey with branches, for its timers and actions", () => {
    const compiled = compileWorkspace(ws);
    const added = create(ProfileChangedSchema, {
      workspace: "ws",
      profileId: "p",
      version: 1n,
      eventId: "evt-1",
      eventName: "Product Added",
      profile: { profileId: "p" },
    });
    expect(evaluate(compiled, added, emptyState(), 0).plan.firings).toEqual([
      expect.objectContaining({ journey: "cart", instance: "evt-1" }),
    ]);
  });
});
