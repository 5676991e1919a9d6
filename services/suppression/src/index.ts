/** The suppression service's public surface. */
export {
  configSpec,
  startSuppression,
  type StartOptions,
  type SuppressionConfig,
  type SuppressionHandle,
} from "./service.js";
export {
  applicableConsent,
  capDay,
  decide,
  localDay,
  optOuts,
  timeZoneOf,
  type CapState,
  type ConsentRecord,
  type IntentFacts,
  type ProfileFacts,
  type SuppressReason,
  type Verdict,
} from "./decide.js";
export { grpcProfileLookup, type ProfileLookup } from "./profiles.js";
