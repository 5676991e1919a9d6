/** Prometheus metrics shared by every service: one registry per process. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Latency buckets in seconds, fine below 10 ms where the stage SLOs live. */
export const LATENCY_BUCKETS_S = [
  0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
  10, 30, 60, 120, 300, 900, 1800,
];

/** The metrics of one service process. */
export class Metrics {
  readonly registry = new Registry();
  /** Time a message spends in a service's handler (its own processing), per stage. */
  readonly stageDuration: Histogram<"stage" | "result">;
  /** The stage's latency objective (p99, seconds), exported beside the histogram. */
  readonly stageObjective: Gauge<"stage">;
  readonly messages: Counter<"stream" | "consumer" | "result">;
  readonly deadLetters: Counter<"reason">;
  readonly rpcDuration: Histogram<"method" | "code">;
  readonly consumerPending: Gauge<"stream" | "consumer">;

  constructor(readonly service: string) {
    this.registry.setDefaultLabels({ service });
    collectDefaultMetrics({ register: this.registry, prefix: "kairos_" });
    this.stageDuration = new Histogram({
      name: "kairos_stage_duration_seconds",
      help: "Own processing time per message and stage, in seconds.",
      labelNames: ["stage", "result"],
      buckets: LATENCY_BUCKETS_S,
      registers: [this.registry],
    });
    this.stageObjective = new Gauge({
      name: "kairos_stage_objective_seconds",
      help: "Latency objective (p99) of a stage, in seconds.",
      labelNames: ["stage"],
      registers: [this.registry],
    });
    this.messages = new Counter({
      name: "kairos_messages_total",
      help: "Messages handled by a consumer, by result (ack, retry, dead).",
      labelNames: ["stream", "consumer", "result"],
      registers: [this.registry],
    });
    this.deadLetters = new Counter({
      name: "kairos_dead_letters_total",
      help: "Messages sent to the dead-letter stream, by reason.",
      labelNames: ["reason"],
      registers: [this.registry],
    });
    this.rpcDuration = new Histogram({
      name: "kairos_rpc_duration_seconds",
      help: "gRPC handling time, in seconds.",
      labelNames: ["method", "code"],
      buckets: LATENCY_BUCKETS_S,
      registers: [this.registry],
    });
    this.consumerPending = new Gauge({
      name: "kairos_consumer_pending_messages",
      help: "Messages in the stream not yet delivered to the consumer (consumer lag).",
      labelNames: ["stream", "consumer"],
      registers: [this.registry],
    });
  }
}
