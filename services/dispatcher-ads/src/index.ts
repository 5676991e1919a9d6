export { adsChannel, configSpec, settingsSchema, startDispatcherAds, type AdsSettings } from "./service.js";
export * from "./audience.js";
