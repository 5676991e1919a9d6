/**
 * The worked example of docs/adding-a-channel.md: a team-chat channel that
 * posts a rendered line to a chat webhook (Slack/Teams/Mattermost "incoming
 * webhook" style). Everything but the delivery function is the SDK's.
 */
import { z } from "zod";
import {
  classifyStatus,
  renderTemplate,
  startDispatcher,
  type ChannelDefinition,
} from "@kairos/dispatcher-sdk";
import type { StartOptions } from "@kairos/kit";
import { duration } from "@kairos/mesh-config";

// 1. The channel's own settings, read from `channels[].settings` in the mesh config.
const settings = z
  .object({
    url: z.string().url(),
    timeout: duration.default(5000),
    /** `{{traits.x}}`, `{{payload.x}}`, `{{journey}}`, `{{profile_id}}`. */
    text: z.string().default("{{traits.first_name|A customer}}: {{payload.message}}"),
  })
  .strict();

// 2. The definition: name, default ports, settings, and one delivery function.
export const chatChannel: ChannelDefinition<z.output<typeof settings>> = {
  service: "dispatcher-chat",
  defaultChannel: "chat",
  ports: { grpc: 50070, ops: 9480 },
  settings,
  deliver: async (action, { settings: s, http, traceHeaders, now }) => {
    const vars = {
      traits: action.traits,
      payload: action.payload,
      journey: action.journey,
      profile_id: action.profileId,
    };
    const text = renderTemplate(s.text, vars);
    const answer = await http.post(
      s.url,
      { ...traceHeaders, "idempotency-key": action.idempotencyKey },
      JSON.stringify({ text }),
      s.timeout,
    );
    // 2xx delivered; 408/425/429/5xx retried (honouring Retry-After); other 4xx FAILED.
    return classifyStatus(answer.status, answer.headers["retry-after"], now());
  },
};

export const startChat = (cfg: Parameters<typeof startDispatcher>[1], opts?: StartOptions) =>
  startDispatcher(chatChannel, cfg, opts);
