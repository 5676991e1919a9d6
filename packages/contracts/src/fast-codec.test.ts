import { describe, expect, it } from "vitest";
import {
  create,
  fromBinary,
  toBinary,
  ScalarType,
  type DescField,
  type DescMessage,
  type JsonValue,
} from "@bufbuild/protobuf";
import { StructSchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { contractFiles, ProfileChangedSchema, EventSchema } from "./index.js";
import * as codec from "./fast-codec.js";
import { compiled, fromBinaryFast, toBinaryFast } from "./fast-codec.js";
import { decodeUtf8, encodeUtf8 } from "./text-encoding.js";

/** A small deterministic generator (mulberry32), so a failure names its seed. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const samples = ["", "a", "u-123", "ünïcödé", "日本語", "emoji 🎉", "lone \ud800 surrogate", "x".repeat(300)];

function gen(r: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const str = () => (r() < 0.7 ? pick(samples) : `s${Math.floor(r() * 1e6)}`);
  const json = (depth: number): JsonValue => {
    const k = r();
    if (k < 0.2) return pick([0, -1, 1.5, 2 ** 40, -3e-7, 1e300]);
    if (k < 0.45) return str();
    if (k < 0.55) return r() < 0.5;
    if (k < 0.62) return null;
    if (depth > 2) return 7;
    if (k < 0.8) return Array.from({ length: Math.floor(r() * 4) }, () => json(depth + 1));
    return obj(depth + 1);
  };
  const obj = (depth: number): Record<string, JsonValue> =>
    Object.fromEntries(Array.from({ length: Math.floor(r() * 5) }, () => [str(), json(depth)]));
  const scalar = (t: ScalarType): unknown => {
    switch (t) {
      case ScalarType.STRING:
        return str();
      case ScalarType.BOOL:
        return r() < 0.5;
      case ScalarType.BYTES:
        return new Uint8Array(Array.from({ length: Math.floor(r() * 300) }, () => Math.floor(r() * 256)));
      case ScalarType.DOUBLE:
      case ScalarType.FLOAT:
        return pick([0, 1.5, -2.25, 1e10]);
      case ScalarType.INT32:
        return pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 300]);
      case ScalarType.UINT32:
        return pick([0, 1, 127, 128, 2 ** 32 - 1, 16384]);
      case ScalarType.INT64:
        return pick([0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 35n]);
      case ScalarType.UINT64:
        return pick([0n, 1n, 2n ** 64n - 1n, 2n ** 32n, 1_796_037_212_186n, 4_294_967_295n]);
      default:
        return 0;
    }
  };
  const field = (f: DescField, depth: number): unknown => {
    switch (f.fieldKind) {
      case "scalar":
        return scalar(f.scalar);
      case "enum":
        return pick(f.enum.values).number;
      case "message":
        return f.message.typeName === StructSchema.typeName ? obj(0) : message(f.message, depth + 1);
      case "list":
        return Array.from({ length: Math.floor(r() * 4) }, () =>
          f.listKind === "message"
            ? message(f.message, depth + 1)
            : f.listKind === "enum"
              ? pick(f.enum.values).number
              : scalar(f.scalar),
        );
      case "map":
        return Object.fromEntries(
          Array.from({ length: Math.floor(r() * 4) }, () => [
            str(),
            f.mapKind === "message"
              ? message(f.message, depth + 1)
              : f.mapKind === "enum"
                ? pick(f.enum.values).number
                : scalar(f.scalar),
          ]),
        );
    }
  };
  const message = (desc: DescMessage, depth: number): unknown => {
    const init: Record<string, unknown> = {};
    for (const f of desc.fields) {
      if (depth > 3 && f.fieldKind === "message") continue;
      if (r() < 0.75) init[f.localName] = field(f, depth);
    }
    return create(desc, init);
  };
  return (desc: DescMessage) => message(desc, 0) as Parameters<typeof toBinary>[1];
}

const allMessages = (): DescMessage[] => {
  const out: DescMessage[] = [];
  const walk = (m: DescMessage) => {
    out.push(m);
    m.nestedMessages.forEach(walk);
  };
  for (const f of contractFiles) f.messages.forEach(walk);
  return out;
};

describe("fast codec", () => {
  const messages = allMessages();

  it("writes the same bytes as protobuf-es and reads back the same messages, for every contract message", () => {
    expect(messages.length).toBeGreaterThan(20);
    // Every contract message is compiled (none handed to protobuf-es whole).
    expect(messages.filter((m) => !compiled(m)).map((m) => m.typeName)).toEqual([]);
    const fallbacks = codec.decodeFallbacks;
    for (const desc of messages) {
      for (let seed = 1; seed <= 60; seed++) {
        const m = gen(rng(seed * 7919 + desc.typeName.length))(desc);
        const expected = toBinary(desc, m);
        const got = toBinaryFast(desc, m);
        expect(Buffer.from(got).toString("hex"), `${desc.typeName} seed ${seed}`).toBe(
          Buffer.from(expected).toString("hex"),
        );
        expect(fromBinaryFast(desc, expected), `${desc.typeName} seed ${seed}`).toStrictEqual(
          fromBinary(desc, expected),
        );
      }
    }
    // None of it needed protobuf-es to read.
    expect(codec.decodeFallbacks).toBe(fallbacks);
  });

  it("reads what it does not expect through protobuf-es: unknown fields, merged messages, packed and unpacked", () => {
    const change = create(ProfileChangedSchema, {
      workspace: "w",
      profileId: "p",
      version: 3n,
      eventReceivedAt: create(TimestampSchema, { seconds: 5n, nanos: 6 }),
      changedTraits: { a: 1 },
    });
    const bytes = toBinary(ProfileChangedSchema, change);
    // An unknown field 99 (a newer writer): kept by protobuf-es as unknown, so the same here.
    const withUnknown = new Uint8Array([...bytes, 0x9a, 0x06, 3, 1, 2, 3]);
    expect(fromBinary(ProfileChangedSchema, withUnknown).$unknown).toHaveLength(1);
    const fallbacks = codec.decodeFallbacks;
    expect(fromBinaryFast(ProfileChangedSchema, withUnknown)).toStrictEqual(
      fromBinary(ProfileChangedSchema, withUnknown),
    );
    // The same message field twice: merged.
    const twice = new Uint8Array([
      ...bytes,
      ...toBinary(
        ProfileChangedSchema,
        create(ProfileChangedSchema, { eventReceivedAt: create(TimestampSchema, { nanos: 9 }) }),
      ),
    ]);
    expect(fromBinaryFast(ProfileChangedSchema, twice)).toStrictEqual(
      fromBinary(ProfileChangedSchema, twice),
    );
    expect(fromBinaryFast(ProfileChangedSchema, twice).eventReceivedAt).toMatchObject({
      seconds: 5n,
      nanos: 9,
    });
    expect(codec.decodeFallbacks).toBe(fallbacks + 3);
  });

  it("refuses malformed bytes as protobuf-es does", () => {
    const bytes = toBinary(
      EventSchema,
      create(EventSchema, { messageId: "m-1", workspace: "w", name: "Viewed" }),
    );
    const truncated = bytes.slice(0, bytes.length - 2);
    expect(() => fromBinary(EventSchema, truncated)).toThrow();
    expect(() => fromBinaryFast(EventSchema, truncated)).toThrow();
    // Invalid UTF-8 in a proto3 string field.
    const bad = new Uint8Array([(1 << 3) | 2, 2, 0xc3, 0x28]);
    expect(() => fromBinary(EventSchema, bad)).toThrow();
    expect(() => fromBinaryFast(EventSchema, bad)).toThrow();
  });

  it("encodes large messages (length prefixes of several bytes) the same", () => {
    const big = create(EventSchema, {
      messageId: "m",
      properties: Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`k${i}`, "v".repeat(i % 50)])),
    });
    expect(Buffer.from(toBinaryFast(EventSchema, big)).equals(Buffer.from(toBinary(EventSchema, big)))).toBe(
      true,
    );
    expect(fromBinaryFast(EventSchema, toBinary(EventSchema, big))).toStrictEqual(big);
  });
});

describe("UTF-8 for protobuf-es", () => {
  it("is the Text Encoding API's, for short and long, ASCII and not", () => {
    const te = new TextEncoder();
    const td = new TextDecoder();
    for (const s of [...samples, "a".repeat(64), "a".repeat(65), `${"a".repeat(63)}é`]) {
      expect(encodeUtf8(s)).toEqual(te.encode(s));
      expect(decodeUtf8(te.encode(s))).toBe(td.decode(te.encode(s)));
      expect(decodeUtf8(te.encode(s), true)).toBe(td.decode(te.encode(s)));
    }
    expect(() => decodeUtf8(new Uint8Array([0xc3, 0x28]), true)).toThrow();
    expect(decodeUtf8(new Uint8Array([0xc3, 0x28]))).toBe(td.decode(new Uint8Array([0xc3, 0x28])));
  });
});

describe("fast codec, where protobuf-es is particular", () => {
  it("drops a Struct key named __proto__ both ways, as protobuf-es does", () => {
    const traits = JSON.parse('{"__proto__": {"plan": "gold"}, "name": "Ann"}') as Record<string, JsonValue>;
    const e = create(EventSchema, { messageId: "m", traits });
    const bytes = toBinary(EventSchema, e);
    expect(Buffer.from(toBinaryFast(EventSchema, e)).equals(Buffer.from(bytes))).toBe(true);
    // A writer that did put it on the wire: read without touching the prototype.
    const sneaky = toBinary(
      EventSchema,
      create(EventSchema, { messageId: "m", traits: { name: "Ann", zzzzzzzzz: { plan: "gold" } } }),
    );
    const patched = Buffer.from(
      Buffer.from(sneaky).toString("latin1").replace("zzzzzzzzz", "__proto__"),
      "latin1",
    );
    const twin = Buffer.from(
      Buffer.from(sneaky).toString("latin1").replace("zzzzzzzzz", "otherkey_"),
      "latin1",
    );
    expect(patched.length).toBe(sneaky.length);
    const got = fromBinaryFast(EventSchema, new Uint8Array(patched)).traits!;
    expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
    expect(got.plan).toBeUndefined();
    expect(fromBinaryFast(EventSchema, new Uint8Array(twin)).traits).toHaveProperty("otherkey_");
  });

  it("writes -0 doubles in Struct values and null message fields as protobuf-es does", () => {
    const e = create(EventSchema, { messageId: "m", properties: { z: -0, n: Number.NaN } });
    expect(Buffer.from(toBinaryFast(EventSchema, e)).equals(Buffer.from(toBinary(EventSchema, e)))).toBe(
      true,
    );
    const withNull = {
      ...create(EventSchema, { messageId: "m" }),
      receivedAt: null,
    } as unknown as Parameters<typeof toBinaryFast<typeof EventSchema>>[1];
    expect(
      Buffer.from(toBinaryFast(EventSchema, withNull)).equals(Buffer.from(toBinary(EventSchema, withNull))),
    ).toBe(true);
  });

  it("leaves over-long tags and deep nesting to protobuf-es", () => {
    // Field 1 (message_id) with a six-byte tag: protobuf-es refuses it.
    const longTag = new Uint8Array([0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 0x61]);
    expect(() => fromBinary(EventSchema, longTag)).toThrow();
    expect(() => fromBinaryFast(EventSchema, longTag)).toThrow();
    let deep: JsonValue = 1;
    for (let i = 0; i < 40; i++) deep = { d: deep };
    const e = create(EventSchema, { messageId: "m", properties: { deep } });
    const bytes = toBinary(EventSchema, e);
    expect(fromBinaryFast(EventSchema, bytes)).toStrictEqual(fromBinary(EventSchema, bytes));
  });
});
