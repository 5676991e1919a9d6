import { runDispatcher } from "@kairos/dispatcher-sdk";
import { emailChannel } from "./service.js";

await runDispatcher(emailChannel());
