import { describe, expect, it } from "vitest";
import { MinHeap } from "./min-heap.js";

describe("MinHeap", () => {
  it("pops in key order whatever the push order, duplicates included", () => {
    const h = new MinHeap<number>((n) => n);
    const input = Array.from({ length: 500 }, (_, i) => (i * 7919) % 101);
    for (const n of input) h.push(n);
    expect(h.size).toBe(500);
    expect(h.peek()).toBe(0);
    const out: number[] = [];
    for (let n = h.pop(); n !== undefined; n = h.pop()) out.push(n);
    expect(out).toEqual([...input].sort((a, b) => a - b));
    expect(h.pop()).toBeUndefined();
  });
});
