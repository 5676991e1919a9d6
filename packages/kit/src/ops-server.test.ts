import { afterEach, describe, expect, it } from "vitest";
import { Metrics } from "./metrics.js";
import { startOpsServer, type OpsServer } from "./ops-server.js";

let ops: OpsServer | undefined;
afterEach(async () => {
  await ops?.close();
  ops = undefined;
});

describe("ops server", () => {
  it("serves /healthz, Prometheus /metrics and a /readyz that follows its checks", async () => {
    const metrics = new Metrics("ops-test");
    metrics.stageDuration.observe({ stage: "resolve", result: "ack" }, 0.002);
    let storeUp = false;
    ops = await startOpsServer({
      host: "127.0.0.1",
      port: 0,
      registry: metrics.registry,
      checks: [{ name: "store", check: () => storeUp }],
    });
    expect((await fetch(`${ops.url}/healthz`)).status).toBe(200);

    const text = await (await fetch(`${ops.url}/metrics`)).text();
    expect(text).toContain(
      'kairos_stage_duration_seconds_bucket{le="0.002",service="ops-test",stage="resolve",result="ack"} 1',
    );
    expect(text).toContain("kairos_process_resident_memory_bytes");

    const notReady = await fetch(`${ops.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false, failed: { store: "not ready" } });
    storeUp = true;
    expect((await fetch(`${ops.url}/readyz`)).status).toBe(200);
    ops.setDraining();
    expect((await fetch(`${ops.url}/readyz`)).status).toBe(503);
    expect((await fetch(`${ops.url}/nope`)).status).toBe(404);
  });
});
