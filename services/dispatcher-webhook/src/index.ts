/** The webhook dispatcher's public surface. */
export { configSpec, startDispatcherWebhook, webhookChannel } from "./service.js";
export { requestBody } from "./delivery.js";
