import { runDispatcher } from "@kairos/dispatcher-sdk";
import { contactCentreChannel } from "./service.js";

await runDispatcher(contactCentreChannel);
