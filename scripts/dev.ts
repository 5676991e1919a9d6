/**
 * `./kairos start`: the whole mesh on this machine. Starts a nats-server with
 * JetStream in .data/nats, every service under services/ that has a main, a demo
 * channel endpoint and demo traffic; prints where everything listens and a live
 * count per stage; Ctrl-C (or SIGTERM) stops everything.
 *
 * Flags: --no-demo (no traffic generator), --rate N (demo events per second, default 20).
 * Environment: KAIROS_PORT_OFFSET shifts every default port (to run beside another mesh),
 * KAIROS_PORTS=free puts every port on a free one instead (a default that is taken moves
 * to a free port anyway), KAIROS_DATA_DIR moves the JetStream store (default .data/nats).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join, resolve } from "node:path";
import { connect as netConnect } from "node:net";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { checkHealth } from "@kairos/kit";
import { NatsServer, freePort, startChild, type Child } from "@kairos/testkit";
import { runDemoTraffic } from "./demo-traffic.js";

const root = resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
const demo = !args.includes("--no-demo");
const rateArg = args.indexOf("--rate");
const rate = rateArg >= 0 ? Number(args[rateArg + 1]) : 20;
const offset = Number(process.env.KAIROS_PORT_OFFSET ?? "0");
if (!Number.isInteger(offset) || offset < 0 || offset > 10_000) {
  process.stderr.write(
    `KAIROS_PORT_OFFSET="${process.env.KAIROS_PORT_OFFSET}" is not an integer in 0..10000\n`,
  );
  process.exit(2);
}

const portFree = (port: number) =>
  new Promise<boolean>((res) => {
    const s = netConnect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      res(false);
    });
    s.once("error", () => res(true));
  });

/**
 * Where each default port of the mesh goes: the default plus the offset, or, with
 * KAIROS_PORTS=free (what the tests use), a free port below the ephemeral range.
 * A default that is already taken also moves to a free port, and says so.
 */
const freeMode = process.env.KAIROS_PORTS === "free";
if (process.env.KAIROS_PORTS !== undefined && !freeMode) {
  process.stderr.write(
    `KAIROS_PORTS="${process.env.KAIROS_PORTS}" is not "free" (the only value it takes)\n`,
  );
  process.exit(2);
}
const portMap = new Map<number, number>();
async function place(port: number): Promise<number> {
  const known = portMap.get(port);
  if (known !== undefined) return known;
  let chosen = port + offset;
  if (freeMode) chosen = await freePort();
  else if (!(await portFree(chosen))) {
    const moved = await freePort();
    process.stdout.write(`port ${chosen} is taken; using ${moved} instead\n`);
    chosen = moved;
  }
  portMap.set(port, chosen);
  return chosen;
}

/** Places every `*_PORT` value, then points `host:port` addresses at where their port went. */
async function placed(env: Record<string, string>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.endsWith("_PORT") && /^\d+$/.test(v)) out[k] = String(await place(Number(v)));
  }
  for (const [k, v] of Object.entries(env)) {
    if (k in out) continue;
    const m = /^(https?:\/\/)?(127\.0\.0\.1|localhost):(\d+)(\/.*)?$/.exec(v);
    out[k] = m ? `${m[1] ?? ""}${m[2]}:${await place(Number(m[3]))}${m[4] ?? ""}` : v;
  }
  return out;
}

interface ServiceInfo {
  name: string;
  dir: string;
  env: Record<string, string>;
}

