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
  consentRecords,
  decide,
  dueAtOf,
  emptyContact,
  localDay,
  optOuts,
  timeZoneOf,
  withCancelled,
  withConsent,
  withSent,
  type ConsentRecord,
  type ContactState,
  type IntentFacts,
  type ListedEntry,
  type Policy,
  type ProfileFacts,
  type SuppressReason,
  type Verdict,
} from "./decide.js";
export { instantOf, wallTime, windowEnd, type DailyWindow, type WallTime } from "@kairos/kit";
export { grpcProfileLookup, type ProfileLookup } from "@kairos/kit";
