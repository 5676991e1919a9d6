/**
 * A minimal service used by the shutdown tests: it consumes one subject with a
 * slow handler that appends each body it finished to a ledger file.
 */
import { appendFileSync } from "node:fs";
import { env, loadConfigOrExit } from "../config.js";
import { ServiceRuntime, runtimeConfig } from "../runtime.js";

const cfg = loadConfigOrExit(
  {
    ...runtimeConfig,
    OPS_PORT: env.port(0),
    SUBJECT: env.string(),
    DURABLE: env.string(),
    LEDGER: env.string(),
    SLOW_MS: env.duration(1500),
    CONCURRENCY: env.int(1, { min: 1 }),
  },
  "slow-worker",
);

const rt = await ServiceRuntime.start({
  service: "slow-worker",
  natsUrl: cfg.NATS_URL,
  opsPort: cfg.OPS_PORT,
  logLevel: cfg.LOG_LEVEL,
  shutdownTimeoutMs: cfg.SHUTDOWN_TIMEOUT,
  handleSignals: true,
});
await rt.consume(
  {
    stream: "PROFILES",
    durable: cfg.DURABLE,
    filterSubject: cfg.SUBJECT,
    maxDeliver: 5,
    ackWaitMs: 30_000,
    maxAckPending: 100,
  },
  {
    stage: "slow",
    concurrency: cfg.CONCURRENCY,
    decode: (d) => new TextDecoder().decode(d),
    handle: async (body, ctx) => {
      rt.logger.info({ body, seq: ctx.streamSequence, delivery: ctx.deliveryCount }, "handling");
      await new Promise((r) => setTimeout(r, cfg.SLOW_MS));
      appendFileSync(cfg.LEDGER, `${body}\n`);
      rt.logger.info({ body }, "handled");
    },
  },
);
rt.logger.info("worker ready");
