import { loadConfigOrExit } from "@kairos/kit";
import { MeshConfigError } from "@kairos/mesh-config";
import { configSpec, startIngestion } from "./service.js";

const cfg = loadConfigOrExit(configSpec, "ingestion");
try {
  await startIngestion(cfg, { handleSignals: true });
} catch (e) {
  if (!(e instanceof MeshConfigError)) throw e;
  process.stderr.write(`${JSON.stringify({ level: "fatal", service: "ingestion", msg: e.message })}\n`);
  process.exit(78);
}
