/**
 * The identity service: resolves every event to one profile, keeps profiles
 * in the profile store, publishes a `ProfileChanged` per applied event, and
 * answers `ProfileService` lookups by any identifier.
 */
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Counter, Gauge } from "prom-client";
import {
  EventSchema,
  EventType,
  ProfileChangedSchema,
  type ProfileChanged,
  ProfileSchema,
  ProfileService,
  type Event,
  type Profile,
  fromBinaryFast,
} from "@kairos/contracts";
import {
  consumers,
  currentTraceparent,
  DurableTimers,
  env,
  keyToken,
  GrpcError,
  implement,
  KeyedLock,
  partitionOf,
  PermanentError,
  runtimeConfig,
  ConfigError,
  startService,
  type ServiceRuntime,
  type ServiceHandle,
  type StartOptions,
  subjects,
  type ConfigOf,
} from "@kairos/kit";
import { mergeOf, splitOff, type Ident, type ProfileRecord } from "./profile-record.js";
import { compileRules, type CompiledRules } from "./identity-rules.js";
import { computedValues, nextWindowChange, slideWindows } from "./computed.js";
import { followMeshConfig, loadMeshConfig, type MeshConfig } from "@kairos/mesh-config";
import { Resolver, Unresolvable } from "./resolver.js";
import { Erasure, NoProfile } from "./erasure.js";
import { CachingProfileStore, KvProfileStore, WriteConflict, type ProfileStore } from "./store.js";
import { MongoProfileStore } from "./mongo-store.js";
import { ProfileReadView } from "./view.js";

export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50052),
  OPS_PORT: env.port(9462),
  PARTITIONS: env.int(16, { min: 1, max: 1024 }),
  /** The mesh config: each workspace's identity rules (identifier fields, priority, limits, blocked values). */
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
  /** Where profiles live: JetStream KV (embedded default) or MongoDB (production). */
  PROFILE_STORE: env.oneOf(["kv", "mongodb"], "kv"),
  MONGODB_URI: env.string(""),
  MONGODB_DB: env.string("kairos"),
  /** Profiles and identifiers kept in the resolve path's cache. */
  CACHE_ENTRIES: env.int(200_000, { min: 0, max: 10_000_000 }),
  /**
   * How long an identifier claimed for a new profile waits for that profile to be written before
   * another writer takes the claim over (the first is presumed dead).
   */
  CLAIM_TAKEOVER: env.duration(5000),
  /**
   * Profiles and identifiers `GetProfile` answers from memory (a view of the KV store fed by
   * ordered consumers; about 0.3 KiB an entry for a typical profile); 0 reads the store on every lookup.
   * Lookups of what does not fit read the store.
   */
  LOOKUP_VIEW_ENTRIES: env.int(5_000_000, { min: 0, max: 100_000_000 }),
  /**
   * The lookup view's memory bound in MiB, estimated from keys and JSON texts plus a per-entry
   * overhead (the process's RSS runs about 1.25 times this plus its base of ~150 MiB); 0 turns the view off.
   */
  LOOKUP_VIEW_MIB: env.int(1024, { min: 0, max: 1_048_576 }),
  /** How often profiles whose windowed computed traits slid are looked for. */
  WINDOW_TICK: env.duration(250),
};

/** A profile whose windowed computed traits next slide at the timer's due time. */
interface WindowTimer {
  workspace: string;
  profileId: string;
}

export type IdentityConfig = ConfigOf<typeof configSpec>;

export type IdentityHandle = ServiceHandle;

export type { StartOptions };

/** The protobuf view of a stored profile, with its computed traits as of `nowMs`. */
export function toProfile(p: ProfileRecord, rules?: CompiledRules, nowMs = Date.now()): Profile {
  const computed =
    rules === undefined || p.computed === undefined ? {} : computedValues(p.computed, rules.computed, nowMs);
  return create(ProfileSchema, {
    workspace: p.workspace,
    profileId: p.profileId,
    version: BigInt(p.version),
    identifiers: p.identifiers,
    traits: p.traits,
    computedTraits: computed,
    mergedFrom: p.mergedFrom,
    createdAt: timestampFromMs(p.createdAtMs),
    updatedAt: timestampFromMs(p.updatedAtMs),
    traitTimes: Object.fromEntries(
      Object.entries(p.traitTimes ?? {})
        .filter(([k]) => p.traits[k] !== undefined)
        .map(([k, ms]) => [k, timestampFromMs(ms)]),
    ),
    merges: (p.merges ?? []).map((m) => ({
      profileId: m.profileId,
      mergedAt: timestampFromMs(m.atMs),
      eventId: m.eventId,
      identifiers: m.added,
      linkedBy: m.linkedBy ?? [],
    })),
    splitFrom: p.splitFrom ?? "",
    ...(p.split === undefined
      ? {}
      : { splitFromVersion: BigInt(p.split.survivorVersion), splitAt: timestampFromMs(p.split.atMs) }),
  });
}

