import { runDispatcher } from "@kairos/dispatcher-sdk";
import { webhookChannel } from "./service.js";

await runDispatcher(webhookChannel);
