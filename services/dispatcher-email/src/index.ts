export {
  configSpec,
  emailChannel,
  settingsSchema,
  startDispatcherEmail,
  type EmailConfig,
} from "./service.js";
export { readUnsubscribeToken, renderEmail, unsubscribeToken, type EmailSettings } from "./message.js";
