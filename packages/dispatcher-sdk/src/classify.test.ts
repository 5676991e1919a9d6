import { describe, expect, it } from "vitest";
import { classifyError, classifyStatus, parseRetryAfter } from "./classify.js";
import { RequestTimeout } from "./http.js";

describe("classification", () => {
  it.each([
    [200, "delivered"],
    [204, "delivered"],
    [429, "retry"],
    [503, "retry"],
    [500, "retry"],
    [408, "retry"],
    [400, "fail"],
    [404, "fail"],
    [410, "fail"],
  ] as const)("HTTP %i is %s", (status, kind) => {
    expect(classifyStatus(status).kind).toBe(kind);
  });

  it("reads node:http errors and request timeouts too", () => {
    expect(classifyError(Object.assign(new Error("connect"), { code: "ECONNRESET" }))).toEqual({
      kind: "retry",
      reason: "network_econnreset",
    });
    expect(classifyError(new RequestTimeout(5000))).toEqual({ kind: "retry", reason: "timeout" });
  });

  it("retries timeouts and network errors, naming them", () => {
    expect(classifyError(Object.assign(new Error("t"), { name: "TimeoutError" }))).toEqual({
      kind: "retry",
      reason: "timeout",
    });
    expect(classifyError(new TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } }))).toEqual({
      kind: "retry",
      reason: "network_econnrefused",
    });
  });
});

describe("Retry-After", () => {
  const now = Date.parse("2026-11-24T10:00:00Z");
  it("is read in seconds or as an HTTP date, and carried on a retry", () => {
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter("Tue, 24 Nov 2026 10:00:10 GMT", now)).toBe(10_000);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(classifyStatus(429, "2", now)).toEqual({ kind: "retry", reason: "http_429", retryAfterMs: 2000 });
  });
});
