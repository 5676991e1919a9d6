import { runMain } from "@kairos/kit";
import { configSpec, startSegmentation } from "./service.js";

await runMain("segmentation", configSpec, startSegmentation);