const eventTypeNames: Record<number, string> = {
  [EventType.TRACK]: "track",
  [EventType.IDENTIFY]: "identify",
  [EventType.PAGE]: "page",
  [EventType.SCREEN]: "screen",
  [EventType.GROUP]: "group",
  [EventType.ALIAS]: "alias",
};

/** An identifier from a request, validated and normalised. */
/** An identifier from a request, validated against the workspace's rules and normalised like events' are. */
function requestedIdentifier(
  rules: CompiledRules,
  id: { type: string; value: string } | undefined,
): Ident | { type: "profile_id"; value: string } {
  if (id === undefined || id.value === "") {
    throw new GrpcError(grpc.status.INVALID_ARGUMENT, "identifier with a type and a value is required");
  }
  if (id.type === "profile_id") return { type: "profile_id", value: id.value };
  if (!rules.types.includes(id.type)) {
    throw new GrpcError(
      grpc.status.INVALID_ARGUMENT,
      `identifier.type must be one of profile_id, ${rules.types.join(", ")}; got ${JSON.stringify(id.type)}`,
    );
  }
  const value = rules.normalize(id.type, id.value);
  if (value === undefined) {
    throw new GrpcError(
      grpc.status.INVALID_ARGUMENT,
      `${JSON.stringify(id.value)} is not a usable ${id.type} (blocked, or not valid after normalisation)`,
    );
  }
  return { type: id.type, value };
}

function requireWorkspace(ws: string): string {
  if (ws === "") throw new GrpcError(grpc.status.INVALID_ARGUMENT, "workspace is required");
  return ws;
}

/** The configured profile store; MongoDB is closed with the connections on shutdown. */
async function openStore(cfg: IdentityConfig, runtime: ServiceRuntime): Promise<ProfileStore> {
  if (cfg.PROFILE_STORE === "kv") return KvProfileStore.open(runtime.nc, cfg.NATS_REPLICAS);
  const mongo = await MongoProfileStore.open(cfg.MONGODB_URI, cfg.MONGODB_DB);
  runtime.lifecycle.add("connections", "mongodb", () => mongo.close());
  return mongo;
}

