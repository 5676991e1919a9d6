import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { EventSchema, EventType } from "@kairos/contracts";
import { parseMeshConfig } from "@kairos/mesh-config";
import {
  applyComputed,
  bucketOf,
  computedValues,
  mergeComputed,
  nextWindowChange,
  slideWindows,
  type ComputedState,
} from "./computed.js";

const DAY = 86_400_000;
const rules = parseMeshConfig(`
workspaces:
  - id: ws
    computedTraits:
      - { name: orders_30d, op: count, event: Order Completed, window: 30d }
      - { name: lifetime_value, op: sum, event: Order Completed, property: revenue }
      - { name: biggest_order, op: max, event: Order Completed, property: revenue }
      - { name: smallest_order, op: min, event: Order Completed, property: revenue }
      - { name: first_sku, op: first, event: Order Completed, property: sku }
      - { name: last_seen_at, op: last, event: "*" }
`).workspaces[0]!.computedTraits;

const order = (revenue: unknown, sku = "s") =>
  create(EventSchema, {
    type: EventType.TRACK,
    name: "Order Completed",
    properties: { revenue: revenue as number, sku },
  });
const now = Date.parse("2026-11-22T12:00:00Z");

describe("computed traits", () => {
  it("counts, sums, takes min/max/first/last, and slides the window with time", () => {
    const s: ComputedState = {};
    applyComputed(s, rules, order(100, "a"), now - 40 * DAY, now - 40 * DAY);
    applyComputed(s, rules, order(20, "b"), now - 2 * DAY, now);
    applyComputed(s, rules, order("30", "c"), now - DAY, now);
    applyComputed(s, rules, create(EventSchema, { type: EventType.PAGE, name: "Home" }), now, now);
    expect(computedValues(s, rules, now)).toEqual({
      orders_30d: 2,
      lifetime_value: 150,
      biggest_order: 100,
      smallest_order: 20,
      first_sku: "a",
      last_seen_at: new Date(now).toISOString(),
    });
    // Thirty days later the two recent orders have left the window.
    expect(computedValues(s, rules, now + 30 * DAY).orders_30d).toBe(0);
  });

  it("skips a sum/min/max event whose property is not a number", () => {
    const s: ComputedState = {};
    applyComputed(s, rules, order("lots"), now, now);
    expect(computedValues(s, rules, now)).toMatchObject({ orders_30d: 1, lifetime_value: 0 });
  });

  it("merges two profiles' aggregates exactly", () => {
    const a: ComputedState = {};
    const b: ComputedState = {};
    applyComputed(a, rules, order(10, "late"), now - DAY, now);
    applyComputed(b, rules, order(5, "early"), now - 3 * DAY, now);
    applyComputed(b, rules, order(7, "mid"), now - DAY, now);
    mergeComputed(a, b);
    expect(computedValues(a, rules, now)).toMatchObject({
      orders_30d: 3,
      lifetime_value: 22,
      smallest_order: 5,
      first_sku: "early",
    });
  });

  it("says when a windowed value next slides, and slides it then", () => {
    const s: ComputedState = {};
    applyComputed(s, rules, order(20), now - 2 * DAY, now);
    applyComputed(s, rules, order(30), now - DAY, now);
    // The older order leaves orders_30d at the end of its UTC day plus 30 days.
    const dayStart = Math.floor((now - 2 * DAY) / DAY) * DAY;
    const first = nextWindowChange(s, rules, now);
    expect(first).toBe(dayStart + DAY + 30 * DAY);
    expect(computedValues(s, rules, first! - 1).orders_30d).toBe(2);
    expect(computedValues(s, rules, first!).orders_30d).toBe(1);
    expect(slideWindows(s, rules, first! - 1)).toBe(false);
    expect(slideWindows(s, rules, first!)).toBe(true);
    expect(computedValues(s, rules, first!).orders_30d).toBe(1);
    // Then the second, a day later; then nothing windowed is left to slide.
    expect(nextWindowChange(s, rules, first!)).toBe(first! + DAY);
    slideWindows(s, rules, first! + DAY);
    expect(nextWindowChange(s, rules, first! + DAY)).toBeUndefined();
  });

  it("keeps short windows in buckets of a thirtieth of the window, so they slide within it", () => {
    const short = parseMeshConfig(`
workspaces:
  - id: ws
    computedTraits:
      - { name: added_30m, op: count, event: Product Added, window: 30m }
      - { name: tiny, op: count, event: Product Added, window: 3s }
`).workspaces[0]!.computedTraits;
    expect(short.map(bucketOf)).toEqual([60_000, 1_000]);
    expect(bucketOf(rules[0]!)).toBe(DAY);
    const s: ComputedState = {};
    const added = create(EventSchema, { type: EventType.TRACK, name: "Product Added" });
    applyComputed(s, short, added, now + 10_500, now + 10_500);
    expect(computedValues(s, short, now + 10_500)).toEqual({ added_30m: 1, tiny: 1 });
    // tiny: the event's second ends at +11 s, so it is counted until +14 s.
    expect(nextWindowChange(s, short, now + 10_500)).toBe(now + 14_000);
    expect(computedValues(s, short, now + 13_999)).toEqual({ added_30m: 1, tiny: 1 });
    expect(computedValues(s, short, now + 14_000)).toEqual({ added_30m: 1, tiny: 0 });
    slideWindows(s, short, now + 14_000);
    // added_30m: its minute ends at +60 s, counted until 30 minutes later.
    expect(nextWindowChange(s, short, now + 14_000)).toBe(now + 60_000 + 30 * 60_000);
  });

  it("re-buckets state written under another window", () => {
    const s: ComputedState = {};
    applyComputed(s, rules, order(20), now - DAY, now); // day buckets (30d)
    const weekly = parseMeshConfig(`
workspaces:
  - id: ws
    computedTraits: [{ name: orders_30d, op: count, event: Order Completed, window: 3d }]
`).workspaces[0]!.computedTraits;
    applyComputed(s, weekly, order(5), now, now);
    expect(s.orders_30d?.bucketMs).toBe(bucketOf(weekly[0]!));
    expect(computedValues(s, weekly, now)).toEqual({ orders_30d: 2 });
    // Counted up to one bucket (2.4 h) past the window, never longer.
    expect(computedValues(s, weekly, now + 3 * DAY + bucketOf(weekly[0]!))).toEqual({ orders_30d: 0 });
  });

  it("refuses a sum without a property in the config", () => {
    expect(() =>
      parseMeshConfig(`
workspaces:
  - id: ws
    computedTraits: [{ name: x, op: sum, event: E }]
`),
    ).toThrow(/sum, min and max need a property/);
  });
});
