import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { EventSchema, EventType } from "@kairos/contracts";
import { parseMeshConfig } from "@kairos/mesh-config";
import { applyComputed, computedValues, mergeComputed, type ComputedState } from "./computed.js";

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
