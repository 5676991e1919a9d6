/** The identity service's public surface. */
export { configSpec, startIdentity, toProfile, type IdentityConfig, type IdentityHandle } from "./service.js";
export { Resolver, Unresolvable, type Resolution } from "./resolver.js";
export {
  CachingProfileStore,
  KvProfileStore,
  WriteConflict,
  indexKey,
  profileBuckets,
  type ProfileStore,
  type IndexTarget,
} from "./store.js";
export * from "./profile-record.js";
export { MongoProfileStore } from "./mongo-store.js";
export { profileStoreContract } from "./store.contract.js";
