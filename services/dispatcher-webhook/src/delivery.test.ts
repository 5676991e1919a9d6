import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DispatchSchema } from "@kairos/contracts";
import { classifyError, classifyStatus, requestBody } from "./delivery.js";
import { RequestTimeout } from "./http-post.js";

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

describe("requestBody", () => {
  it("carries the action, its payload, destinations and times", () => {
    const d = create(DispatchSchema, {
      intent: {
        actionId: "act_1",
        workspace: "ws",
        profileId: "p",
        channel: "webhook",
        journey: "j",
        payload: { a: 1 },
      },
      destinations: [{ type: "email", value: "a@b.c" }],
      dueAt: timestampFromMs(Date.parse("2026-11-22T10:00:00Z")),
    });
    expect(requestBody(d)).toMatchObject({
      action_id: "act_1",
      profile_id: "p",
      payload: { a: 1 },
      destinations: [{ type: "email", value: "a@b.c" }],
      due_at: "2026-11-22T10:00:00.000Z",
      not_after: null,
    });
  });
});
