/**
 * `kairos apply -f FILE`, the real CLI against a real nats-server and a running
 * segmentation service: a valid file is applied and reloaded live; an invalid
 * one is refused naming file, line and field, and the previous one stays.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  MembershipChange,
  ProfileChangedSchema,
  SegmentMembershipChangedSchema,
  type SegmentMembershipChanged,
} from "@kairos/contracts";
import { loadConfig, subjects } from "@kairos/kit";
import { collect, NatsServer, repoRoot, waitFor } from "@kairos/testkit";
import * as segmentation from "@kairos/segmentation";
import * as suppression from "@kairos/suppression";
import { Decision, SuppressionService } from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";

const run = promisify(execFile);
const fixture = fileURLToPath(new URL("fixtures/mesh.yaml", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "kairos-apply-"));
let nats: NatsServer;
let nc: NatsConnection;
let stop: () => Promise<unknown>;
let stopSuppression: () => Promise<unknown>;
let suppressionAddr: string;
let memberships: SegmentMembershipChanged[] = [];
const entered = (segment: string, profileId: string) =>
  memberships.some(
    (c) => c.change === MembershipChange.ENTERED && c.segment === segment && c.profileId === profileId,
  );

beforeAll(async () => {
  nats = await NatsServer.start();
  const seg = await segmentation.startSegmentation(
    loadConfig(segmentation.configSpec, {
      NATS_URL: nats.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: fixture,
    }),
  );
  stop = () => seg.stop();
  // Suppression decides from its profile view here (fed by PROFILES); identity is not needed.
  const sup = await suppression.startSuppression(
    loadConfig(suppression.configSpec, {
      NATS_URL: nats.url,
      GRPC_PORT: "0",
      OPS_PORT: "0",
      LOG_LEVEL: "silent",
      KAIROS_CONFIG: fixture,
      IDENTITY_GRPC_ADDR: "127.0.0.1:1",
    }),
  );
  stopSuppression = () => sup.stop();
  suppressionAddr = sup.grpcAddress;
  nc = await connect({ servers: nats.url });
  memberships = collect(nc, "kairos.segments.>", (b) => fromBinary(SegmentMembershipChangedSchema, b));
});

afterAll(async () => {
  await nc?.close();
  await stop?.();
  await stopSuppression?.();
  await nats?.[Symbol.asyncDispose]();
});

async function apply(file: string): Promise<{ code: number; out: string; err: string }> {
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ["--import", "tsx", "scripts/apply.ts", "-f", file, "--nats", nats.url],
      { cwd: repoRoot },
    );
    return { code: 0, out: stdout, err: stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

let version = 0;
async function profile(id: string, plan: string) {
  const v = BigInt(++version);
  const c = create(ProfileChangedSchema, {
    workspace: "bench",
    profileId: id,
    version: v,
    profile: { workspace: "bench", profileId: id, version: v, traits: { plan } },
  });
  await jetstream(nc).publish(subjects.profiles("bench", 0), toBinary(ProfileChangedSchema, c), {
    msgID: `apply:${id}:${v}`,
  });
}

describe("kairos apply -f", () => {
  it("applies a valid configuration live, and refuses an invalid one keeping the one in force", async () => {
    const base = readFileSync(fixture, "utf8");
    const withVip = base.replace(
      "    segments:\n",
      `    segments:\n      - name: vip\n        condition: 'has(profile.traits.plan) && profile.traits.plan == "vip"'\n`,
    );
    expect(withVip).not.toBe(base);
    const good = join(dir, "good.yaml");
    writeFileSync(good, withVip);
    const ok = await apply(good);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^applied .*good\.yaml \(revision \d+\): 1 workspaces, 2 segments/);

    await profile("p-vip-1", "vip");
    await waitFor(() => entered("vip", "p-vip-1"), { timeoutMs: 15_000 });

    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, withVip.replace('profile.traits.plan == "vip"', 'profile.traits.plan == "vip" &&'));
    const refused = await apply(bad);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/bad\.yaml:\d+: workspaces\[0\]\.segments\[0\]\.condition: invalid CEL/);
    expect(refused.err).toContain("nothing applied");

    // The applied configuration stays in force.
    await profile("p-vip-2", "vip");
    await waitFor(() => entered("vip", "p-vip-2"), { timeoutMs: 15_000 });
  });
});

describe("kairos apply -f, suppression", () => {
  it("reloads channel policy live: a channel switched to opt-in consent stops contact", async () => {
    await profile("p-consent", "basic");
    const client = createGrpcClient(SuppressionService, suppressionAddr);
    const ask = () =>
      client.check({ workspace: "bench", profileId: "p-consent", channel: "webhook", purpose: "marketing" });
    try {
      // Allowed once suppression's view holds the profile.
      await waitFor(async () => (await ask()).decision === Decision.ALLOW, { timeoutMs: 15_000 });
      const optIn = join(dir, "opt-in.yaml");
      writeFileSync(
        optIn,
        readFileSync(fixture, "utf8").replace(
          "    freshnessSlo: 30s\n",
          "    freshnessSlo: 30s\n    consent: opt-in\n",
        ),
      );
      expect((await apply(optIn)).code).toBe(0);
      await waitFor(async () => (await ask()).reason === "no_consent", { timeoutMs: 15_000 });
    } finally {
      client.close();
    }
  });
});

describe("kairos apply -f, ingestion", () => {
  it("accepts a write key added by an applied configuration, and refuses one it removed", async () => {
    const ingestion = await import("@kairos/ingestion");
    const ing = await ingestion.startIngestion(
      loadConfig(ingestion.configSpec, {
        NATS_URL: nats.url,
        GRPC_PORT: "0",
        OPS_PORT: "0",
        HTTP_PORT: "0",
        LOG_LEVEL: "silent",
        KAIROS_CONFIG: fixture,
      }),
    );
    try {
      const track = (key: string) =>
        fetch(`${ing.httpUrl}/v1/track`, {
          method: "POST",
          headers: {
            authorization: `Basic ${Buffer.from(`${key}:`).toString("base64")}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({ userId: "u-1", event: "Key Tried" }),
        }).then((r) => r.status);
      const base = readFileSync(fixture, "utf8");
      const oldKey = /- key: (\S+)/.exec(base)?.[1] ?? "";
      expect(await track("rotated-key-0001")).toBe(401);
      const rotated = join(dir, "rotated.yaml");
      writeFileSync(rotated, base.replace(`key: ${oldKey}`, "key: rotated-key-0001"));
      expect((await apply(rotated)).code).toBe(0);
      await waitFor(async () => (await track("rotated-key-0001")) === 200, { timeoutMs: 15_000 });
      expect(await track(oldKey)).toBe(401);
    } finally {
      await ing.stop();
    }
  });
});
