/** The Kairos service kit: everything cross-cutting, written once. */
export * from "./config.js";
export * from "./logger.js";
export * from "./telemetry.js";
export * from "./metrics.js";
export * from "./ops-server.js";
export * from "./grpc-server.js";
export * from "./grpc-client.js";
export * from "./topology.js";
export * from "./publisher.js";
export * from "./consumer.js";
export * from "./semaphore.js";
export * from "./lifecycle.js";
export * from "./runtime.js";
export * from "./grpc-probe.js";
export * from "./keyed-lock.js";
export * from "./service.js";
export * from "./cancellations.js";
