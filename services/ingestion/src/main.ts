import { runMain } from "@kairos/kit";
import { configSpec, startIngestion } from "./service.js";

await runMain("ingestion", configSpec, startIngestion);
