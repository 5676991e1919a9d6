/** The declarative mesh configuration: write keys, segments, journeys, channels. */
import { z } from "zod";

const token = z
  .string()
  .regex(/^[A-Za-z0-9_-]+$/, "must be letters, digits, '_' or '-' (it is used as a NATS subject token)");

/** Duration: `500ms`, `30s`, `5m`, `1h`, `2d`, parsed to milliseconds. */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v.trim());
  if (!m) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `"${v}" is not a duration (e.g. 500ms, 30s, 5m, 1h, 2d)`,
    });
    return z.NEVER;
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms"];
  return Number(m[1]) * unit;
});

export const writeKeySchema = z.object({
  key: z.string().min(8, "write keys must have at least 8 characters"),
  source: token,
});

export const segmentSchema = z.object({
  name: token,
  description: z.string().optional(),
  /** CEL over `profile` (`profile.profile_id`, `profile.traits`, `profile.computed_traits`, `profile.identifiers`) and `event` (`name`, `type`, `properties`). */
  condition: z.string().min(1),
});

export const actionSchema = z.object({
  channel: token,
  purpose: z.enum(["marketing", "transactional", "service"]).default("marketing"),
  priority: z.number().int().min(0).max(100).default(50),
  /** How long after it is due the action stays relevant (not_after = due + relevance). */
  relevance: duration.optional(),
  /** Values may reference profile fields as `{{traits.first_name}}`, `{{profile_id}}`. */
  payload: z.record(z.unknown()).default({}),
});

const timeOfDay = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, "must be a time of day HH:MM (00:00–23:59)");

/** A fixed date at a local time in the customer's own time zone. */
export const dateTriggerSchema = z.union([
  /** Every year on the month and day of a date trait (`YYYY-MM-DD` or `MM-DD`), e.g. a birthday. */
  z.object({ trait: z.string().min(1), at: timeOfDay }).strict(),
  /** Once, on a calendar date (`YYYY-MM-DD`), e.g. a holiday. */
  z
    .object({ on: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "must be a date YYYY-MM-DD"), at: timeOfDay })
    .strict(),
]);

/** An arm of a journey's branches (the output type; arms nest). */
export interface JourneyArm {
  /** CEL over the profile as it is when the branches are reached; none: otherwise. */
  when?: string | undefined;
  wait?: number | undefined;
  waitUntil?: string | undefined;
  action?: z.output<typeof actionSchema> | undefined;
  branches?: JourneyArm[] | undefined;
}

/**
 * One arm: taken when its `when` holds (the first that does, in order); then its own wait, its
 * action (if any), and its own branches (if any) once that wait is over.
 */
export const journeyArmSchema: z.ZodType<JourneyArm, z.ZodTypeDef, unknown> = z.lazy(() =>
  z
    .object({
      when: z.string().min(1).optional(),
      wait: duration.optional(),
      waitUntil: timeOfDay.optional(),
      action: actionSchema.optional(),
      branches: z.array(journeyArmSchema).min(1).optional(),
    })
    .strict()
    .refine((a) => a.action !== undefined || a.branches !== undefined, {
      message: "an arm needs an action, branches, or both",
    }),
);

export const journeySchema = z
  .object({
    name: token,
    trigger: z.union([
      z.object({ segmentEntered: token }).strict(),
      z.object({ segmentExited: token }).strict(),
      z.object({ event: z.string().min(1), condition: z.string().optional() }).strict(),
      z.object({ date: dateTriggerSchema }).strict(),
    ]),
    /** How long after the trigger the action is due (e.g. an abandoned-cart reminder after 1h). */
    wait: duration.optional(),
    /** Then (or at once) until this local time of day in the customer's own time zone, `HH:MM`. */
    waitUntil: timeOfDay.optional(),
    /** What the journey does when the wait is over (a journey has an action, branches, or both). */
    action: actionSchema.optional(),
    /**
     * Condition branches, evaluated when the wait is over on the profile as it is then (not as it
     * was at the trigger): the first arm whose `when` holds is taken, an arm without `when` is the
     * otherwise; none taken ends the journey.
     */
    branches: z.array(journeyArmSchema).min(1).optional(),
    /**
     * What ends the journey for a customer: an event (with an optional CEL condition) or a
     * segment entry or exit. Everything the journey has pending for them is cancelled.
     */
    exit: z
      .array(
        z.union([
          z.object({ event: z.string().min(1), condition: z.string().optional() }).strict(),
          z.object({ segmentEntered: token }).strict(),
          z.object({ segmentExited: token }).strict(),
        ]),
      )
      .default([]),
    /**
     * once: at most once per profile, ever; every: once per trigger; `{ oncePer: 7d }`: at most once
     * per profile within that long (a trigger sooner after the last start is ignored).
     */
    reentry: z.union([z.enum(["once", "every"]), z.object({ oncePer: duration }).strict()]).default("once"),
  })
  .refine((j) => j.action !== undefined || j.branches !== undefined, {
    message: "a journey needs an action, branches, or both",
    path: ["action"],
  });

