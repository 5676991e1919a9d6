/** The ops HTTP port: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`. */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** A named readiness check; it throws (or resolves false) when not ready. */
export interface ReadinessCheck {
  name: string;
  check: () => Promise<boolean | void> | boolean | void;
}

export interface OpsServerOptions {
  host: string;
  port: number;
  registry: Registry;
  checks?: ReadinessCheck[];
  /** How long one readiness check may take before it counts as failed. */
  checkTimeoutMs?: number;
}

export interface OpsServer {
  readonly port: number;
  readonly url: string;
  addCheck(check: ReadinessCheck): void;
  /** Forces `/readyz` to 503, e.g. while shutting down. */
  setDraining(): void;
  close(): Promise<void>;
}

async function runCheck(c: ReadinessCheck, timeoutMs: number): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const ok = await Promise.race([
      Promise.resolve().then(c.check),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return ok === false ? "not ready" : undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts the ops server; resolves once it listens. */
export async function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  const checks = [...(opts.checks ?? [])];
  const timeoutMs = opts.checkTimeoutMs ?? 2000;
  let draining = false;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const reply = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "content-type": type }).end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return reply(405, "method not allowed\n");
    if (path === "/healthz") return reply(200, "ok\n");
    if (path === "/metrics") {
      opts.registry.metrics().then(
        (text) => reply(200, text, opts.registry.contentType),
        (e: unknown) => reply(500, `metrics failed: ${String(e)}\n`),
      );
      return;
    }
    if (path === "/readyz") {
      if (draining) return reply(503, JSON.stringify({ ready: false, draining: true }), "application/json");
      Promise.all(checks.map(async (c) => [c.name, await runCheck(c, timeoutMs)] as const)).then(
        (results) => {
          const failed = Object.fromEntries(results.filter(([, err]) => err !== undefined));
          const ready = Object.keys(failed).length === 0;
          reply(ready ? 200 : 503, JSON.stringify({ ready, failed }), "application/json");
        },
        (e: unknown) => reply(500, String(e)),
      );
      return;
    }
    reply(404, "not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://${opts.host}:${port}`,
    addCheck: (c) => void checks.push(c),
    setDraining: () => {
      draining = true;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
