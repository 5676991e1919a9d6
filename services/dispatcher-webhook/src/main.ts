import { runMain } from "@kairos/kit";
import { configSpec, startDispatcherWebhook } from "./service.js";

await runMain("dispatcher-webhook", configSpec, startDispatcherWebhook);
