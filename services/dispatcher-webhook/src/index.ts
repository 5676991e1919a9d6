/** The webhook dispatcher's public surface; copy this service to write a new channel. */
export {
  configSpec,
  startDispatcherWebhook,
  type DispatcherConfig,
  type DispatcherHandle,
} from "./service.js";
export { classifyError, classifyStatus, requestBody, type Classified } from "./delivery.js";
