export { configSpec, startDispatcherWeb, webChannel, type WebConfig } from "./service.js";
export { liveBody, parseStreamRequest, sseFrame } from "./stream.js";
