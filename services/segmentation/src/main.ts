import { loadConfigOrExit } from "@kairos/kit";
import { MeshConfigError } from "@kairos/mesh-config";
import { configSpec, startSegmentation } from "./service.js";

const cfg = loadConfigOrExit(configSpec, "segmentation");
try {
  await startSegmentation(cfg, { handleSignals: true });
} catch (e) {
  if (!(e instanceof MeshConfigError)) throw e;
  process.stderr.write(`${JSON.stringify({ level: "fatal", service: "segmentation", msg: e.message })}\n`);
  process.exit(78);
}
