import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DispatchSchema } from "@kairos/contracts";
import { actionOf } from "@kairos/dispatcher-sdk";
import { requestBody } from "./delivery.js";

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
    expect(requestBody(actionOf(d, 1)!)).toMatchObject({
      action_id: "act_1",
      profile_id: "p",
      payload: { a: 1 },
      destinations: [{ type: "email", value: "a@b.c" }],
      due_at: "2026-11-22T10:00:00.000Z",
      not_after: null,
    });
  });
});
