/**
 * The mesh's protobuf contracts, generated from `proto/kairos/v1` by protoc-gen-es.
 * Never edit `gen/` by hand: run `pnpm run generate`.
 */
import "./text-encoding.js";
export * from "./gen/kairos/v1/event_pb.js";
export * from "./gen/kairos/v1/profile_pb.js";
export * from "./gen/kairos/v1/action_pb.js";
export * from "./gen/kairos/v1/dead_letter_pb.js";
export * from "./gen/kairos/v1/segment_pb.js";
export * from "./gen/kairos/v1/ingest_service_pb.js";
export * from "./gen/kairos/v1/profile_service_pb.js";
export * from "./gen/kairos/v1/segment_service_pb.js";
export * from "./gen/kairos/v1/suppression_service_pb.js";
export * from "./gen/kairos/v1/dispatcher_service_pb.js";
import { file_kairos_v1_event } from "./gen/kairos/v1/event_pb.js";
import { file_kairos_v1_profile } from "./gen/kairos/v1/profile_pb.js";
import { file_kairos_v1_action } from "./gen/kairos/v1/action_pb.js";
import { file_kairos_v1_dead_letter } from "./gen/kairos/v1/dead_letter_pb.js";
import { file_kairos_v1_segment } from "./gen/kairos/v1/segment_pb.js";
import { file_kairos_v1_ingest_service } from "./gen/kairos/v1/ingest_service_pb.js";
import { file_kairos_v1_profile_service } from "./gen/kairos/v1/profile_service_pb.js";
import { file_kairos_v1_segment_service } from "./gen/kairos/v1/segment_service_pb.js";
import { file_kairos_v1_suppression_service } from "./gen/kairos/v1/suppression_service_pb.js";
import { file_kairos_v1_dispatcher_service } from "./gen/kairos/v1/dispatcher_service_pb.js";

/** Every contract file, for server reflection. */
export const contractFiles = [
  file_kairos_v1_event,
  file_kairos_v1_profile,
  file_kairos_v1_action,
  file_kairos_v1_dead_letter,
  file_kairos_v1_segment,
  file_kairos_v1_ingest_service,
  file_kairos_v1_profile_service,
  file_kairos_v1_segment_service,
  file_kairos_v1_suppression_service,
  file_kairos_v1_dispatcher_service,
] as const;
export { toBinaryFast, fromBinaryFast } from "./fast-codec.js";