/** One identifier type of a workspace's identity rules. */
export const identifierRuleSchema = z.object({
  /** The identifier type, e.g. `user_id`, `email`, `phone`, `loyalty_number`. */
  type: token,
  /**
   * Where in the event it is read: `userId`, `anonymousId`, `traits.<name>` (identify traits and
   * `context.traits`), `context.device.id`, `context.<name>`, `properties.<name>`.
   */
  field: z.string().regex(/^(userId|anonymousId|traits\.[\w.]+|context\.[\w.]+|properties\.[\w.]+)$/, {
    message: "must be userId, anonymousId, traits.<name>, context.<path> or properties.<name>",
  }),
  /** How values are normalised before they are compared. */
  normalize: z.enum(["none", "trim", "email", "phone"]).default("trim"),
  /** At most this many identifiers of this type on one profile; an event that would exceed it does not merge. */
  limit: z.number().int().positive().optional(),
  /**
   * With `limit`: only identifiers added within this long count towards it (e.g. at most 5 emails
   * added in 30 days); none: all of them, ever.
   */
  limitWindow: duration.optional(),
});

/** A workspace's identity rules; identifiers are listed in priority order, strongest first. */
export const identitySchema = z.object({
  identifiers: z.array(identifierRuleSchema).min(1, "at least one identifier type is needed"),
  /** Values never used as identifiers: exact (case-insensitive) or `/regex/flags`. */
  blocked: z.array(z.string()).default([]),
});

/** The identity rules of a workspace that declares none: Segment's defaults. */
export const defaultIdentity: z.output<typeof identitySchema> = {
  identifiers: [
    { type: "user_id", field: "userId", normalize: "trim", limit: 1 },
    { type: "email", field: "traits.email", normalize: "email" },
    { type: "anonymous_id", field: "anonymousId", normalize: "trim" },
  ],
  blocked: ["null", "undefined", "none", "nil", "0", "anonymous", "unknown", "[object Object]"],
};

/** A trait identity computes from events: `orders_30d`, `lifetime_value`, `last_seen_at`. */
export const computedTraitSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an identifier (letters, digits, '_')"),
    op: z.enum(["count", "sum", "min", "max", "first", "last"]),
    /** The event name it counts (track name, page/screen name); `*` for every event. */
    event: z.string().min(1),
    /** The event property it reads; required for sum, min and max; first/last without it record the event time. */
    property: z.string().optional(),
    /**
     * Only events within this long before now count (in buckets of a thirtieth of the window, 1 s to
     * a day, so a value slides up to one bucket late); none: all time. Identity re-publishes the
     * profile when a value slides, so segments over it change with the passage of time.
     */
    window: duration.optional(),
  })
  .refine((c) => !["sum", "min", "max"].includes(c.op) || c.property !== undefined, {
    message: "sum, min and max need a property",
    path: ["property"],
  });

/** A daily window of local time, `HH:MM`–`HH:MM` (may cross midnight). */
export const dailyWindowSchema = z
  .object({ start: timeOfDay, end: timeOfDay })
  .strict()
  .refine((w) => w.start !== w.end, { message: "start and end must differ", path: ["end"] });

/** Suppression policy of a workspace (channels add their own caps and quiet hours). */
export const suppressionPolicySchema = z
  .object({
    /** Quiet hours in the customer's local time; channels may override or switch them off. */
    quietHours: dailyWindowSchema.optional(),
    /** At most this many actions per customer per local day, across every channel. */
    dailyCap: z.number().int().positive().optional(),
    /** At most this many actions per customer per rolling 7 days, across every channel. */
    weeklyCap: z.number().int().positive().optional(),
    /** Which of several actions due at once goes first when a cap leaves room for only some. */
    capOrder: z.enum(["priority", "arrival"]).default("priority"),
    /** Purposes that caps, quiet hours and contact preferences do not apply to. */
    exemptPurposes: z.array(z.string()).default(["transactional"]),
    /** A later event that cancels pending actions: of the named journeys, or with the given cancel keys. */
    cancelOn: z
      .array(
        z
          .object({
            event: z.string().min(1),
            journeys: z.array(token).default([]),
            /** `{{profile_id}}` is replaced by the profile's id. */
            cancelKeys: z.array(z.string().min(1)).default([]),
          })
          .strict()
          .refine((c) => c.journeys.length + c.cancelKeys.length > 0, {
            message: "name at least one journey or cancel key",
          }),
      )
      .default([]),
  })
  .strict();

