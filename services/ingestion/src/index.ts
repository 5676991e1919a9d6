/** The ingestion service's public surface. */
export { configSpec, startIngestion, type IngestionConfig, type IngestionHandle } from "./service.js";
export {
  fromSegmentJson,
  validateEvent,
  InvalidEvent,
  MAX_EVENT_BYTES,
  MAX_BATCH_BYTES,
} from "./segment-spec.js";
export { writeKeyFromAuthorization } from "./http-api.js";
