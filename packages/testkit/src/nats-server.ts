/**
 * A real nats-server with JetStream for tests: started from PATH on a free port
 * with a temporary store, stopped and removed on dispose.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { connect } from "@nats-io/transport-node";
import { freePort } from "./free-port.js";
import { startChild, type Child } from "./child-process.js";

export interface NatsServerOptions {
  /** Fixed port (a restart reuses the same one); a free one by default. */
  port?: number;
  /** Store directory; a fresh temporary one by default, removed on dispose. */
  storeDir?: string;
  /** Extra nats-server arguments. */
  args?: string[];
  /** Its own process group, out of reach of a terminal's Ctrl-C (the dev runner stops it last). */
  ownGroup?: boolean;
}

function natsServerBinary(): string {
  const bin = process.env.NATS_SERVER_BIN ?? "nats-server";
  try {
    execFileSync(bin, ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error(
      `${bin} not found on PATH: install it (Debian: apt-get install -y nats-server) or set NATS_SERVER_BIN`,
    );
  }
  return bin;
}

export class NatsServer implements AsyncDisposable {
  private child: Child | undefined;

  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly ownsStore: boolean,
    private readonly extraArgs: string[],
    private readonly ownGroup = false,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Starts a server and waits until a client can connect. */
  static async start(opts: NatsServerOptions = {}): Promise<NatsServer> {
    const storeDir = opts.storeDir ?? (await mkdtemp(join(tmpdir(), "kairos-nats-")));
    for (let attempt = 0; ; attempt++) {
      const port = opts.port ?? (await freePort());
      const server = new NatsServer(
        port,
        storeDir,
        opts.storeDir === undefined,
        opts.args ?? [],
        opts.ownGroup ?? false,
      );
      try {
        await server.launch();
        return server;
      } catch (e) {
        // Another process took the port between our probe and the bind: try another.
        if (opts.port !== undefined || attempt >= 3) throw e;
      }
    }
  }

  private async launch(): Promise<void> {
    this.child = startChild(
      natsServerBinary(),
      ["-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir, ...this.extraArgs],
      { name: `nats-server:${this.port}`, ownGroup: this.ownGroup },
    );
    await this.child.waitForLine(/Server is ready/, 15_000);
    const nc = await connect({ servers: this.url });
    await nc.close();
  }

  /** The server's process id (-1 when not started). */
  get pid(): number {
    return this.child?.pid ?? -1;
  }

  get running(): boolean {
    return this.child?.running ?? false;
  }

  /** Stops the server (SIGTERM: a clean shutdown that flushes its store). */
  async stop(): Promise<void> {
    await this.child?.stop("SIGTERM");
  }

  /** Kills the server without letting it flush. */
  async kill(): Promise<void> {
    await this.child?.stop("SIGKILL");
  }

  /** Starts it again on the same port with the same store. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.launch();
  }

  /** Stops the server and removes a temporary store. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    if (this.ownsStore) await rm(this.storeDir, { recursive: true, force: true });
  }
}
