import type { NatsConnection } from "@nats-io/transport-node";

/**
 * Collects every message published on `subject` (core NATS, wildcards allowed)
 * from now on, decoded, into the returned array — what a test reads outcomes,
 * intents or cancellations from.
 */
export function collect<T>(nc: NatsConnection, subject: string, decode: (data: Uint8Array) => T): T[] {
  const into: T[] = [];
  nc.subscribe(subject, {
    callback: (err, m) => {
      if (err === null) into.push(decode(m.data));
    },
  });
  return into;
}
