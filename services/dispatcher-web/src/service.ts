/**
 * The web/app channel (Respond mode): browsers subscribe with Server-Sent
 * Events, app back ends with gRPC `Subscribe`, by anonymous id or user id, and
 * each action is pushed to them the moment suppression hands it over.
 *
 * Any replica may take an action off DISPATCH while the customer's stream is
 * held by another, so delivery is a NATS request on `kairos.live.<channel>.<ws>`:
 * every replica pushes to its own matching subscribers and answers only if it
 * had one. An answer is DELIVERED; none means the customer is not in session
 * right now, which is retried with backoff until the action's deadline (a page
 * still loading gets it), then EXPIRED.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { DispatchSchema, toBinaryFast, fromBinaryFast } from "@kairos/contracts";
import {
  actionOf,
  configSpecOf,
  delivered,
  expired,
  retry,
  startDispatcher,
  type ChannelDefinition,
  type DispatcherConfig,
  type DispatcherHandle,
} from "@kairos/dispatcher-sdk";
import { env, type StartOptions } from "@kairos/kit";
import { duration, type MeshConfig } from "@kairos/mesh-config";
import type { NatsConnection } from "@nats-io/transport-node";
import { parseStreamRequest, sseFrame } from "./stream.js";

const settingsSchema = z
  .object({
    /** A comment line on every open stream this often, so proxies keep it open. */
    heartbeat: duration.default(15_000),
    /** How long delivery waits for a replica holding the customer's stream to answer. */
    replyTimeout: duration.default(100),
  })
  .strict();

type WebSettings = z.output<typeof settingsSchema>;

const extraEnv = {
  HTTP_HOST: env.string("127.0.0.1"),
  /** Server-Sent Events and the example page. */
  HTTP_PORT: env.port(8090),
  /** Where the example page sends its events (ingestion's Segment HTTP API). */
  INGEST_URL: env.string("http://127.0.0.1:8088"),
};

export type WebConfig = DispatcherConfig<typeof extraEnv>;

const liveSubject = (channel: string, workspace: string) => `kairos.live.${channel}.${workspace}`;

const examplePage = readFileSync(fileURLToPath(new URL("../public/index.html", import.meta.url)), "utf8");

function writeKeys(mesh: MeshConfig) {
  const byKey = new Map<string, { workspace: string; source: string }>();
  for (const ws of mesh.workspaces)
    for (const k of ws.writeKeys) byKey.set(k.key, { workspace: ws.id, source: k.source });
  return byKey;
}

