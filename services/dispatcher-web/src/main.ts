import { runDispatcher } from "@kairos/dispatcher-sdk";
import { webChannel } from "./service.js";

await runDispatcher(webChannel());
