/**
 * The email channel (Inspire mode, minutes): renders the action's template
 * with profile fields and a signed unsubscribe link, and sends it to an
 * ESP-style HTTP endpoint with the action id as idempotency key. Serves the
 * unsubscribe link itself: GET shows a confirmation page, POST (the page's
 * button, or a mail client's RFC 8058 one-click) puts the address on the
 * email suppression list through `SuppressionService`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";
import { SuppressionService } from "@kairos/contracts";
import {
  classifyStatus,
  configSpecOf,
  delivered,
  escapeHtml,
  fail,
  startDispatcher,
  type ChannelDefinition,
  type DispatcherConfig,
  type DispatcherHandle,
} from "@kairos/dispatcher-sdk";
import { createGrpcClient, env, type StartOptions } from "@kairos/kit";
import { duration } from "@kairos/mesh-config";
import { readUnsubscribeToken, renderEmail, unsubscribeToken, type EmailSettings } from "./message.js";

const templateSchema = z
  .object({ subject: z.string().min(1), text: z.string().optional(), html: z.string().optional() })
  .strict()
  .refine((t) => t.text !== undefined || t.html !== undefined, { message: "give text, html or both" });

export const settingsSchema = z
  .object({
    /** The ESP's send endpoint (one message per POST). */
    url: z.string().url(),
    timeout: duration.default(10_000),
    headers: z.record(z.string()).default({}),
    from: z.string().min(3),
    replyTo: z.string().optional(),
    /** By name; an action's `payload.template` picks one, `default` otherwise. */
    templates: z
      .record(templateSchema)
      .refine((t) => Object.keys(t).length > 0, { message: "give at least one template" }),
  })
  .strict();

const DEV_SECRET = "kairos-dev-unsubscribe-secret";

const extraEnv = {
  HTTP_HOST: env.string("127.0.0.1"),
  /** The unsubscribe link's server. */
  HTTP_PORT: env.port(8091),
  /** The link's public base URL; default `http://HTTP_HOST:HTTP_PORT`. */
  PUBLIC_URL: env.string(""),
  /** Signs unsubscribe tokens; set it in production (the default is for local runs). */
  UNSUBSCRIBE_SECRET: env.string(DEV_SECRET),
  SUPPRESSION_GRPC_ADDR: env.string("127.0.0.1:50054"),
};

export type EmailConfig = DispatcherConfig<typeof extraEnv>;

const page = (title: string, body: string) =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body style="font:16px system-ui;max-width:32rem;margin:3rem auto">${body}</body></html>`;

export function emailChannel(): ChannelDefinition<EmailSettings, typeof extraEnv> {
  let linkBase = "";
  let secret = DEV_SECRET;
  return {
    service: "dispatcher-email",
    defaultChannel: "email",
    ports: { grpc: 50058, ops: 9468 },
    env: extraEnv,
    settings: settingsSchema,
    deliver: async (a, { settings, http, traceHeaders, now }) => {
      const rendered = renderEmail(
        a,
        settings,
        (email) => `${linkBase}/unsubscribe?token=${unsubscribeToken(secret, a.workspace, email)}`,
      );
      if (!rendered.ok) return fail(rendered.reason);
      const answer = await http.post(
        settings.url,
        { ...settings.headers, ...traceHeaders, "idempotency-key": a.idempotencyKey },
        JSON.stringify(rendered.body),
        settings.timeout,
      );
      const result = classifyStatus(answer.status, answer.headers["retry-after"], now());
      if (result.kind !== "delivered") return result;
      // ESPs answer with their message id; keep it on the outcome for support.
      try {
        const id = (JSON.parse(answer.body) as { id?: unknown }).id;
        return typeof id === "string" ? delivered(`esp_id:${id}`) : result;
      } catch {
        return result;
      }
    },
    setup: (host) => {
      const { runtime, config, channel } = host;
      secret = config.UNSUBSCRIBE_SECRET;
      if (secret === DEV_SECRET)
        runtime.logger.warn("UNSUBSCRIBE_SECRET is not set: using the local development secret");
      const suppression = createGrpcClient(SuppressionService, config.SUPPRESSION_GRPC_ADDR);
      runtime.lifecycle.add("connections", "suppression-client", () => suppression.close());

      const unsubscribe = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
        const html = (status: number, title: string, body: string) =>
          res.writeHead(status, { "content-type": "text/html; charset=utf-8" }).end(page(title, body));
        const token = url.searchParams.get("token") ?? "";
        const read = readUnsubscribeToken(secret, token);
        if (!read.ok)
          return html(
            400,
            "Invalid link",
            `<p>This unsubscribe link is not valid: ${escapeHtml(read.error)}.</p>`,
          );
        if (req.method === "GET") {
          // A GET never unsubscribes: mail scanners follow links.
          return html(
            200,
            "Unsubscribe",
            `<p>Stop emails to <b>${escapeHtml(read.email)}</b>?</p><form method="post"><button type="submit">Unsubscribe</button></form>`,
          );
        }
        try {
          await suppression.addToSuppressionList({
            workspace: read.workspace,
            identifier: { type: "email", value: read.email },
            channel: channel.name,
            reason: "unsubscribed",
            source: "email_unsubscribe_link",
          });
        } catch (e) {
          runtime.logger.error({ err: e }, "unsubscribe could not be recorded");
          return html(
            503,
            "Try again",
            "<p>We could not record that just now; please try again in a minute.</p>",
          );
        }
        runtime.logger.info({ workspace: read.workspace }, "unsubscribed by link");
        return html(
          200,
          "Unsubscribed",
          `<p><b>${escapeHtml(read.email)}</b> will get no more emails from us.</p>`,
        );
      };

      const server = createServer((req, res) => {
        const url = new URL(req.url ?? "/", "http://localhost");
        if (url.pathname === "/unsubscribe" && (req.method === "GET" || req.method === "POST")) {
          req.resume();
          void unsubscribe(req, res, url);
        } else {
          res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
        }
      });
      runtime.lifecycle.add("intake", "unsubscribe-server", () => {
        // Idle keep-alive connections would hold close() until they time out.
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        return closed;
      });
      return new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(config.HTTP_PORT, config.HTTP_HOST, () => {
          const { address, port } = server.address() as AddressInfo;
          host.addresses.http = `http://${address}:${port}`;
          linkBase = config.PUBLIC_URL !== "" ? config.PUBLIC_URL.replace(/\/$/, "") : host.addresses.http;
          resolve();
        });
      });
    },
  };
}

export const configSpec = configSpecOf(emailChannel());

export function startDispatcherEmail(cfg: EmailConfig, opts: StartOptions = {}): Promise<DispatcherHandle> {
  return startDispatcher(emailChannel(), cfg, opts);
}