async function discoverServices(): Promise<ServiceInfo[]> {
  const dir = join(root, "services");
  if (!existsSync(dir)) return [];
  const found = readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const pkgPath = join(dir, name, "package.json");
      if (!existsSync(pkgPath) || !existsSync(join(dir, name, "src/main.ts"))) return [];
      const pkg = JSON.parse(readFileSync(pkgPath, "utf8")) as {
        kairos?: {
          service?: boolean;
          env?: Record<string, string>;
          /** More processes of the same service with other settings (e.g. one per channel). */
          instances?: { name: string; env: Record<string, string> }[];
        };
      };
      if (pkg.kairos?.service !== true) return [];
      const base = pkg.kairos.env ?? {};
      return [
        { name, dir: join(dir, name), env: base },
        ...(pkg.kairos.instances ?? []).map((i) => ({
          name: i.name,
          dir: join(dir, name),
          env: { ...base, ...i.env },
        })),
      ];
    });
  // Every service's own ports first, so an address pointing at one finds it placed.
  for (const s of found) {
    for (const [k, v] of Object.entries(s.env))
      if (k.endsWith("_PORT") && /^\d+$/.test(v)) await place(Number(v));
  }
  for (const s of found) s.env = await placed(s.env);
  return found;
}

/** The demo channel endpoint: counts POSTs per idempotency key, as a real channel would dedupe. */
function startChannelEndpoint(port: number) {
  const seen = new Map<string, number>();
  let posts = 0;
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      posts++;
      const key = String(req.headers["idempotency-key"] ?? "");
      seen.set(key, (seen.get(key) ?? 0) + 1);
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
  });
  return new Promise<{ server: Server; stats: () => { posts: number; distinct: number } }>((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => ok({ server, stats: () => ({ posts, distinct: seen.size }) }));
  });
}

const log = (msg: string) => process.stdout.write(`${msg}\n`);