export async function startIdentity(cfg: IdentityConfig, opts: StartOptions = {}): Promise<IdentityHandle> {
  // Before anything starts: a missing URI is a configuration error, not a connection failure.
  if (cfg.PROFILE_STORE === "mongodb" && cfg.MONGODB_URI === "") {
    throw new ConfigError(["PROFILE_STORE=mongodb needs MONGODB_URI (e.g. mongodb://mongo:27017)"]);
  }
  const clock = opts.clock ?? Date.now;
  const compileAll = (mesh: MeshConfig) =>
    new Map(mesh.workspaces.map((w) => [w.id, compileRules(w.identity, w.computedTraits)]));
  let compiled = compileAll(loadMeshConfig(cfg.KAIROS_CONFIG));
  const defaults = compileRules();
  // Workspaces the config does not name get the default rules (user_id, email, anonymous_id).
  const rulesFor = (ws: string) => compiled.get(ws) ?? defaults;
  return startService("identity", cfg, opts, async (runtime) => {
    // A configuration applied with `kairos apply` overrides the file, and reloads live (identity
    // rules and computed traits; profiles already merged stay merged).
    const configWatch = await followMeshConfig(
      runtime.nc,
      (mesh) => {
        compiled = compileAll(mesh);
      },
      runtime.logger,
      cfg.NATS_REPLICAS,
    );
    runtime.lifecycle.add("intake", "config-watch", () => configWatch.stop());
    const store = await openStore(cfg, runtime);
    runtime.addReadinessCheck({ name: "profile-store", check: () => store.ping() });
    // The resolve path reads through a write-through cache; lookups over gRPC read the store.
    const cached = new CachingProfileStore(store, cfg.CACHE_ENTRIES);
    const onDropped = (e: Event, dropped: Ident[]) => {
      results.inc({ outcome: "limit_blocked" });
      runtime.logger.info(
        { workspace: e.workspace, event: e.messageId, dropped: dropped.map((d) => d.type) },
        "identifiers dropped from an event: merging would exceed the workspace's identifier limits",
      );
    };
    const resolver = new Resolver(cached, clock, rulesFor, onDropped, {
      fresh: store,
      staleClaimMs: cfg.CLAIM_TAKEOVER,
    });
    // Deletion and unmerge read the store itself; lookups read the in-memory view where there is one.
    const reader = new Resolver(store, clock, rulesFor);
    const view =
      store instanceof KvProfileStore && cfg.LOOKUP_VIEW_ENTRIES > 0 && cfg.LOOKUP_VIEW_MIB > 0
        ? await ProfileReadView.start(await runtime.extraConnection("lookup-view"), store, {
            maxEntries: cfg.LOOKUP_VIEW_ENTRIES,
            maxBytes: cfg.LOOKUP_VIEW_MIB * 1024 * 1024,
            logger: runtime.logger,
          })
        : undefined;
    if (view !== undefined) {
      runtime.lifecycle.add("intake", "lookup-view", () => view.stop());
      // Lookups are routed to a replica once its view has loaded (before, each reads the store).
      runtime.addReadinessCheck({ name: "lookup-view", check: () => view.ready });
      new Gauge({
        name: "kairos_identity_view_entries",
        help: "Profiles and identifier index entries held in the lookup view.",
        labelNames: ["kind"],
        registers: [runtime.metrics.registry],
        collect() {
          const s = view.stats();
          this.set({ kind: "profile" }, s.profiles);
          this.set({ kind: "identifier" }, s.identifiers);
        },
      });
      new Gauge({
        name: "kairos_identity_view_bytes",
        help: "Estimated memory the lookup view holds (keys, JSON texts, per-entry overhead).",
        registers: [runtime.metrics.registry],
        collect() {
          this.set(view.bytes);
        },
      });
      new Gauge({
        name: "kairos_identity_view_lag_seconds",
        help: "How far behind the store the lookup view's last entry arrived.",
        registers: [runtime.metrics.registry],
        collect() {
          this.set(view.lagMs / 1000);
        },
      });
      new Counter({
        name: "kairos_identity_view_reads_total",
        help: "Lookup reads answered by the view (hit) or passed to the store (miss).",
        labelNames: ["result"],
        registers: [runtime.metrics.registry],
        collect() {
          this.reset();
          this.inc({ result: "hit" }, view.hits);
          this.inc({ result: "miss" }, view.misses);
        },
      });
    }
    const lookups = view === undefined ? reader : new Resolver(view, clock, rulesFor);
    const lock = new KeyedLock();
    const results = new Counter({
      name: "kairos_identity_events_total",
      help: "Events resolved, by outcome (applied, duplicate, merged, suppressed).",
      labelNames: ["outcome"],
      registers: [runtime.metrics.registry],
    });
    runtime.metrics.stageObjective.set({ stage: "resolve" }, 0.005);

    /** Publishes a profile change on its profile's partition; `msgID` makes a re-publish a duplicate. */
    const publishChanged = async (change: ProfileChanged, msgID: string) => {
      await runtime.publisher.publishMessage(
        subjects.profiles(change.workspace, partitionOf(change.profileId, cfg.PARTITIONS)),
        ProfileChangedSchema,
        change,
        { msgID },
      );
    };
    const publishChange = async (
      e: Event,
      r: Extract<Awaited<ReturnType<Resolver["resolve"]>>, { profile: ProfileRecord }>,
    ) => {
      const p = r.profile;
      // The change is the survivor's; its id is the one this event's change had the first time.
      const sameProfile = r.changeId.profileId === p.profileId;
      const profile = toProfile(p, rulesFor(p.workspace), clock());
      const change = create(ProfileChangedSchema, {
        workspace: p.workspace,
        profileId: p.profileId,
        version: BigInt(sameProfile ? r.changeId.version : p.version),
        changedTraits: r.changedTraits,
        computedTraits: profile.computedTraits ?? {},
        mergedFrom: r.merged,
        eventId: e.messageId,
        eventReceivedAt: e.receivedAt,
        profile,
        eventName: e.name,
        eventType: eventTypeNames[e.type] ?? "unspecified",
        eventProperties: e.properties ?? {},
        traceparent: currentTraceparent(),
      });
      await publishChanged(change, `${p.workspace}:${r.changeId.profileId}:${r.changeId.version}`);
    };

    // Windowed computed traits slide with time: when one next would, the profile is re-published
    // (a new version, no event), so a segment such as "3 orders in 30 days" exits without waiting
    // for the customer's next event. One durable timer per profile holding windowed aggregates.
    const windowKey = (ws: string, profileId: string) => `${keyToken(ws)}.${keyToken(profileId)}`;
    const slidesTotal = new Counter({
      name: "kairos_identity_window_slides_total",
      help: "Profiles re-published because a windowed computed trait slid with time.",
      registers: [runtime.metrics.registry],
    });
    /** A change of the profile's state that no event caused (a window slid, an unmerge). */
    const publishState = async (
      p: ProfileRecord,
      atMs: number,
      unmergedFrom = "",
      mergedFrom: readonly string[] = [],
      unmergedFromVersion = 0,
    ) => {
      const profile = toProfile(p, rulesFor(p.workspace), clock());
      const change = create(ProfileChangedSchema, {
        workspace: p.workspace,
        profileId: p.profileId,
        version: BigInt(p.version),
        computedTraits: profile.computedTraits ?? {},
        profile,
        eventReceivedAt: timestampFromMs(atMs),
        traceparent: currentTraceparent(),
        unmergedFrom,
        unmergedFromVersion: BigInt(unmergedFromVersion),
        mergedFrom: [...mergedFrom],
      });
      // The split's change has an id of its own: a split retried after a conflict may publish the
      // restored profile at a version an event of it was published under meanwhile.
      const id = `${p.workspace}:${p.profileId}:${p.version}`;
      await publishChanged(change, unmergedFrom === "" ? id : `${id}:split`);
    };
    const windowTimers = await DurableTimers.start<WindowTimer>(runtime.nc, {
      bucket: "profile-window-timers",
      replicas: cfg.NATS_REPLICAS,
      tickMs: cfg.WINDOW_TICK,
      clock,
      logger: runtime.logger,
      fire: async (_key, entry) => {
        const { workspace: ws, profileId } = entry.payload;
        const rules = rulesFor(ws).computed;
        for (let attempt = 0; ; attempt++) {
          const got = await cached.getProfile(ws, profileId);
          if (
            got === undefined ||
            got.value.mergedInto !== undefined ||
            got.value.erasing !== undefined ||
            got.value.computed === undefined
          ) {
            return undefined; // deleted, being erased or merged away since: the survivor has its own timer
          }
          const p = structuredClone(got.value);
          const now = clock();
          if (slideWindows(p.computed!, rules, now)) {
            p.version += 1;
            p.updatedAtMs = now;
            try {
              await cached.putProfile(p, got.revision);
            } catch (e) {
              if (e instanceof WriteConflict && attempt < 9) continue; // an event got there first
              throw e;
            }
            slidesTotal.inc();
          }
          // Published even when an event pruned the window first (the same version again, stored
          // once): a crash between the write above and this publish loses nothing.
          await publishState(p, entry.dueMs);
          const next = nextWindowChange(p.computed!, rules, now);
          return next === undefined ? undefined : { next: { dueMs: next, payload: entry.payload } };
        }
      },
    });
    runtime.lifecycle.add("intake", "window-timers", () => windowTimers.stop());
    runtime.addReadinessCheck({ name: "window-timers", check: () => windowTimers.ready });
    /** Sets, moves or removes a profile's window timer after a change; nothing when it stands. */
    const scheduleWindow = async (p: ProfileRecord, merged: readonly string[]) => {
      for (const loser of merged) await windowTimers.cancel(windowKey(p.workspace, loser));
      const rules = rulesFor(p.workspace).computed;
      const next = p.computed === undefined ? undefined : nextWindowChange(p.computed, rules, clock());
      const key = windowKey(p.workspace, p.profileId);
      if (next === windowTimers.dueOf(key)) return;
      if (next === undefined) await windowTimers.cancel(key);
      else
        await windowTimers.set(key, {
          dueMs: next,
          payload: { workspace: p.workspace, profileId: p.profileId },
        });
    };

    const erasure = new Erasure({
      store,
      writes: cached,
      reader,
      clock,
      publishDeletion: (p, version) =>
        publishChanged(
          create(ProfileChangedSchema, {
            workspace: p.workspace,
            profileId: p.profileId,
            version: BigInt(version),
            deleted: true,
            // Downstream erases what it keeps under these ids too.
            mergedFrom: p.mergedFrom,
            eventReceivedAt: timestampFromMs(clock()),
            traceparent: currentTraceparent(),
          }),
          `${p.workspace}:${p.profileId}:${version}`,
        ),
      dropState: (ws, profileId) => windowTimers.cancel(windowKey(ws, profileId)),
      exclusive: (key, fn) => lock.run(key, fn),
    });

    await runtime.consume(consumers.identity, {
      stage: "resolve",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinaryFast(EventSchema, b),
      handle: async (e) => {
        if (e.workspace === "" || e.messageId === "") {
          throw new PermanentError("event without workspace or message id");
        }
        // One customer's events one at a time, in order; other customers alongside.
        const key = `${e.workspace}|${e.userId !== "" ? e.userId : e.anonymousId}`;
        await lock.run(key, async () => {
          let r;
          try {
            r = await resolver.resolve(e);
          } catch (err) {
            if (err instanceof Unresolvable) throw new PermanentError(err.message, { cause: err });
            throw err;
          }
          if (r.kind === "suppressed") {
            results.inc({ outcome: "suppressed" });
            return;
          }
          results.inc({ outcome: r.merged.length > 0 ? "merged" : r.kind });
          // A redelivered event re-publishes its change with the same id: stored once,
          // and not lost when the process died between the write and the publish.
          await publishChange(e, r);
          // A redelivery that finished a stopped merge: the merge is a change of its own, without
          // the event (already published; downstream would act on it again under the survivor).
          if (r.mergedAs !== undefined) await publishState(r.profile, clock(), "", r.merged);
          await scheduleWindow(r.profile, r.merged);
        });
      },
    });

    /**
     * A lookup from the view, which may lag the store by milliseconds: a caller that knows of a
     * newer version (`minVersion`) than the view holds gets it from the store.
     */
    const lookUp = async (ws: string, id: Parameters<Resolver["find"]>[1], minVersion: bigint) => {
      const found = await lookups.find(ws, id);
      if (
        lookups !== reader &&
        minVersion > 0n &&
        (found === undefined || BigInt(found.value.version) < minVersion)
      )
        return reader.find(ws, id);
      return found;
    };

    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(ProfileService, {
        getProfile: async (req) => {
          const ws = requireWorkspace(req.workspace);
          const id = requestedIdentifier(rulesFor(ws), req.identifier);
          const found = await lookUp(ws, id, req.minVersion);
          if (found === undefined) {
            throw new GrpcError(
              grpc.status.NOT_FOUND,
              `no profile in workspace ${ws} for ${id.type} ${JSON.stringify(id.value)}`,
            );
          }
          return { profile: toProfile(found.value, rulesFor(ws), clock()) };
        },
        batchGetProfiles: async (req) => {
          const ws = requireWorkspace(req.workspace);
          if (req.identifiers.length > 1000) {
            throw new GrpcError(
              grpc.status.INVALID_ARGUMENT,
              `at most 1000 identifiers per call, got ${req.identifiers.length}`,
            );
          }
          if (req.minVersions.length > 0 && req.minVersions.length !== req.identifiers.length) {
            throw new GrpcError(
              grpc.status.INVALID_ARGUMENT,
              `min_versions has ${req.minVersions.length} entries for ${req.identifiers.length} identifiers: give none, or one per identifier`,
            );
          }
          const results = await Promise.all(
            req.identifiers.map(async (raw, i) => {
              let id: ReturnType<typeof requestedIdentifier>;
              try {
                id = requestedIdentifier(rulesFor(ws), raw);
              } catch (e) {
                // One bad identifier is answered as such; the rest of the batch is not lost with it.
                if (e instanceof GrpcError) return { identifier: raw, found: false, error: e.message };
                throw e;
              }
              const found = await lookUp(ws, id, req.minVersions[i] ?? 0n);
              return found === undefined
                ? { identifier: raw, found: false }
                : { identifier: raw, found: true, profile: toProfile(found.value, rulesFor(ws), clock()) };
            }),
          );
          return { results };
        },
        unmergeProfile: async (req) => {
          const ws = requireWorkspace(req.workspace);
          const id = requestedIdentifier(rulesFor(ws), req.identifier);
          for (let attempt = 0; ; attempt++) {
            let found = await reader.find(ws, id);
            if (found === undefined)
              throw new GrpcError(
                grpc.status.NOT_FOUND,
                `no profile for ${id.type} ${JSON.stringify(id.value)}`,
              );
            let merge = mergeOf(found.value, id);
            if (merge === undefined && found.value.splitFrom !== undefined) {
              // A split that stopped after pointing the identifiers back: its survivor still
              // records the merge, and the split is finished from there.
              const from = await store.getProfile(ws, found.value.splitFrom);
              const restoredId = { type: "profile_id" as const, value: found.value.profileId };
              if (from !== undefined && from.value.mergedInto === undefined) {
                merge = mergeOf(from.value, restoredId);
                if (merge !== undefined) found = from;
              }
            }
            if (merge === undefined) {
              throw new GrpcError(
                grpc.status.FAILED_PRECONDITION,
                `${id.type} ${JSON.stringify(id.value)} did not come to profile ${found.value.profileId} by a recorded merge`,
              );
            }
            const merged = await store.getProfile(ws, merge.profileId);
            if (merged === undefined)
              throw new GrpcError(
                grpc.status.FAILED_PRECONDITION,
                `merged profile ${merge.profileId} is gone`,
              );
            const erasing = [found.value, merged.value].find((p) => p.erasing !== undefined);
            if (erasing !== undefined)
              throw new GrpcError(
                grpc.status.FAILED_PRECONDITION,
                `profile ${erasing.profileId} is being erased`,
              );
            const now = clock();
            const added = merge.added;
            const entries = await Promise.all(added.map((i) => store.lookup(ws, i)));
            const { survivor, restored } = splitOff(found.value, merged.value, now);
            try {
              // The restored profile first, then its identifiers point at it again (compare-and-set
              // on the entries as read before the split: a concurrent claim is not overwritten),
              // then the survivor. A retry after a stop at any point finds the merge still recorded
              // on the survivor (through the identifier, or the restored profile's `splitFrom`).
              if (merged.value.mergedInto !== undefined) await cached.putProfile(restored, merged.revision);
              for (const [k, i] of added.entries()) {
                const entry = entries[k];
                if (
                  entry !== undefined &&
                  "profileId" in entry.value &&
                  entry.value.profileId === restored.profileId
                )
                  continue;
                const target = { profileId: restored.profileId, claimedAt: now };
                await cached.link(ws, i, target, entry?.revision ?? 0);
              }
              await cached.putProfile(survivor, found.revision);
            } catch (e) {
              if (e instanceof WriteConflict && attempt < 9) continue;
              throw e;
            }
            await publishState(survivor, now);
            await publishState(restored, now, survivor.profileId, [], survivor.version);
            await scheduleWindow(survivor, []);
            await scheduleWindow(restored, []);
            results.inc({ outcome: "unmerged" });
            runtime.logger.info(
              { workspace: ws, survivor: survivor.profileId, restored: restored.profileId },
              "merge split back apart",
            );
            return {
              survivor: toProfile(survivor, rulesFor(ws), now),
              restored: toProfile(restored, rulesFor(ws), now),
            };
          }
        },
        deleteProfile: async (req) => {
          const ws = requireWorkspace(req.workspace);
          const id = requestedIdentifier(rulesFor(ws), req.identifier);
          try {
            return await erasure.erase(ws, id, req.suppress);
          } catch (e) {
            if (e instanceof NoProfile) throw new GrpcError(grpc.status.NOT_FOUND, e.message);
            throw e;
          }
        },
      }),
    ]);
    return { grpcAddress: grpcServer.address };
  });
}
