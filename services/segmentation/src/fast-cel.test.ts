import { describe, expect, it } from "vitest";
import { parse } from "@bufbuild/cel";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { ProfileChangedSchema } from "@kairos/contracts";
import { bindingsOf, compileCondition } from "./conditions.js";
import { compileFast } from "./fast-cel.js";

const expressions = [
  'has(profile.traits.plan) && profile.traits.plan == "gold"',
  'profile.traits.plan == "gold"',
  'profile.traits.plan != "gold" || has(profile.traits.vip)',
  "double(profile.traits.score) > 50.0",
  "profile.traits.score > 50.0",
  "profile.traits.score > 50",
  "profile.traits.score >= 50.0 && profile.traits.score < 60.0",
  "has(profile.computed.orders) && double(profile.computed.orders) >= 3.0",
  '!(profile.traits.plan == "free")',
  "profile.traits.vip",
  "profile.traits.vip == true",
  "profile.traits.missing == null",
  "profile.traits.nothing == null",
  'string(profile.traits.plan) == "gold"',
  'event.name == "Order Completed" && double(event.properties.revenue) > 100.0',
  "has(event.properties.revenue) && event.properties.revenue > 100.0",
  'profile.traits.city < "M"',
  "profile.traits.score == 55.0",
  'profile.traits.score == "55"',
  "size(profile.identifiers) > 1",
  '"gold" in profile.traits.tags',
  "profile.traits.plan",
  "false && profile.traits.nope == 1.0",
  "profile.traits.nope == 1.0 && false",
  "true || profile.traits.nope == 1.0",
  "profile.traits.nope == 1.0 || true",
];

const profiles: JsonObject[] = [
  { plan: "gold", score: 55, vip: true, city: "Leeds", tags: ["gold"], nothing: null },
  { plan: "free", score: 12.5, vip: false, city: "Ábo" },
  { plan: 3, score: "55" },
  {},
];
const computed: JsonObject[] = [{ orders: 4 }, {}, { orders: "many" }];
const events: JsonObject[] = [
  { name: "Order Completed", properties: { revenue: 150 } },
  { name: "Order Completed", properties: { revenue: "150" } },
  { name: "Page Viewed", properties: {} },
];

describe("the fast CEL path", () => {
  it("agrees with @bufbuild/cel on every expression and input, errors included", () => {
    let fastAnswers = 0;
    for (const expr of expressions) {
      const condition = compileCondition(expr);
      // What `@bufbuild/cel` alone says: the reference the fast path must agree with.
      const reference = compileCondition(expr, { fast: false });
      const fast = compileFast(parse(expr).expr);
      for (const traits of profiles)
        for (const c of computed)
          for (const e of events) {
            const bindings = bindingsOf(
              create(ProfileChangedSchema, {
                profileId: "p",
                eventName: e.name as string,
                eventProperties: e.properties as JsonObject,
                profile: { profileId: "p", traits, computedTraits: c },
              }),
            );
            const want = reference(bindings);
            expect({ expr, traits, c, e, got: condition(bindings) }).toEqual({
              expr,
              traits,
              c,
              e,
              got: want,
            });
            try {
              if (fast !== undefined) {
                fast(bindings.vars);
                fastAnswers++;
              }
            } catch {
              // unsure: CEL decided
            }
          }
    }
    // Most answers came from the fast path.
    expect(fastAnswers).toBeGreaterThan(300);
  });

  it("leaves what it does not cover to CEL", () => {
    expect(compileFast(parse("size(profile.identifiers) > 1").expr)).toBeUndefined();
    expect(compileFast(parse('"gold" in profile.traits.tags').expr)).toBeUndefined();
    expect(compileFast(parse('profile.traits.name.startsWith("A")').expr)).toBeUndefined();
  });
});