export const workspaceSchema = z.object({
  id: token,
  /** Default IANA time zone for customers without one. */
  timezone: z.string().default("UTC"),
  writeKeys: z.array(writeKeySchema).default([]),
  segments: z.array(segmentSchema).default([]),
  journeys: z.array(journeySchema).default([]),
  identity: identitySchema.default(defaultIdentity),
  computedTraits: z.array(computedTraitSchema).default([]),
  suppression: suppressionPolicySchema.default({}),
});

export const channelSchema = z.object({
  name: token,
  mode: z.enum(["respond", "inspire"]),
  /** Freshness objective: p99 of delivered-at minus due-at. */
  freshnessSlo: duration,
  /** Per-profile daily cap (in the customer's time zone); none when absent. */
  dailyCap: z.number().int().positive().optional(),
  /** Per-profile cap over a rolling 7 days; none when absent. */
  weeklyCap: z.number().int().positive().optional(),
  /** Overrides the workspace's quiet hours; `false`: none on this channel. */
  quietHours: z.union([dailyWindowSchema, z.literal(false)]).optional(),
  /** opt-out: contact unless the customer said no; opt-in: only after the customer said yes. */
  consent: z.enum(["opt-out", "opt-in"]).default("opt-out"),
  /**
   * false: the channel does not message the customer (ad audiences): caps, quiet hours and
   * contact preferences do not apply to it and it takes no cap slot; consent and lists still do.
   */
  contact: z.boolean().default(true),
  /** Deliveries in flight at once (per dispatcher replica); the `CONCURRENCY` variable overrides it. */
  concurrency: z.number().int().min(1).max(4096).optional(),
  /** At most this many deliveries a second to one destination, per replica. */
  rateLimit: z
    .object({ perSecond: z.number().positive(), burst: z.number().int().positive().optional() })
    .strict()
    .optional(),
  /** Deliver in batches: up to `maxSize` actions, or what has gathered after `maxWait`. */
  batch: z
    .object({ maxSize: z.number().int().min(1).max(10_000), maxWait: duration.default(200) })
    .strict()
    .optional(),
  /** Deliveries of one action before it is FAILED and dead-lettered (transient errors are retried with backoff). */
  maxAttempts: z.number().int().min(1).max(100).default(8),
  /** Stop calling a destination after this many transient failures in a row, for a cooldown that doubles while it stays down; `false`: never. */
  circuitBreaker: z
    .union([
      z.literal(false),
      z
        .object({
          failureThreshold: z.number().int().min(1).default(5),
          cooldown: duration.default(2000),
          maxCooldown: duration.default(60_000),
        })
        .strict(),
    ])
    .default({}),
  webhook: z
    .object({
      url: z.string().url(),
      timeout: duration.default(5000),
      headers: z.record(z.string()).default({}),
    })
    .optional(),
  /** The channel's own settings, validated by its dispatcher (see docs/adding-a-channel.md). */
  settings: z.record(z.unknown()).default({}),
});

export const meshConfigSchema = z.object({
  workspaces: z.array(workspaceSchema).min(1, "at least one workspace is needed"),
  channels: z.array(channelSchema).default([]),
});

export type MeshConfig = z.output<typeof meshConfigSchema>;
export type WorkspaceConfig = z.output<typeof workspaceSchema>;
export type SegmentConfig = z.output<typeof segmentSchema>;
export type JourneyConfig = z.output<typeof journeySchema>;
export type ActionConfig = z.output<typeof actionSchema>;
export type ChannelConfig = z.output<typeof channelSchema>;
export type IdentityConfig = z.output<typeof identitySchema>;
export type ComputedTraitConfig = z.output<typeof computedTraitSchema>;
export type IdentifierRule = z.output<typeof identifierRuleSchema>;
export type SuppressionPolicy = z.output<typeof suppressionPolicySchema>;
export type DailyWindow = z.output<typeof dailyWindowSchema>;
export type DateTrigger = z.output<typeof dateTriggerSchema>;
