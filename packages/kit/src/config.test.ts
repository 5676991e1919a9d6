import { describe, expect, it } from "vitest";
import { ConfigError, env, loadConfig } from "./config.js";

const spec = {
  GRPC_PORT: env.port(50051),
  NATS_URL: env.string("nats://127.0.0.1:4222"),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
  TRACING: env.bool(false),
  TIMEOUT: env.duration(5000),
  LEVEL: env.oneOf(["info", "debug"], "info"),
  WEBHOOK_URL: env.url(),
};

describe("loadConfig", () => {
  it("applies defaults and parses typed values", () => {
    const cfg = loadConfig(spec, { WEBHOOK_URL: "http://127.0.0.1:9/hook", TIMEOUT: "2m", TRACING: "yes" });
    expect(cfg).toEqual({
      GRPC_PORT: 50051,
      NATS_URL: "nats://127.0.0.1:4222",
      CONCURRENCY: 64,
      TRACING: true,
      TIMEOUT: 120_000,
      LEVEL: "info",
      WEBHOOK_URL: "http://127.0.0.1:9/hook",
    });
  });

  it("names every bad or missing variable in one error", () => {
    let err: unknown;
    try {
      loadConfig(spec, { GRPC_PORT: "abc", CONCURRENCY: "0", LEVEL: "loud", TIMEOUT: "soon" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join("\n");
    expect(problems).toContain('GRPC_PORT="abc" is not a valid port');
    expect(problems).toContain("CONCURRENCY=0 is outside 1..4096");
    expect(problems).toContain('LEVEL="loud" is not one of info, debug');
    expect(problems).toContain('TIMEOUT="soon" is not a duration');
    expect(problems).toContain("WEBHOOK_URL is required");
  });

  it("rejects out-of-range ports and non-http URLs", () => {
    expect(() => loadConfig({ P: env.port() }, { P: "70000" })).toThrow(/P="70000" is not a valid port/);
    expect(() => loadConfig({ U: env.url() }, { U: "ftp://x" })).toThrow(
      /U="ftp:\/\/x" must use http: or https:/,
    );
  });
});
