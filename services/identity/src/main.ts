import { loadConfigOrExit } from "@kairos/kit";
import { configSpec, startIdentity } from "./service.js";

const cfg = loadConfigOrExit(configSpec, "identity");
await startIdentity(cfg, { handleSignals: true });
