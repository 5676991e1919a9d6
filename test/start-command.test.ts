import { describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { checkHealth } from "@kairos/kit";
import { startChild } from "@kairos/testkit";

const root = fileURLToPath(new URL("..", import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("./kairos start", () => {
  it("brings up NATS and every service SERVING, and SIGTERM stops all of them leaving no process", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "kairos-start-"));
    // Every port free and below the ephemeral range, so the test runs beside a developer's own
    // mesh and no client socket can take a port before its service binds it.
    const dev = startChild(join(root, "node_modules/.bin/tsx"), [join(root, "scripts/dev.ts"), "--no-demo"], {
      cwd: root,
      name: "kairos-start",
      env: { ...process.env, KAIROS_PORTS: "free", KAIROS_DATA_DIR: dataDir },
    });
    try {
      await dev.waitForLine(/Ctrl-C stops everything/, 120_000);
      const table = dev.lines.slice(dev.lines.findIndex((l) => l.startsWith("Kairos is running")));
      const pids = table.flatMap((l) => [...l.matchAll(/pid (\d+)/g)].map((m) => Number(m[1])));
      const grpc = table.flatMap((l) => [...l.matchAll(/gRPC (127\.0\.0\.1:\d+)/g)].map((m) => m[1] ?? ""));
      const services =
        dev.lines
          .find((l) => l.startsWith("services: "))
          ?.slice("services: ".length)
          .split(", ") ?? [];
      expect(services.length).toBeGreaterThan(0);
      expect(grpc.length).toBe(services.length);
      expect(pids.length).toBe(services.length + 1); // + nats-server
      for (const addr of grpc) expect(await checkHealth(addr), addr).toBe("SERVING");

      const started = Date.now();
      const exit = await dev.stop("SIGTERM", 30_000);
      expect(exit.code).toBe(0);
      expect(Date.now() - started).toBeLessThan(10_000);
      for (const pid of pids) expect(alive(pid), `pid ${pid} still running`).toBe(false);
      for (const name of services) expect(dev.lines.join("\n")).toMatch(new RegExp(`${name}\\s+exited 0`));
    } finally {
      await dev.stop("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
