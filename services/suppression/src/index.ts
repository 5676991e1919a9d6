/** The suppression service's public surface. */
export { configSpec, startSuppression, type SuppressionConfig, type SuppressionHandle } from "./service.js";
export { decide, localDay, optOuts, timeZoneOf, type Facts, type Verdict } from "./decide.js";
export { grpcProfileLookup, type ProfileLookup } from "./profiles.js";
