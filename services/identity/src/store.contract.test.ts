/**
 * The profile store contract, against every adapter: JetStream KV always (a real
 * nats-server), the write-through cache over it, and MongoDB where `MONGODB_URI` is set.
 */
import { afterAll, beforeAll, describe } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { NatsServer } from "@kairos/testkit";
import { CachingProfileStore, KvProfileStore } from "./store.js";
import { MongoProfileStore } from "./mongo-store.js";
import { profileStoreContract } from "./store.contract.js";

describe("JetStream KV", () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let kv: KvProfileStore;
  beforeAll(async () => {
    server = await NatsServer.start();
    nc = await connect({ servers: server.url });
    kv = await KvProfileStore.open(nc);
  });
  afterAll(async () => {
    await nc?.close();
    await server?.[Symbol.asyncDispose]();
  });
  profileStoreContract("JetStream KV", () => kv);
  profileStoreContract("write-through cache over JetStream KV", () => new CachingProfileStore(kv));
});

const uri = process.env.MONGODB_URI;
describe.skipIf(uri === undefined || uri === "")("MongoDB", () => {
  let mongo: MongoProfileStore;
  beforeAll(async () => {
    mongo = await MongoProfileStore.open(uri!, `kairos_contract_${process.pid}`);
  });
  afterAll(async () => {
    await mongo?.dropDatabase();
    await mongo?.close();
  });
  profileStoreContract("MongoDB", () => mongo);
});
