import { runMain } from "@kairos/kit";
import { configSpec, startIdentity } from "./service.js";

await runMain("identity", configSpec, startIdentity);
