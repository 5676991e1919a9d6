import { describe, expect, it } from "vitest";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { ProfileChangedSchema, type ProfileChanged } from "@kairos/contracts";
import { parseMeshConfig } from "@kairos/mesh-config";
import { compileCondition } from "./conditions.js";
import {
  actionIdFor,
  compileWorkspace,
  emptyState,
  evaluate,
  hasJourneys,
  journeysToHandOver,
  renderPayload,
  restoredState,
  withJourneysOf,
} from "./plan.js";

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

describe("journeys with a wait and exit rules", () => {
  const cart = compileWorkspace(
    parseMeshConfig(`
workspaces:
  - id: ws
    segments:
      - name: vip
        condition: 'has(profile.traits.vip) && profile.traits.vip == "yes"'
    journeys:
      - name: abandoned-cart
        trigger: { event: Product Added }
        wait: 1h
        reentry: every
        exit:
          - { event: Order Completed, condition: 'event.properties.revenue > 0.0' }
          - { segmentEntered: vip }
        action: { channel: webhook, relevance: 1d }
channels:
  - { name: webhook, mode: inspire, freshnessSlo: 30s, webhook: { url: "http://127.0.0.1:1/x" } }
`).workspaces[0]!,
  );
  const added = (v: number) => change(v, {}, { eventName: "Product Added" });

  it("a purchase after the trigger exits the journey once; before any trigger it does nothing", () => {
    const before = evaluate(
      cart,
      change(1, {}, { eventName: "Order Completed", eventProperties: { revenue: 5 } }),
      emptyState(),
      0,
    );
    expect(before.plan.exits).toBeUndefined();

    const triggered = evaluate(cart, added(2), before.next, 1000);
    expect(triggered.plan.firings.map((f) => f.journey)).toEqual(["abandoned-cart"]);
    // In the journey until its action's deadline: wait + relevance.
    expect(triggered.next.inJourney).toEqual({ "abandoned-cart": 1000 + 3_600_000 + 86_400_000 });

    const free = evaluate(
      cart,
      change(3, {}, { eventName: "Order Completed", eventProperties: { revenue: 0 } }),
      triggered.next,
      2000,
    );
    expect(free.plan.exits).toBeUndefined(); // the exit's condition is false

    const bought = evaluate(
      cart,
      change(4, {}, { eventName: "Order Completed", eventProperties: { revenue: 30 } }),
      free.next,
      3000,
    );
    expect(bought.plan.exits).toEqual([{ journey: "abandoned-cart", reason: "event Order Completed" }]);
    expect(bought.next.inJourney).toBeUndefined();

    const again = evaluate(
      cart,
      change(5, {}, { eventName: "Order Completed", eventProperties: { revenue: 30 } }),
      bought.next,
      4000,
    );
    expect(again.plan.exits).toBeUndefined();
  });

  it("exits on a segment entry, and a trigger in the same change starts anew", () => {
    const triggered = evaluate(cart, added(1), emptyState(), 0);
    const vip = evaluate(cart, change(2, { vip: "yes" }, { eventName: "Product Added" }), triggered.next, 10);
    expect(vip.plan.exits).toEqual([{ journey: "abandoned-cart", reason: "entered segment vip" }]);
    expect(vip.plan.firings.map((f) => f.journey)).toEqual(["abandoned-cart"]);
    expect(vip.next.inJourney?.["abandoned-cart"]).toBeGreaterThan(10);
  });

  it("carries a merged-away profile's journey to its survivor, whose purchase then exits it", () => {
    // The cart was filled anonymously; the login (the survivor's change 8) merged that profile into
    // the customer's older one.
    const anon = evaluate(cart, added(1), emptyState(), 0).next;
    const customer = evaluate(cart, change(7, { name: "Ada" }), emptyState(), 0).next;
    expect(hasJourneys(customer)).toBe(false);
    expect(hasJourneys(anon)).toBe(true);
    const handed = journeysToHandOver(cart, customer, anon, "p-anon", 8);
    expect(handed).toEqual(["abandoned-cart"]);
    const joined = withJourneysOf(customer, anon, "p-anon", handed);
    expect(joined).toMatchObject({ version: 7, inJourney: anon.inJourney, members: customer.members });
    // Handed over again after a stop: the same journeys, and nothing more changes.
    expect(journeysToHandOver(cart, joined, anon, "p-anon", 8)).toEqual(handed);
    expect(withJourneysOf(joined, anon, "p-anon", handed)).toEqual(joined);
    // The merged-away profile's removal exits nothing: its journey went to the survivor.
    const left = { ...anon, handedOver: handed };
    expect(evaluate(cart, change(99, {}, { deleted: true }), left, 10).plan.exits).toBeUndefined();
    const bought = evaluate(
      cart,
      change(8, {}, { eventName: "Order Completed", eventProperties: { revenue: 30 } }),
      joined,
      20,
    );
    expect(bought.plan.exits).toEqual([{ journey: "abandoned-cart", reason: "event Order Completed" }]);
  });

  it("hands over nothing to a survivor evaluated past the merge: the journey is cancelled instead", () => {
    // The purchase (change 9) was decided before the merge (change 8) came by, without the cart.
    const anon = evaluate(cart, added(1), emptyState(), 0).next;
    const customer = evaluate(cart, change(9, {}, { eventName: "Order Completed" }), emptyState(), 0).next;
    const handed = journeysToHandOver(cart, customer, anon, "p-anon", 8);
    expect(handed).toEqual([]);
    expect(withJourneysOf(customer, anon, "p-anon", handed).inJourney).toBeUndefined();
    const removed = evaluate(cart, change(99, {}, { deleted: true }), { ...anon, handedOver: handed }, 10);
    expect(removed.plan.exits).toEqual([{ journey: "abandoned-cart", reason: "profile_deleted" }]);
  });

  it("keeps one start per customer of a journey both profiles are in, but of a reentry: every one", () => {
    const twice = compileWorkspace(
      parseMeshConfig(`
workspaces:
  - id: ws
    journeys:
      - { name: cart, trigger: { event: Product Added }, wait: 1h, reentry: every, exit: [{ event: Order Completed }], action: { channel: webhook } }
      - { name: intro, trigger: { event: Product Added }, wait: 1d, reentry: once, exit: [{ event: Order Completed }], action: { channel: webhook } }
      - { name: tips, trigger: { event: Tip }, wait: 1d, reentry: { oncePer: 7d }, exit: [{ event: Order Completed }], action: { channel: webhook } }
channels:
  - { name: webhook, mode: inspire, freshnessSlo: 30s, webhook: { url: "http://127.0.0.1:1/x" } }
`).workspaces[0]!,
    );
    const anon = evaluate(twice, change(1, {}, { eventName: "Tip" }), emptyState(), 0).next;
    const both = evaluate(twice, added(2), anon, 0).next;
    const customer = evaluate(twice, added(3), emptyState(), 5).next;
    expect(journeysToHandOver(twice, customer, both, "p-anon", 4).sort()).toEqual(["cart", "tips"]);
    const joined = withJourneysOf(customer, both, "p-anon", ["cart", "tips"]);
    expect(joined.firedOnce).toEqual(["intro"]);
    expect(Object.keys(joined.lastStarted ?? {}).sort()).toEqual(["tips"]);
    // The merged-away profile's own start of `intro` is cancelled with it; the survivor's stays.
    const removed = evaluate(
      twice,
      change(99, {}, { deleted: true }),
      { ...both, handedOver: ["cart", "tips"] },
      10,
    );
    expect(removed.plan.exits).toEqual([{ journey: "intro", reason: "profile_deleted" }]);
  });

  it("gives a profile split back off its survivor the journeys still pending for it", () => {
    const anon = evaluate(cart, added(1), emptyState(), 0).next;
    const merged = evaluate(
      cart,
      change(99, {}, { deleted: true }),
      { ...anon, handedOver: ["abandoned-cart"] },
      10,
    ).next;
    const restored = restoredState(merged, 20);
    expect(restored).toMatchObject({ version: 0, members: {}, inJourney: anon.inJourney });
    expect(restored.handedOver).toBeUndefined();
    expect(restoredState(merged, 3_600_000 + 86_400_000 + 1).inJourney).toBeUndefined();
  });

  it("forgets a journey whose action is past its deadline", () => {
    const triggered = evaluate(cart, added(1), emptyState(), 0);
    const late = evaluate(
      cart,
      change(2, {}, { eventName: "Order Completed", eventProperties: { revenue: 9 } }),
      triggered.next,
      3_600_000 + 86_400_000 + 1,
    );
    expect(late.plan.exits).toBeUndefined();
  });

  it("refuses an exit on an unknown segment or with bad CEL, naming the field", () => {
    expect(() =>
      parseMeshConfig(`
workspaces:
  - id: ws
    journeys:
      - name: j
        trigger: { event: A }
        exit: [{ segmentExited: nope }, { event: B, condition: "((" }]
        action: { channel: webhook }
channels:
  - { name: webhook, mode: inspire, freshnessSlo: 30s }
`),
    ).toThrow(
      /journeys\[0\]\.exit\[0\]: unknown segment "nope"[\s\S]*journeys\[0\]\.exit\[1\]\.condition: invalid CEL/,
    );
  });
});
