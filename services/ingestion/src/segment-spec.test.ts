import { describe, expect, it } from "vitest";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { EventType } from "@kairos/contracts";
import { fromSegmentJson, MAX_EVENT_BYTES } from "./segment-spec.js";
import { sortJsonBody } from "./batch.js";
import { writeKeyFromAuthorization } from "./http-api.js";

const src = { workspace: "ws", source: "web" };
const opts = { ...src, receivedAtMs: 1_700_000_000_000, newId: () => "generated-id" };

describe("fromSegmentJson", () => {
  it("maps a track call, lifting the context fields the mesh reads", () => {
    const r = fromSegmentJson(
      {
        type: "track",
        event: "Order Completed",
        userId: 42,
        messageId: "m-1",
        properties: { revenue: 12.5 },
        context: { ip: "10.0.0.1", timezone: "Europe/Paris", library: { name: "analytics-node" } },
        timestamp: "2026-11-22T10:00:00.000Z",
      },
      { ...opts, expected: "track" },
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.event.type).toBe(EventType.TRACK);
    expect(r.event.name).toBe("Order Completed");
    expect(r.event.userId).toBe("42");
    expect(r.event.properties).toEqual({ revenue: 12.5 });
    expect(r.event.context?.timezone).toBe("Europe/Paris");
    expect(r.event.context?.extra).toEqual({ library: { name: "analytics-node" } });
    expect(timestampMs(r.event.timestamp!)).toBe(Date.parse("2026-11-22T10:00:00.000Z"));
    expect(timestampMs(r.event.receivedAt!)).toBe(opts.receivedAtMs);
    expect(r.event.workspace).toBe("ws");
  });

  it("generates a message id when none was sent", () => {
    const r = fromSegmentJson({ anonymousId: "a" }, { ...opts, expected: "page" });
    expect(r.ok && r.event.messageId).toBe("generated-id");
  });

  it.each([
    [{ event: "x" }, "track", "userId: either userId or anonymousId is required"],
    [{ userId: "u" }, "track", "event: a track call needs an event name"],
    [{ userId: "u", traits: [1] }, "identify", "traits: must be an object, got an array"],
    [{ userId: "u", previousId: "" }, "alias", "previousId: an alias call needs a previousId"],
    [{ userId: "u" }, "group", "groupId: a group call needs a groupId"],
    [{ userId: "u", timestamp: "yesterday" }, "page", 'timestamp: is not an ISO-8601 date: "yesterday"'],
    [{ userId: "u", type: "identify" }, "track", 'type: is "identify" but was sent to /v1/track'],
    [{ userId: { id: 1 } }, "identify", "userId: must be a string, got an object"],
  ] as const)("rejects %j sent to %s, naming the field", (raw, expected, reason) => {
    const r = fromSegmentJson(raw, { ...opts, expected });
    expect(r).toMatchObject({ ok: false, reason });
  });

  it("rejects an event over 32 KB", () => {
    const r = fromSegmentJson(
      { userId: "u", event: "big", properties: { blob: "x".repeat(MAX_EVENT_BYTES) } },
      { ...opts, expected: "track" },
    );
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/over the 32768-byte limit/);
  });
});

describe("sortJsonBody", () => {
  it("accepts the valid events of a batch and names the invalid ones by index", () => {
    const batch = Array.from({ length: 10 }, (_, i) => ({
      type: "track",
      event: "E",
      userId: `u${i}`,
      messageId: `m${i}`,
    }));
    batch[3] = { type: "track", userId: "u3", messageId: "m3" } as never;
    batch[7] = { type: "nope", userId: "u7" } as never;
    const sorted = sortJsonBody(
      { batch, context: { locale: "fr-FR" }, sentAt: "2026-11-22T10:00:00Z" },
      "batch",
      src,
      1,
      () => "id",
    );
    expect(sorted.valid).toHaveLength(8);
    expect(sorted.valid[0]!.context?.locale).toBe("fr-FR");
    expect(sorted.valid[0]!.sentAt).toBeDefined();
    expect(sorted.rejections.map((r) => [r.index, r.messageId])).toEqual([
      [3, "m3"],
      [7, ""],
    ]);
    expect(sorted.rejections[1]!.reason).toMatch(/^type: must be one of/);
  });

  it("refuses a batch body without a batch array", () => {
    expect(() => sortJsonBody({ events: [] }, "batch", src, 1, () => "id")).toThrow(
      "batch: must be an array of events",
    );
  });
});

describe("writeKeyFromAuthorization", () => {
  it("reads the basic-auth user name as the write key", () => {
    const h = `Basic ${Buffer.from("key-1:").toString("base64")}`;
    expect(writeKeyFromAuthorization(h)).toBe("key-1");
    expect(writeKeyFromAuthorization(`Basic ${Buffer.from("key-2").toString("base64")}`)).toBe("key-2");
    expect(writeKeyFromAuthorization("Bearer x")).toBeUndefined();
    expect(writeKeyFromAuthorization(undefined)).toBeUndefined();
  });
});
