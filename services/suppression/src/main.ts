import { runMain } from "@kairos/kit";
import { configSpec, startSuppression } from "./service.js";

await runMain("suppression", configSpec, startSuppression);
