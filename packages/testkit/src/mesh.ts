/**
 * The whole mesh as child processes (`node --import tsx services/<name>/src/main.ts`),
 * each on free ports, against a given nats-server: what end-to-end tests and
 * benchmarks drive. A service can be SIGKILLed and restarted on the same ports.
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { connect } from "node:net";
import { freePort } from "./free-port.js";
import { startChild, type Child } from "./child-process.js";
import { waitFor } from "./wait.js";

/** True when something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

/** The services of the mesh, in start order (upstream first). */
export const meshServices = [
  "identity",
  "segmentation",
  "suppression",
  "dispatcher-webhook",
  "ingestion",
] as const;
/** Channel dispatchers a mesh may add (`services`); the web and email ones serve HTTP too. */
export const channelServices = [
  "dispatcher-web",
  "dispatcher-email",
  "dispatcher-contact-centre",
  "dispatcher-ads",
] as const;
export type MeshService = (typeof meshServices)[number] | (typeof channelServices)[number];

const withHttp: readonly MeshService[] = ["ingestion", "dispatcher-web", "dispatcher-email"];

export interface MeshOptions {
  natsUrl: string;
  /** Mesh config file (absolute path). */
  config: string;
  /** URL the webhook dispatcher posts to. */
  webhookUrl: string;
  /** Extra environment for every service. */
  env?: Record<string, string>;
  echo?: boolean;
  services?: readonly MeshService[];
  /** How long each service may take to become ready (default 30 s; a large store loads longer). */
  readyTimeoutMs?: number;
}

export interface ServicePorts {
  grpc: number;
  ops: number;
  http?: number;
}

export class Mesh implements AsyncDisposable {
  readonly children = new Map<MeshService, Child>();
  private readonly stopping = new Set<Child>();

  private constructor(
    private readonly opts: MeshOptions,
    readonly ports: ReadonlyMap<MeshService, ServicePorts>,
  ) {}

  static async start(opts: MeshOptions): Promise<Mesh> {
    const ports = new Map<MeshService, ServicePorts>();
    for (const s of opts.services ?? meshServices) {
      ports.set(s, {
        grpc: await freePort(),
        ops: await freePort(),
        ...(withHttp.includes(s) ? { http: await freePort() } : {}),
      });
    }
    const mesh = new Mesh(opts, ports);
    try {
      for (const s of ports.keys()) await mesh.startService(s);
    } catch (e) {
      await mesh.stop("SIGKILL");
      throw e;
    }
    return mesh;
  }

  grpcAddress(s: MeshService): string {
    return `127.0.0.1:${this.portsOf(s).grpc}`;
  }

  opsUrl(s: MeshService): string {
    return `http://127.0.0.1:${this.portsOf(s).ops}`;
  }

  /** The Segment HTTP API base URL of ingestion. */
  get httpUrl(): string {
    return this.httpUrlOf("ingestion");
  }

  /** The HTTP base URL of a service that serves HTTP (ingestion, dispatcher-web, dispatcher-email). */
  httpUrlOf(s: MeshService): string {
    return `http://127.0.0.1:${this.portsOf(s).http ?? 0}`;
  }

  pid(s: MeshService): number {
    return this.children.get(s)?.pid ?? -1;
  }

  private portsOf(s: MeshService): ServicePorts {
    const p = this.ports.get(s);
    if (p === undefined) throw new Error(`${s} is not part of this mesh`);
    return p;
  }

  /** Starts (or restarts) one service and waits until its `/readyz` answers 200. */
  async startService(s: MeshService): Promise<Child> {
    const p = this.portsOf(s);
    // KAIROS_NODE_ARGS adds node flags to every service, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = (process.env.KAIROS_NODE_ARGS ?? "").split(" ").filter((a) => a !== "");
    const child = startChild(
      process.execPath,
      [...nodeArgs, "--import", "tsx", join("services", s, "src", "main.ts")],
      {
        cwd: repoRoot,
        name: s,
        echo: this.opts.echo ?? process.env.KAIROS_ECHO_LOGS === "1",
        env: {
          ...process.env,
          LOG_LEVEL: "warn",
          NATS_URL: this.opts.natsUrl,
          KAIROS_CONFIG: this.opts.config,
          WEBHOOK_URL: this.opts.webhookUrl,
          GRPC_PORT: String(p.grpc),
          OPS_PORT: String(p.ops),
          ...(p.http === undefined ? {} : { HTTP_PORT: String(p.http) }),
          IDENTITY_GRPC_ADDR: this.ports.has("identity") ? this.grpcAddress("identity") : "127.0.0.1:50052",
          ...(this.ports.has("suppression")
            ? { SUPPRESSION_GRPC_ADDR: this.grpcAddress("suppression") }
            : {}),
          ...(this.ports.has("ingestion") ? { INGEST_URL: this.httpUrl } : {}),
          ...this.opts.env,
        },
      },
    );
    this.children.set(s, child);
    // A service that dies on its own is reported with its last words, not discovered later.
    void child.exited.then(({ code, signal }) => {
      if (this.stopping.has(child)) return;
      process.stderr.write(
        `mesh: ${s} (pid ${child.pid}) exited unexpectedly (code ${code}, signal ${signal}):\n${child.lines.slice(-40).join("\n")}\n`,
      );
    });
    let died: Error | undefined;
    await waitFor(
      async () => {
        if (!child.running) {
          // At once, not at the end of the wait.
          died = new Error(`${s} exited before it was ready:\n${child.lines.slice(-30).join("\n")}`);
          return true;
        }
        const res = await fetch(`${this.opsUrl(s)}/readyz`).catch(() => undefined);
        if (res?.status !== 200) return undefined;
        // Every listener must take connections before callers are let loose on it.
        const ports = [p.grpc, p.ops, ...(p.http === undefined ? [] : [p.http])];
        return (await Promise.all(ports.map(accepts))).every(Boolean) || undefined;
      },
      { timeoutMs: this.opts.readyTimeoutMs ?? 30_000, intervalMs: 100, what: `${s} ready` },
    );
    if (died !== undefined) throw died;
    return child;
  }

  /** Kills one service with SIGKILL: no graceful shutdown, in-flight work is abandoned. */
  async kill(s: MeshService): Promise<void> {
    const child = this.children.get(s);
    if (child === undefined) return;
    this.stopping.add(child);
    await child.stop("SIGKILL");
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    // Downstream of ingestion first is not needed: at-least-once makes any order safe.
    for (const c of this.children.values()) this.stopping.add(c);
    await Promise.all([...this.children.values()].map((c) => c.stop(signal)));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGTERM");
  }
}
