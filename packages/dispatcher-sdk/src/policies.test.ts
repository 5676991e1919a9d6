/** The pure delivery policies: rate limit, circuit breaker, batching, templates. */
import { describe, expect, it } from "vitest";
import { Batcher } from "./batcher.js";
import { CircuitBreaker } from "./circuit-breaker.js";
import { RateLimiter } from "./rate-limit.js";
import { escapeHtml, renderTemplate } from "./render.js";

describe("RateLimiter", () => {
  it("lets a burst through, then spaces reservations at the rate, per destination", () => {
    const rl = new RateLimiter({ perSecond: 10, burst: 2 });
    expect([rl.reserve("a", 0), rl.reserve("a", 0), rl.reserve("a", 0), rl.reserve("a", 0)]).toEqual([
      0, 0, 100, 200,
    ]);
    // Another destination has its own bucket.
    expect(rl.reserve("b", 0)).toBe(0);
    // After a quiet second the bucket is full again, but never above the burst.
    expect([rl.reserve("a", 1300), rl.reserve("a", 1300), rl.reserve("a", 1300)]).toEqual([0, 0, 100]);
  });

  it("takes back a reservation that was not used", () => {
    const rl = new RateLimiter({ perSecond: 1, burst: 1 });
    expect(rl.reserve("a", 0)).toBe(0);
    expect(rl.reserve("a", 0)).toBe(1000);
    rl.refund("a");
    expect(rl.reserve("a", 0)).toBe(1000);
  });

  it("refuses a rate that is not positive", () => {
    expect(() => new RateLimiter({ perSecond: 0 })).toThrow(/positive/);
  });
});

describe("CircuitBreaker", () => {
  const policy = { failureThreshold: 3, cooldownMs: 1000, maxCooldownMs: 4000 };

  it("opens after the threshold of failures in a row and holds calls for the cooldown", () => {
    const cb = new CircuitBreaker(policy);
    expect(cb.failure("d", 0)).toBe(false);
    expect(cb.failure("d", 10)).toBe(false);
    expect(cb.failure("d", 20)).toBe(true);
    expect(cb.state("d", 20)).toBe("open");
    expect(cb.admit("d", 520)).toEqual({ allowed: false, retryInMs: 500 });
    // Other destinations are unaffected.
    expect(cb.admit("other", 520)).toEqual({ allowed: true });
  });

  it("lets one probe through when half-open; its success closes, its failure doubles the cooldown", () => {
    const cb = new CircuitBreaker(policy);
    for (let i = 0; i < 3; i++) cb.failure("d", 0);
    expect(cb.admit("d", 1000)).toEqual({ allowed: true });
    expect(cb.admit("d", 1001).allowed).toBe(false); // one probe at a time
    expect(cb.failure("d", 1100)).toBe(true);
    expect(cb.admit("d", 2000)).toEqual({ allowed: false, retryInMs: 1100 });
    expect(cb.admit("d", 3100)).toEqual({ allowed: true });
    cb.success("d");
    expect(cb.state("d", 3100)).toBe("closed");
    expect(cb.admit("d", 3100)).toEqual({ allowed: true });
  });

  it("a success in between resets the count", () => {
    const cb = new CircuitBreaker(policy);
    cb.failure("d", 0);
    cb.failure("d", 0);
    cb.success("d");
    expect(cb.failure("d", 0)).toBe(false);
    expect(cb.state("d", 0)).toBe("closed");
  });

  it("never cools down for longer than the maximum", () => {
    const cb = new CircuitBreaker(policy);
    for (let i = 0; i < 3; i++) cb.failure("d", 0);
    let t = 0;
    for (let i = 0; i < 5; i++) {
      const a = cb.admit("d", t);
      t += a.allowed ? 0 : a.retryInMs;
      expect(cb.admit("d", t).allowed).toBe(true);
      cb.failure("d", t);
    }
    expect(cb.admit("d", t)).toEqual({ allowed: false, retryInMs: 4000 });
  });
});

describe("Batcher", () => {
  it("sends a full batch at once and the rest after the wait, each caller getting its own result", async () => {
    const sent: number[][] = [];
    const b = new Batcher<number, string>({ maxSize: 3, maxWaitMs: 20 }, (items) => {
      sent.push(items);
      return Promise.resolve(items.map((i) => `r${i}`));
    });
    const results = await Promise.all([1, 2, 3, 4].map((i) => b.add(i)));
    expect(results).toEqual(["r1", "r2", "r3", "r4"]);
    expect(sent).toEqual([[1, 2, 3], [4]]);
  });

  it("rejects every item of a batch whose delivery throws, and of one that answers for the wrong count", async () => {
    const b = new Batcher<number, string>({ maxSize: 2, maxWaitMs: 5 }, () =>
      Promise.reject(new Error("down")),
    );
    await expect(Promise.all([b.add(1), b.add(2)])).rejects.toThrow("down");
    const short = new Batcher<number, string>({ maxSize: 2, maxWaitMs: 5 }, () => Promise.resolve(["x"]));
    await expect(Promise.all([short.add(1), short.add(2)])).rejects.toThrow(/2 returned 1/);
  });

  it("drains what is collected", async () => {
    const b = new Batcher<number, number>({ maxSize: 100, maxWaitMs: 60_000 }, (items) =>
      Promise.resolve(items),
    );
    const p = b.add(7);
    await b.drain();
    await expect(p).resolves.toBe(7);
  });
});

describe("renderTemplate", () => {
  const vars = { profile_id: "p-1", traits: { first_name: "Ada", tags: ["a"] }, payload: { offer: "10%" } };

  it("fills placeholders from nested fields, with fallbacks for missing ones", () => {
    expect(renderTemplate("Hi {{ traits.first_name }}, {{payload.offer}} off ({{profile_id}})", vars)).toBe(
      "Hi Ada, 10% off (p-1)",
    );
    expect(renderTemplate("Hi {{traits.last_name|there}}{{traits.nope}}", vars)).toBe("Hi there");
    expect(renderTemplate("{{traits.tags}}", vars)).toBe('["a"]');
  });

  it("escapes values, not the template, for HTML", () => {
    expect(
      renderTemplate("<b>{{traits.first_name}}</b>", { traits: { first_name: "<script>" } }, escapeHtml),
    ).toBe("<b>&#60;script&#62;</b>");
  });
});
