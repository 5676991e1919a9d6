// 3. The service's main: environment, signals, exit 78 on bad configuration.
import { runDispatcher } from "@kairos/dispatcher-sdk";
import { chatChannel } from "./chat.js";

await runDispatcher(chatChannel);
