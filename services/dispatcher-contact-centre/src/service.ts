/**
 * The contact-centre channel (Respond mode, seconds): pushes the customer's
 * profile summary and an agent script to the CRM's webhook, so the agent who
 * takes the next call or chat knows what just happened and what to offer.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { z } from "zod";
import {
  classifyStatus,
  configSpecOf,
  iso,
  renderTemplate,
  startDispatcher,
  type Action,
  type ChannelDefinition,
  type DispatcherConfig,
  type DispatcherHandle,
} from "@kairos/dispatcher-sdk";
import type { StartOptions } from "@kairos/kit";
import { duration } from "@kairos/mesh-config";

export const settingsSchema = z
  .object({
    /** The CRM's webhook. */
    url: z.string().url(),
    timeout: duration.default(5000),
    headers: z.record(z.string()).default({}),
    /** The agent script; `{{traits.x}}`, `{{payload.x}}`, `{{journey}}`, `{{profile_id}}`. A payload `script` overrides it. */
    script: z.string().default("{{traits.first_name|The customer}} is in journey {{journey}}."),
    /** The traits shown to the agent (all when absent). */
    summaryTraits: z.array(z.string()).optional(),
  })
  .strict();

export type ContactCentreSettings = z.output<typeof settingsSchema>;

/** The CRM request: who the customer is, why the agent should care, and what to say. Pure. */
export function crmRequest(a: Action, s: ContactCentreSettings): JsonObject {
  const traits =
    s.summaryTraits === undefined
      ? a.traits
      : Object.fromEntries(s.summaryTraits.filter((t) => t in a.traits).map((t) => [t, a.traits[t] ?? null]));
  const vars = { traits: a.traits, payload: a.payload, journey: a.journey, profile_id: a.profileId };
  const script = typeof a.payload.script === "string" ? a.payload.script : s.script;
  return {
    action_id: a.actionId,
    workspace: a.workspace,
    journey: a.journey,
    priority: a.priority,
    agent_script: renderTemplate(script, vars),
    profile: {
      profile_id: a.profileId,
      identifiers: a.destinations.map((d) => ({ type: d.type, value: d.value })),
      traits,
    },
    payload: a.payload,
    due_at: iso(a.dueAtMs),
    not_after: iso(a.notAfterMs),
  };
}

export const contactCentreChannel: ChannelDefinition<ContactCentreSettings> = {
  service: "dispatcher-contact-centre",
  defaultChannel: "contact-centre",
  ports: { grpc: 50057, ops: 9467 },
  settings: settingsSchema,
  deliver: async (a, { settings, http, traceHeaders, now }) => {
    const answer = await http.post(
      settings.url,
      { ...settings.headers, ...traceHeaders, "idempotency-key": a.idempotencyKey },
      JSON.stringify(crmRequest(a, settings)),
      settings.timeout,
    );
    return classifyStatus(answer.status, answer.headers["retry-after"], now());
  },
};

export const configSpec = configSpecOf(contactCentreChannel);

export function startDispatcherContactCentre(
  cfg: DispatcherConfig,
  opts: StartOptions = {},
): Promise<DispatcherHandle> {
  return startDispatcher(contactCentreChannel, cfg, opts);
}
