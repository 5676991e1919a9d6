import { describe, expect, it } from "vitest";
import { DeferredIndex } from "./indexes.js";
import type { DeferredEntry } from "./stores.js";

const entry = (
  actionId: string,
  untilMs: number,
  profileId = "p",
  cancelKeys: string[] = [],
): DeferredEntry => ({
  workspace: "ws",
  profileId,
  actionId,
  untilMs,
  reason: "quiet_hours",
  priority: 50,
  intendedAtMs: 0,
  cancelKeys,
  intent: "",
});

describe("DeferredIndex", () => {
  it("returns what is due, earliest first, and keeps it until it is removed", () => {
    const idx = new DeferredIndex();
    for (const [k, t] of [
      ["c", 30],
      ["a", 10],
      ["b", 20],
      ["d", 40],
    ] as const)
      idx.apply(k, entry(k, t));
    expect(idx.due(25).map((r) => r.key)).toEqual(["a", "b"]);
    expect(idx.due(25).map((r) => r.key)).toEqual(["a", "b"]);
    idx.apply("a", undefined);
    expect(idx.due(35).map((r) => r.key)).toEqual(["b", "c"]);
    expect(idx.size).toBe(3);
  });

  it("follows a replaced entry to its new time", () => {
    const idx = new DeferredIndex();
    idx.apply("a", entry("a", 10));
    idx.apply("a", entry("a", 100));
    expect(idx.due(50)).toEqual([]);
    expect(idx.due(100).map((r) => r.untilMs)).toEqual([100]);
  });

  it("finds a profile's entries by cancel key", () => {
    const idx = new DeferredIndex();
    idx.apply("a", entry("a", 10, "p1", ["journey:cart:p1"]));
    idx.apply("b", entry("b", 10, "p1", ["journey:birthday:p1"]));
    idx.apply("c", entry("c", 10, "p2", ["journey:cart:p2"]));
    expect(idx.withCancelKeys("ws", "p1", ["journey:cart:p1"]).map((r) => r.key)).toEqual(["a"]);
    expect(idx.withCancelKeys("ws", "p3", ["x"])).toEqual([]);
  });

  it("orders 100,000 random entries", () => {
    const idx = new DeferredIndex();
    for (let i = 0; i < 100_000; i++) idx.apply(`k${i}`, entry(`k${i}`, Math.floor(Math.random() * 1e6)));
    const due = idx.due(1e6, 100_000).map((r) => r.untilMs);
    expect(due).toHaveLength(100_000);
    expect(due.every((t, i) => i === 0 || (due[i - 1] ?? 0) <= t)).toBe(true);
  });
});
