/**
 * The dispatcher SDK: a channel team declares its channel and one delivery
 * function; consuming, deadlines, cancellation, idempotency, retries, rate
 * limits, circuit breaking, batching, outcomes, traces and freshness metrics
 * come from here. See docs/adding-a-channel.md.
 */
export * from "./action.js";
export * from "./batcher.js";
export * from "./circuit-breaker.js";
export * from "./classify.js";
export * from "./dispatcher.js";
export * from "./http.js";
export * from "./live.js";
export * from "./rate-limit.js";
export * from "./render.js";
