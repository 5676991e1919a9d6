import { runDispatcher } from "@kairos/dispatcher-sdk";
import { adsChannel } from "./service.js";

await runDispatcher(adsChannel());
