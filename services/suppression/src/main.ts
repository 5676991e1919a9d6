import { loadConfigOrExit } from "@kairos/kit";
import { MeshConfigError } from "@kairos/mesh-config";
import { configSpec, startSuppression } from "./service.js";

const cfg = loadConfigOrExit(configSpec, "suppression");
try {
  await startSuppression(cfg, { handleSignals: true });
} catch (e) {
  if (!(e instanceof MeshConfigError)) throw e;
  process.stderr.write(`${JSON.stringify({ level: "fatal", service: "suppression", msg: e.message })}\n`);
  process.exit(78);
}
