import { describe, expect, it } from "vitest";
import { KeyedLock } from "./keyed-lock.js";

const tick = () => new Promise((r) => setTimeout(r, 1));

describe("KeyedLock", () => {
  it("runs one key's work in order, other keys alongside, and forgets idle keys", async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const job = (key: string, n: number) =>
      lock.run(key, async () => {
        log.push(`${key}${n}+`);
        await tick();
        log.push(`${key}${n}-`);
      });
    await Promise.all([job("a", 1), job("a", 2), job("b", 1)]);
    expect(log.indexOf("a1-")).toBeLessThan(log.indexOf("a2+"));
    expect(log.indexOf("b1+")).toBeLessThan(log.indexOf("a1-"));
    expect(lock.size).toBe(0);
  });

  it("keeps going after a failure", async () => {
    const lock = new KeyedLock();
    await expect(lock.run("k", () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(await lock.run("k", async () => 42)).toBe(42);
  });
});
