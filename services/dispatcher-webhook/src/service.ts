/**
 * The webhook dispatcher, for every channel whose endpoint takes a JSON POST
 * (the demo's webhook, SMS and push gateways): POSTs each action to the
 * channel's URL with the action id as `Idempotency-Key`. Everything else —
 * ledger, cancellation, deadline, retries, rate limit, circuit, outcomes,
 * freshness — is the dispatcher SDK's.
 */
import {
  classifyStatus,
  configSpecOf,
  startDispatcher,
  type ChannelDefinition,
  type DispatcherConfig,
  type DispatcherHandle,
} from "@kairos/dispatcher-sdk";
import { ConfigError, env, type StartOptions } from "@kairos/kit";
import { requestBody } from "./delivery.js";

interface WebhookSettings {
  url: URL;
  timeoutMs: number;
  headers: Record<string, string>;
}

const extraEnv = {
  /** Overrides the channel's `webhook.url` (local runs and tests). */
  WEBHOOK_URL: env.string(""),
};

export const webhookChannel: ChannelDefinition<WebhookSettings, typeof extraEnv> = {
  service: "dispatcher-webhook",
  defaultChannel: "webhook",
  ports: { grpc: 50055, ops: 9465 },
  env: extraEnv,
  settings: (channel, cfg) => {
    const url = cfg.WEBHOOK_URL !== "" ? cfg.WEBHOOK_URL : channel.webhook?.url;
    if (url === undefined) {
      throw new ConfigError([
        `channel ${channel.name} has no webhook settings in ${cfg.KAIROS_CONFIG}, and WEBHOOK_URL is not set`,
      ]);
    }
    try {
      return {
        url: new URL(url),
        timeoutMs: channel.webhook?.timeout ?? 5000,
        headers: channel.webhook?.headers ?? {},
      };
    } catch {
      throw new ConfigError([`WEBHOOK_URL=${JSON.stringify(url)} is not a URL`]);
    }
  },
  deliver: async (action, { settings, http, traceHeaders, span, now }) => {
    span.setAttributes({ "http.request.method": "POST", "url.full": settings.url.href });
    const answer = await http.post(
      settings.url,
      { ...settings.headers, ...traceHeaders, "idempotency-key": action.idempotencyKey },
      JSON.stringify(requestBody(action)),
      settings.timeoutMs,
    );
    span.setAttribute("http.response.status_code", answer.status);
    return classifyStatus(answer.status, answer.headers["retry-after"], now());
  },
};

export const configSpec = configSpecOf(webhookChannel);
export type { DispatcherConfig, DispatcherHandle, StartOptions };

export function startDispatcherWebhook(
  cfg: DispatcherConfig<typeof extraEnv>,
  opts: StartOptions = {},
): Promise<DispatcherHandle> {
  return startDispatcher(webhookChannel, cfg, opts);
}
