import { createServer } from "node:net";
import { readFileSync } from "node:fs";

/** Ports handed out by this process: never handed out twice. */
const given = new Set<number>();

/**
 * The kernel's ephemeral range, where outgoing connections take their local
 * ports: a port picked there can be taken by any client socket before the
 * service binds it, so test ports come from below it.
 */
function ephemeralStart(): number {
  try {
    return (
      Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768
    );
  } catch {
    return 32768;
  }
}

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** A TCP port that was free on 127.0.0.1 a moment ago, outside the ephemeral range, unique in this process. */
export async function freePort(): Promise<number> {
  const high = Math.min(ephemeralStart(), 65_536) - 1;
  const low = Math.max(10_000, high - 20_000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (given.has(port)) continue;
    if (await tryListen(port)) {
      given.add(port);
      return port;
    }
  }
  throw new Error(`no free port found in ${low}..${high}`);
}
