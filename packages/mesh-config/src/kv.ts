/**
 * The mesh configuration in the JetStream KV bucket `config` (key `mesh`, the
 * YAML text and where it came from): `kairos apply -f FILE` writes it after
 * validating it, and services that reload live watch it. A file that does not
 * validate is never written, so what services hold is always valid.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { parseMeshConfig, type MeshConfigError } from "./load.js";
import type { MeshConfig } from "./schema.js";

export const CONFIG_BUCKET = "config";
export const CONFIG_KEY = "mesh";

interface Stored {
  file: string;
  text: string;
  appliedAt: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function bucket(nc: NatsConnection, replicas = 1): Promise<KV> {
  return new Kvm(nc).create(CONFIG_BUCKET, { history: 10, replicas });
}

/** Validates `text` (throws a MeshConfigError naming file, line and field) and stores it; returns the revision. */
export async function applyMeshConfig(
  nc: NatsConnection,
  text: string,
  file: string,
  replicas = 1,
): Promise<{ config: MeshConfig; revision: number }> {
  const config = parseMeshConfig(text, file);
  const stored: Stored = { file, text, appliedAt: new Date().toISOString() };
  const revision = await (await bucket(nc, replicas)).put(CONFIG_KEY, enc.encode(JSON.stringify(stored)));
  return { config, revision };
}

export interface ConfigWatch {
  /** The applied configuration when one is stored, else undefined (use the file). */
  readonly initial: { config: MeshConfig; file: string; revision: number } | undefined;
  stop(): void;
}

/**
 * Reads the applied configuration and watches for new ones. `onChange` gets each
 * later valid one; an invalid one (written by something other than `apply`)
 * goes to `onInvalid` and the previous one stays.
 */
export async function watchMeshConfig(
  nc: NatsConnection,
  onChange: (config: MeshConfig, file: string, revision: number) => void,
  onInvalid: (error: MeshConfigError | Error, revision: number) => void,
  replicas = 1,
): Promise<ConfigWatch> {
  const kv = await bucket(nc, replicas);
  const parse = (value: Uint8Array) => {
    const s = JSON.parse(dec.decode(value)) as Stored;
    return { config: parseMeshConfig(s.text, s.file), file: s.file };
  };
  let initial: ConfigWatch["initial"];
  const current = await kv.get(CONFIG_KEY);
  if (current !== null && current.operation === "PUT" && current.value.length > 0) {
    try {
      initial = { ...parse(current.value), revision: current.revision };
    } catch (e) {
      onInvalid(e as Error, current.revision);
    }
  }
  const watch = await kv.watch({ key: CONFIG_KEY });
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== "PUT" || e.value.length === 0) continue;
      if (initial !== undefined && e.revision <= initial.revision) continue;
      try {
        const { config, file } = parse(e.value);
        onChange(config, file, e.revision);
      } catch (err) {
        onInvalid(err as Error, e.revision);
      }
    }
  })();
  return { initial, stop: () => watch.stop() };
}

/** Where `followMeshConfig` says what it applied (a pino logger fits). */
export interface ConfigLog {
  info(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/**
 * Applies the configuration stored with `kairos apply` now (when there is one) and every valid
 * one after it, live. One that does not parse, or that `use` throws on, is logged and the
 * previous one stays in force.
 */
export async function followMeshConfig(
  nc: NatsConnection,
  use: (config: MeshConfig) => void,
  log: ConfigLog,
  replicas = 1,
): Promise<ConfigWatch> {
  const apply = (config: MeshConfig, file: string, revision: number, first: boolean) => {
    try {
      use(config);
      log.info(
        { file, revision },
        first ? "using the applied configuration" : "applied configuration reloaded",
      );
    } catch (err) {
      log.error({ err, file, revision }, "applied configuration not loaded; the previous one stays");
    }
  };
  const watch = await watchMeshConfig(
    nc,
    (config, file, revision) => apply(config, file, revision, false),
    (err, revision) =>
      log.error({ err, revision }, "applied configuration is invalid; the previous one stays"),
    replicas,
  );
  if (watch.initial !== undefined)
    apply(watch.initial.config, watch.initial.file, watch.initial.revision, true);
  return watch;
}