/** A fresh definition (its state lives in the closure, so tests can run several). */
export function webChannel(): ChannelDefinition<WebSettings, typeof extraEnv> {
  let nc: NatsConnection | undefined;
  return {
    service: "dispatcher-web",
    defaultChannel: "web",
    ports: { grpc: 50056, ops: 9466 },
    // A push is a few cheap round trips; at hundreds of actions a second, 64 in flight queue up.
    defaultConcurrency: 512,
    env: extraEnv,
    settings: settingsSchema,
    // One "destination" per workspace: no circuit or rate limit across customers.
    destinationKey: (a) => a.workspace,
    deliver: async (a, { settings, span, channel }) => {
      if (nc === undefined) throw new Error("not started");
      try {
        const reply = await nc.request(
          liveSubject(a.channel, a.workspace),
          a.bytes ?? toBinaryFast(DispatchSchema, a.dispatch),
          {
            timeout: settings.replyTimeout,
          },
        );
        const n = Number(reply.string());
        span.setAttribute("kairos.web.subscribers", n);
        return delivered(`pushed_to_${n}`);
      } catch {
        // Not in session (yet): try again until the deadline; after the last attempt the
        // action lapses (EXPIRED), it did not fail.
        return a.attempt >= channel.maxAttempts ? expired("no_live_subscriber") : retry("no_live_subscriber");
      }
    },
    setup: (host) => {
      const { runtime, live, settings, channel, config } = host;
      nc = runtime.nc;
      host.publishDeliveredToLive = false;
      const keys = writeKeys(host.mesh);

      // Every replica pushes to its own subscribers and answers when it had one.
      const sub = runtime.nc.subscribe(`kairos.live.${channel.name}.>`, {
        callback: (err, msg) => {
          if (err !== null) return;
          let n = 0;
          try {
            const a = actionOf(fromBinaryFast(DispatchSchema, msg.data), 1);
            if (a !== undefined) n = live.publish(a);
          } catch (e) {
            runtime.logger.warn({ err: e }, "undecodable live action");
          }
          if (n > 0) msg.respond(String(n));
        },
      });
      runtime.lifecycle.add("connections", "live-subscription", () => sub.unsubscribe());

      const streams = new Set<ServerResponse>();
      const defaultKey =
        [...keys.entries()].find(([, v]) => /web|browser|site/i.test(v.source))?.[0] ??
        [...keys.keys()][0] ??
        "";

      const stream = (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => {
        const parsed = parseStreamRequest(query, (k) => keys.get(k)?.workspace);
        if (!parsed.ok) {
          res.writeHead(parsed.status, {
            "content-type": "application/json",
            "access-control-allow-origin": "*",
          });
          res.end(JSON.stringify({ error: parsed.error }));
          return;
        }
        res.writeHead(200, {
          "content-type": "text/event-stream",
          "cache-control": "no-cache, no-transform",
          connection: "keep-alive",
          "access-control-allow-origin": "*",
          "x-accel-buffering": "no",
        });
        res.write(`retry: 2000\n: subscribed\n\n`);
        streams.add(res);
        const off = live.subscribe(parsed.workspace, parsed.identifiers, (a) => res.write(sseFrame(a)));
        const beat = setInterval(() => res.write(`: heartbeat\n\n`), settings.heartbeat);
        const close = () => {
          clearInterval(beat);
          off();
          streams.delete(res);
        };
        req.once("close", close);
        res.once("close", close);
      };

      const server = createServer((req, res) => {
        const url = new URL(req.url ?? "/", "http://localhost");
        if (req.method === "OPTIONS") {
          res
            .writeHead(204, {
              "access-control-allow-origin": "*",
              "access-control-allow-methods": "GET, OPTIONS",
              "access-control-max-age": "86400",
            })
            .end();
        } else if (req.method === "GET" && url.pathname === "/v1/stream") {
          stream(req, res, url.searchParams);
        } else if (req.method === "GET" && (url.pathname === "/" || url.pathname === "/index.html")) {
          const page = {
            ingestUrl: config.INGEST_URL,
            writeKey: url.searchParams.get("writeKey") ?? defaultKey,
            streamUrl: "/v1/stream",
          };
          res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
          res.end(
            examplePage.replace("__KAIROS_PAGE_CONFIG__", JSON.stringify(page).replace(/</g, "\\u003c")),
          );
        } else {
          res
            .writeHead(404, { "content-type": "application/json" })
            .end(JSON.stringify({ error: "not found" }));
        }
      });
      runtime.lifecycle.add("intake", "sse-server", async () => {
        for (const s of streams) s.end();
        // Idle keep-alive connections would hold close() until they time out.
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeAllConnections();
        await closed;
      });
      return new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(config.HTTP_PORT, config.HTTP_HOST, () => {
          const { address, port } = server.address() as AddressInfo;
          host.addresses.http = `http://${address}:${port}`;
          runtime.logger.info(
            { url: host.addresses.http },
            "serving Server-Sent Events and the example page",
          );
          resolve();
        });
      });
    },
  };
}

export const configSpec = configSpecOf(webChannel());

export function startDispatcherWeb(cfg: WebConfig, opts: StartOptions = {}): Promise<DispatcherHandle> {
  return startDispatcher(webChannel(), cfg, opts);
}
