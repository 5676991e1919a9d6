/**
 * `./kairos apply -f FILE [--nats URL]`: validates a mesh configuration and
 * stores it in the JetStream KV bucket `config`, from which services that
 * reload live (segmentation) take it at once. A file with problems is refused
 * with each one named (file, line, field) and nothing is stored, so the
 * configuration in force stays.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { applyMeshConfig } from "@kairos/mesh-config";

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: kairos apply -f FILE [--nats nats://127.0.0.1:4222]\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
let file: string | undefined;
let nats = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "-f" || a === "--file") file = args[++i];
  else if (a === "--nats") nats = args[++i] ?? usage("--nats needs a URL");
  else usage(`unknown argument ${JSON.stringify(a)}`);
}
if (file === undefined) usage("-f FILE is required");
const path = resolve(file);
let text: string;
try {
  text = readFileSync(path, "utf8");
} catch (e) {
  usage(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
}

const nc = await connect({ servers: nats, name: "kairos-apply" }).catch((e: unknown) => {
  process.stderr.write(`cannot reach NATS at ${nats}: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
try {
  const { config, revision } = await applyMeshConfig(nc, text, file);
  const segments = config.workspaces.reduce((n, w) => n + w.segments.length, 0);
  const journeys = config.workspaces.reduce((n, w) => n + w.journeys.length, 0);
  process.stdout.write(
    `applied ${file} (revision ${revision}): ${config.workspaces.length} workspaces, ${segments} segments, ${journeys} journeys, ${config.channels.length} channels\n`,
  );
} catch (e) {
  process.stderr.write(
    `${e instanceof Error ? e.message : String(e)}\nnothing applied; the configuration in force stays\n`,
  );
  process.exitCode = 1;
} finally {
  await nc.close();
}
