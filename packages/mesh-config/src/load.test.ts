import { describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { loadMeshConfig, MeshConfigError, parseMeshConfig, writeKeyIndex } from "./load.js";

const demo = fileURLToPath(new URL("../../../config/demo.yaml", import.meta.url));

describe("mesh config", () => {
  it("loads the demo configuration", () => {
    const cfg = loadMeshConfig(demo);
    expect(cfg.workspaces[0]?.id).toBe("demo");
    expect(writeKeyIndex(cfg).size).toBeGreaterThan(0);
    expect(cfg.channels.map((c) => c.name)).toContain("webhook");
  });

  it("refuses bad CEL, unknown channels and missing fields, naming file, line and field", () => {
    const text = [
      "workspaces:",
      "  - id: w1",
      "    writeKeys:",
      "      - key: abcdefgh",
      "        source: web",
      "    segments:",
      "      - name: gold",
      "        condition: 'profile.traits.plan =='",
      "    journeys:",
      "      - name: j1",
      "        trigger: { segmentEntered: gold }",
      "        action: { channel: pigeon }",
      "channels:",
      "  - name: webhook",
      "    mode: inspire",
      "    freshnessSlo: 30s",
    ].join("\n");
    let err: unknown;
    try {
      parseMeshConfig(text, "bad.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MeshConfigError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/bad\.yaml:8: workspaces\[0\]\.segments\[0\]\.condition: invalid CEL/);
    expect(msg).toMatch(
      /bad\.yaml:12: workspaces\[0\]\.journeys\[0\]\.action\.channel: unknown channel "pigeon"/,
    );

    expect(() => parseMeshConfig("workspaces:\n  - timezone: UTC\n", "missing.yaml")).toThrow(
      /missing\.yaml:2: workspaces\[0\]\.id: Required/,
    );
    expect(() =>
      parseMeshConfig(
        "channels:\n  - name: x\n    mode: inspire\n    freshnessSlo: soon\nworkspaces: []",
        "d.yaml",
      ),
    ).toThrow(/d\.yaml:4: channels\[0\]\.freshnessSlo: "soon" is not a duration/);
  });

  it("refuses a journey with neither an action nor branches", () => {
    const text = [
      "workspaces:",
      "  - id: w1",
      "    journeys:",
      "      - name: j2",
      "        trigger: { event: Product Added }",
      "channels: []",
    ].join("\n");
    expect(() => parseMeshConfig(text, "n.yaml")).toThrow(
      /n\.yaml:4: workspaces\[0\]\.journeys\[0\]\.action: a journey needs an action, branches, or both/,
    );
  });

  it("checks each branch arm: CEL, otherwise last, channels", () => {
    const text = [
      "workspaces:",
      "  - id: w1",
      "    journeys:",
      "      - name: j1",
      "        trigger: { event: Product Added }",
      "        wait: 1h",
      "        branches:",
      "          - action: { channel: webhook }",
      "          - when: 'profile.traits.plan =='",
      "            action: { channel: pigeon }",
      "      - name: j3",
      "        trigger: { date: { trait: birthday, at: '09:00' } }",
      "        branches: [{ action: { channel: webhook } }]",
      "channels:",
      "  - name: webhook",
      "    mode: inspire",
      "    freshnessSlo: 30s",
    ].join("\n");
    let msg = "";
    try {
      parseMeshConfig(text, "b.yaml");
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/journeys\[0\]\.branches\[0\]\.when: only the last arm may go without `when`/);
    expect(msg).toMatch(/b\.yaml:9: workspaces\[0\]\.journeys\[0\]\.branches\[1\]\.when: invalid CEL/);
    expect(msg).toMatch(/journeys\[0\]\.branches\[1\]\.action\.channel: unknown channel "pigeon"/);
    // A date journey may branch.
    expect(msg).not.toMatch(/journeys\[1\]/);
  });
});
