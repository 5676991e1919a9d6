import { describe, expect, it } from "vitest";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { ProfileChangedSchema, type ProfileChanged } from "@kairos/contracts";
import { parseMeshConfig } from "@kairos/mesh-config";
import { compileCondition } from "./conditions.js";
import { actionIdFor, compileWorkspace, emptyState, evaluate, renderPayload } from "./plan.js";

const mesh = parseMeshConfig(`
workspaces:
  - id: ws
    segments:
      - name: gold
        condition: 'has(profile.traits.plan) && profile.traits.plan == "gold"'
      - name: broken
        condition: 'profile.traits.missing == 1'
    journeys:
      - name: welcome
        trigger: { segmentEntered: gold }
        action: { channel: webhook, relevance: 1h, payload: { hi: "Hello {{traits.first_name}} ({{profile_id}})" } }
      - name: goodbye
        trigger: { segmentExited: gold }
        reentry: every
        action: { channel: webhook }
      - name: big-order
        trigger: { event: Order Completed, condition: 'event.properties.revenue > 100.0' }
        reentry: every
        action: { channel: webhook }
channels:
  - { name: webhook, mode: inspire, freshnessSlo: 30s, webhook: { url: "http://127.0.0.1:1/x" } }
`);
const ws = compileWorkspace(mesh.workspaces[0]!);

function change(
  version: number,
  traits: Record<string, string>,
  over: { eventName?: string; eventProperties?: JsonObject; deleted?: boolean } = {},
): ProfileChanged {
  return create(ProfileChangedSchema, {
    workspace: "ws",
    profileId: "p1",
    version: BigInt(version),
    eventId: `e${version}`,
    profile: { profileId: "p1", traits },
    ...over,
  });
}

describe("evaluate", () => {
  it("enters a segment once, fires a once-journey once, exits and fires the exit journey every time", () => {
    const first = evaluate(ws, change(1, { plan: "gold", first_name: "Ada" }), emptyState(), 1000);
    expect(first.plan.transitions).toEqual([
      { segment: "gold", entered: true, reason: "condition became true" },
    ]);
    expect(first.plan.firings).toEqual([
      { journey: "welcome", actionId: actionIdFor("ws", "welcome", "p1") },
    ]);
    expect(first.errors).toEqual([{ segment: "broken", error: expect.stringMatching(/missing/) as string }]);

    const same = evaluate(ws, change(2, { plan: "gold" }), first.next, 2000);
    expect(same.plan.transitions).toEqual([]);

    const out = evaluate(ws, change(3, { plan: "basic" }), same.next, 3000);
    expect(out.plan.transitions).toMatchObject([{ segment: "gold", entered: false }]);
    expect(out.plan.firings.map((f) => f.journey)).toEqual(["goodbye"]);

    const back = evaluate(ws, change(4, { plan: "gold" }), out.next, 4000);
    expect(back.plan.transitions).toMatchObject([{ segment: "gold", entered: true }]);
    expect(back.plan.firings).toEqual([]); // welcome is once per profile
  });

  it("fires an event journey when its condition holds, with an action id per event", () => {
    const order = (v: number, revenue: number) =>
      change(v, {}, { eventName: "Order Completed", eventProperties: { revenue } });
    const small = evaluate(ws, order(1, 20), emptyState(), 1);
    expect(small.plan.firings).toEqual([]);
    const big = evaluate(ws, order(2, 500), small.next, 2);
    expect(big.plan.firings).toEqual([
      { journey: "big-order", actionId: actionIdFor("ws", "big-order", "p1", "e2") },
    ]);
  });

  it("exits every segment of a deleted profile", () => {
    const inGold = evaluate(ws, change(1, { plan: "gold" }), emptyState(), 1);
    const gone = evaluate(ws, change(2, {}, { deleted: true }), inGold.next, 2);
    expect(gone.plan.transitions).toEqual([{ segment: "gold", entered: false, reason: "profile_deleted" }]);
  });
});

describe("conditions and payloads", () => {
  it("reports a condition that does not parse, naming it", () => {
    expect(() => compileCondition("profile.traits.plan ==")).toThrow(
      /CEL condition "profile.traits.plan =="/,
    );
  });

  it("renders placeholders from traits, the profile id and the event", () => {
    const c = change(1, { first_name: "Ada" }, { eventProperties: { sku: "s-1" } });
    expect(
      renderPayload(
        { hi: "Hello {{traits.first_name}} ({{profile_id}})", sku: "{{event.properties.sku}}", n: 3 },
        c,
      ),
    ).toEqual({
      hi: "Hello Ada (p1)",
      sku: "s-1",
      n: 3,
    });
  });
});
