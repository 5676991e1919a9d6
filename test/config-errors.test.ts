/** Every service refuses to start on a bad setting, naming it, with exit status 78 (EX_CONFIG). */
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { meshServices, repoRoot, startChild } from "@kairos/testkit";

async function run(service: string, env: Record<string, string>) {
  const child = startChild(
    process.execPath,
    ["--import", "tsx", join("services", service, "src", "main.ts")],
    {
      cwd: repoRoot,
      name: service,
      env: { ...process.env, NATS_URL: "nats://127.0.0.1:1", ...env },
    },
  );
  const exit = await child.exited;
  return { code: exit.code, output: child.lines.join("\n") };
}

describe("bad configuration", () => {
  it.each(meshServices)("%s names a bad variable and exits 78", async (service) => {
    const { code, output } = await run(service, { GRPC_PORT: "abc" });
    expect(code).toBe(78);
    expect(output).toContain('GRPC_PORT=\\"abc\\" is not a valid port');
  });

  it("a mesh config that does not exist is named", async () => {
    const { code, output } = await run("segmentation", { KAIROS_CONFIG: "/nonexistent/mesh.yaml" });
    expect(code).toBe(78);
    expect(output).toContain("/nonexistent/mesh.yaml");
  });

  it("a MongoDB profile store without its URI is named", async () => {
    const { code, output } = await run("identity", { PROFILE_STORE: "mongodb" });
    expect(code).toBe(78);
    expect(output).toContain("PROFILE_STORE=mongodb needs MONGODB_URI");
  });

  it("a dispatcher for a channel the config does not have is named", async () => {
    const { code, output } = await run("dispatcher-webhook", { CHANNEL: "pigeon" });
    expect(code).toBe(78);
    expect(output).toContain('CHANNEL=\\"pigeon\\" is not a channel');
  });
});
