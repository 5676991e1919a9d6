export {
  configSpec,
  contactCentreChannel,
  crmRequest,
  settingsSchema,
  startDispatcherContactCentre,
  type ContactCentreSettings,
} from "./service.js";
