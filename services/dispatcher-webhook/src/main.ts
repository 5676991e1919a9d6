import { ConfigError, loadConfigOrExit } from "@kairos/kit";
import { MeshConfigError } from "@kairos/mesh-config";
import { configSpec, startDispatcherWebhook } from "./service.js";

const cfg = loadConfigOrExit(configSpec, "dispatcher-webhook");
try {
  await startDispatcherWebhook(cfg, { handleSignals: true });
} catch (e) {
  if (!(e instanceof MeshConfigError || e instanceof ConfigError)) throw e;
  process.stderr.write(
    `${JSON.stringify({ level: "fatal", service: "dispatcher-webhook", msg: e.message })}\n`,
  );
  process.exit(78);
}