async function main() {
  const services = await discoverServices();
  const dataDir = resolve(process.env.KAIROS_DATA_DIR ?? join(root, ".data", "nats"));
  mkdirSync(dataDir, { recursive: true });
  const natsPort = await place(4222);
  log(`starting nats-server (JetStream, store ${dataDir}) on 127.0.0.1:${natsPort}`);
  log(`services: ${services.map((s) => s.name).join(", ") || "(none yet)"}`);
  // Out of reach of the terminal's Ctrl-C: it stops after the services have drained into it.
  const nats = await NatsServer.start({ port: natsPort, storeDir: dataDir, ownGroup: true });

  const children: { info: ServiceInfo; child: Child }[] = [];
  let endpoint: Awaited<ReturnType<typeof startChannelEndpoint>> | undefined;
  let stopDemo: (() => Promise<void>) | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let stopping = false;

  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    clearInterval(ticker);
    log("\nstopping…");
    await stopDemo?.();
    const results = await Promise.all(
      children.map(async ({ info, child }) => [info.name, await child.stop("SIGTERM", 10_000)] as const),
    );
    for (const [name, r] of results) log(`  ${name.padEnd(20)} exited ${r.signal ?? r.code}`);
    // A service that did not stop cleanly says why in its last lines.
    for (const [i, [name, r]] of results.entries()) {
      if (r.code === 0 && r.signal === null) continue;
      log(`\n${name}: last output before it exited ${r.signal ?? r.code}:`);
      log(children[i]?.child.lines.slice(-15).join("\n") ?? "");
    }
    endpoint?.server.close();
    await nats.stop();
    log("  nats-server          stopped");
    process.exit(code);
  };
  // `on`, not `once`: a second Ctrl-C (or `timeout`, which signals the process and then its whole group)
  // must not kill this process half-way through stopping and leave nats-server, in its own group, running.
  const onSignal = () => {
    if (stopping) log("  still stopping (the services have 10 s to finish what they hold)…");
    void stopAll(0);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const channelPort = await place(8089);
  endpoint = await startChannelEndpoint(channelPort);
  // The demo config's channel endpoints and service addresses, pointed at where their ports went.
  const meshConfig = join(dataDir, "..", "demo.yaml");
  writeFileSync(
    meshConfig,
    readFileSync(join(root, "config/demo.yaml"), "utf8").replace(
      /127\.0\.0\.1:(\d+)/g,
      (_, p: string) => `127.0.0.1:${portMap.get(Number(p)) ?? Number(p)}`,
    ),
  );

  for (const info of services) {
    // One process per service (no tsx wrapper process), so signals reach it directly.
    const child = startChild(process.execPath, ["--import", "tsx", join(info.dir, "src/main.ts")], {
      cwd: root,
      name: info.name,
      echo: process.env.KAIROS_ECHO_LOGS === "1",
      env: {
        ...process.env,
        NATS_URL: nats.url,
        KAIROS_CONFIG: meshConfig,
        ...info.env,
      },
    });
    children.push({ info, child });
    void child.exited.then(({ code, signal }) => {
      if (stopping) return;
      log(`\n${info.name} exited unexpectedly (code ${code}, signal ${signal}); last output:`);
      log(child.lines.slice(-20).join("\n"));
      void stopAll(1);
    });
  }

  // Wait for every service to answer SERVING on gRPC health.
  const deadline = Date.now() + 60_000;
  for (const { info } of children) {
    const addr = `127.0.0.1:${info.env.GRPC_PORT}`;
    for (;;) {
      const status = await checkHealth(addr, "", 1000);
      if (status === "SERVING") break;
      if (Date.now() > deadline) {
        log(`${info.name} did not become SERVING on ${addr} (last: ${status})`);
        return stopAll(1);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  log("\nKairos is running:");
  log(`  ${"nats-server".padEnd(20)} ${nats.url}  store ${dataDir}  pid ${nats.pid}`);
  for (const { info, child } of children) {
    const extra = info.env.HTTP_PORT ? `  HTTP http://127.0.0.1:${info.env.HTTP_PORT}` : "";
    log(
      `  ${info.name.padEnd(20)} gRPC 127.0.0.1:${info.env.GRPC_PORT}  ops http://127.0.0.1:${info.env.OPS_PORT}/metrics  SERVING${extra}  pid ${child.pid}`,
    );
  }
  if (endpoint) log(`  ${"demo channel".padEnd(20)} http://127.0.0.1:${channelPort}/hooks/<channel>`);
  const web = children.find((c) => c.info.name === "dispatcher-web");
  if (web?.info.env.HTTP_PORT)
    log(`  ${"example page".padEnd(20)} http://127.0.0.1:${web.info.env.HTTP_PORT}/`);
  log("Ctrl-C stops everything.\n");

  const ingestion = children.find((c) => c.info.name === "ingestion");
  if (demo && ingestion?.info.env.HTTP_PORT) {
    stopDemo = runDemoTraffic({
      url: `http://127.0.0.1:${ingestion.info.env.HTTP_PORT}`,
      writeKey: "demo-web-write-key",
      rate,
    });
    log(`demo traffic: ${rate} events/s to ingestion (--no-demo to disable, --rate N to change)`);
  }

  const nc = await connect({ servers: nats.url, name: "kairos-dev" });
  const jsm = await jetstreamManager(nc);
  const counts = async () => {
    const out: string[] = [];
    for (const s of ["EVENTS", "PROFILES", "SEGMENTS", "INTENTS", "DISPATCH", "OUTCOMES", "DLQ"]) {
      try {
        const info = await jsm.streams.info(s);
        // DISPATCH is a work queue: what it holds is what dispatchers have not yet settled.
        out.push(`${s.toLowerCase()}${s === "DISPATCH" ? " pending" : ""} ${info.state.messages}`);
      } catch {
        out.push(`${s.toLowerCase()} -`);
      }
    }
    const e = endpoint?.stats();
    if (e) out.push(`channel posts ${e.posts} (${e.distinct} distinct keys)`);
    return out.join(" | ");
  };
  ticker = setInterval(() => {
    counts().then(
      (line) => log(`[${new Date().toISOString().slice(11, 19)}] ${line}`),
      () => undefined,
    );
  }, 5000);
}

main().catch((e: unknown) => {
  process.stderr.write(`kairos start failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
