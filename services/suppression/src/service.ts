/**
 * The suppression service: every intended action passes here, and is checked
 * again when it is about to go. It dispatches what may go now, defers what must
 * wait (not_before, quiet hours) in a durable store and releases it when due,
 * and suppresses, expires or cancels the rest — every decision with its reason
 * on OUTCOMES and in the decision log that `Explain` reads.
 *
 * Consumers: INTENTS (decide), CANCELS (withdraw pending actions) and, when a
 * workspace has `cancelOn` rules, PROFILES (a later event that cancels).
 */
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Counter, Gauge, Histogram } from "prom-client";
import { DeliverPolicy } from "@nats-io/jetstream";
import {
  CancellationSchema,
  Decision,
  DispatchSchema,
  IntentSchema,
  OutcomeSchema,
  OutcomeStatus,
  ProfileChangedSchema,
  type ProfileChanged,
  SuppressionService,
  type Cancellation,
  type Intent,
  type Profile,
  toBinaryFast,
  fromBinaryFast,
} from "@kairos/contracts";
import {
  followMeshConfig,
  loadMeshConfig,
  type ChannelConfig,
  type MeshConfig,
  type SuppressionPolicy,
} from "@kairos/mesh-config";
import {
  grpcProfileLookup,
  type ProfileLookup,
  Cancellations,
  consumers,
  durableConsumer,
  env,
  GrpcError,
  implement,
  KeyedLock,
  PermanentError,
  PROFILE_DELETED_KEY,
  runtimeConfig,
  startService,
  type ServiceHandle,
  type ServiceRuntime,
  type StartOptions as KitStartOptions,
  subjects,
  type ConfigOf,
} from "@kairos/kit";
import {
  decide,
  dueAtOf,
  afterUnmerge,
  asOf,
  cancellationTargets,
  mergeContacts,
  withCancelled,
  withConsent,
  withPreferences,
  withSent,
  type IntentFacts,
  type Policy,
  type Verdict,
} from "./decide.js";
import { DeferredIndex, ListIndex, type DeferredRef } from "./indexes.js";
import { ProfileView, viewedProfileLookup } from "./profile-view.js";
import { SuppressionStores, WriteConflict, type DeferredEntry } from "./stores.js";

/** Environment variables of the suppression service. */
export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50054),
  OPS_PORT: env.port(9464),
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  IDENTITY_GRPC_ADDR: env.string("127.0.0.1:50052"),
  IDENTITY_TIMEOUT: env.duration(2000),
  /** Recent profiles held from the PROFILES feed, so most decisions need no call to identity; 0: none. */
  PROFILE_VIEW_SIZE: env.int(200_000, { min: 0, max: 10_000_000 }),
  /** Contact records held in memory (kept current by a KV watch; compare-and-set still decides); 0: none. */
  CONTACT_VIEW_SIZE: env.int(200_000, { min: 0, max: 10_000_000 }),
  /** At start the view reads the profile changes of this long ago onwards, so a restart starts warm. */
  PROFILE_VIEW_BACKFILL: env.duration(3_600_000),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
  /** How often deferred actions are looked at; they go at most this late. */
  RELEASE_INTERVAL: env.duration(100),
};

export type SuppressionConfig = ConfigOf<typeof configSpec>;

/** A running suppression service. */
export type SuppressionHandle = ServiceHandle;

export interface StartOptions extends KitStartOptions {
  /** Replaces the gRPC lookup of profiles in identity (closed on shutdown). */
  profiles?: ProfileLookup;
}

/** Compare-and-set attempts on a contact record before the intent is handed back for redelivery. */
const CAS_ATTEMPTS = 10;

/** The PROFILES consumer that applies `cancelOn` rules. */
const profilesConsumer = durableConsumer("PROFILES", "suppression-profiles");

/** What a decision is about: an intent, or a `Check` request. */
interface Question extends IntentFacts {
  workspace: string;
  profileId: string;
  /** The profile version the trigger saw; the decision never uses an older one. */
  profileVersion?: bigint;
}

const statusOf = {
  dispatch: OutcomeStatus.DISPATCHED,
  defer: OutcomeStatus.DEFERRED,
  suppress: OutcomeStatus.SUPPRESSED,
  expire: OutcomeStatus.EXPIRED,
  cancel: OutcomeStatus.CANCELLED,
} as const;

/** Starts the suppression service: its consumers, the release loop and `SuppressionService` over gRPC. */
/**
 * Feeds the profile view from PROFILES with an ordered (ephemeral) consumer,
 * starting at `fromMs` (the backfill window) so that a restarted replica starts
 * warm; misses go to identity.
 */
function followProfiles(runtime: ServiceRuntime, view: ProfileView, fromMs: number): void {
  let stopping = false;
  let iter: { close(): Promise<void | Error> } | undefined;
  new Gauge({
    name: "kairos_suppression_profile_view",
    help: "The profile view: profiles held (size), lookups answered from it (hits) and sent to identity (misses).",
    labelNames: ["what"],
    registers: [runtime.metrics.registry],
    collect() {
      this.set({ what: "size" }, view.size);
      this.set({ what: "hits" }, view.hits);
      this.set({ what: "misses" }, view.misses);
    },
  });
  const loop = async () => {
    for (let attempt = 1; !stopping; attempt++) {
      try {
        const c = await runtime.js.consumers.get("PROFILES", {
          deliver_policy: DeliverPolicy.StartTime,
          opt_start_time: new Date(fromMs).toISOString(),
        });
        const messages = await c.consume();
        iter = messages;
        attempt = 0;
        for await (const m of messages) {
          let change: ProfileChanged;
          try {
            change = fromBinaryFast(ProfileChangedSchema, m.data);
          } catch (e) {
            runtime.logger.warn({ err: e, seq: m.seq }, "undecodable profile change skipped by the view");
            continue;
          }
          view.apply(change);
        }
      } catch (e) {
        if (stopping) return;
        runtime.logger.warn({ err: e }, "profile view feed failed; restarting");
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * attempt)));
      }
    }
  };
  void loop();
  runtime.lifecycle.add("intake", "profile-view", async () => {
    stopping = true;
    await iter?.close();
  });
}

export async function startSuppression(
  cfg: SuppressionConfig,
  opts: StartOptions = {},
): Promise<SuppressionHandle> {
  const clock = opts.clock ?? Date.now;
  let mesh = loadMeshConfig(cfg.KAIROS_CONFIG);
  let channels = new Map<string, ChannelConfig>(mesh.channels.map((c) => [c.name, c]));
  let workspaces = new Map(mesh.workspaces.map((w) => [w.id, w]));
  const use = (m: MeshConfig) => {
    mesh = m;
    channels = new Map<string, ChannelConfig>(m.channels.map((c) => [c.name, c]));
    workspaces = new Map(m.workspaces.map((w) => [w.id, w]));
  };
  const defaultPolicy: SuppressionPolicy = {
    capOrder: "priority",
    exemptPurposes: ["transactional"],
    cancelOn: [],
  };
  return startService("suppression", cfg, opts, async (runtime) => {
    // A configuration applied with `kairos apply` overrides the file, and reloads live
    // (policies, caps, quiet hours, consent modes, `cancelOn` rules).
    const configWatch = await followMeshConfig(runtime.nc, use, runtime.logger, cfg.NATS_REPLICAS);
    runtime.lifecycle.add("intake", "config-watch", () => configWatch.stop());
    const stores = await SuppressionStores.open(runtime.nc, cfg.NATS_REPLICAS, cfg.CONTACT_VIEW_SIZE);
    runtime.lifecycle.add("connections", "contact-watch", () => stores.close());
    const cancellations = await Cancellations.open(runtime.nc, cfg.NATS_REPLICAS);
    const identityLookup = opts.profiles ?? grpcProfileLookup(cfg.IDENTITY_GRPC_ADDR, cfg.IDENTITY_TIMEOUT);
    const view = new ProfileView(cfg.PROFILE_VIEW_SIZE);
    const profiles = cfg.PROFILE_VIEW_SIZE > 0 ? viewedProfileLookup(view, identityLookup) : identityLookup;
    if (cfg.PROFILE_VIEW_SIZE > 0) followProfiles(runtime, view, clock() - cfg.PROFILE_VIEW_BACKFILL);
    runtime.lifecycle.add("connections", "profile-lookup", () => profiles.close());
    runtime.metrics.stageObjective.set({ stage: "suppress" }, 0.005);
    const registers = [runtime.metrics.registry];
    const decisions = new Counter({
      name: "kairos_suppression_decisions_total",
      help: "Decisions on actions, by channel, verdict and reason.",
      labelNames: ["channel", "verdict", "reason"],
      registers,
    });
    const releaseLateness = new Histogram({
      name: "kairos_suppression_release_lateness_seconds",
      help: "How late deferred actions were looked at again, after the time they were held until.",
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers,
    });
    // One profile's actions one at a time in this process: fewer contact-record conflicts.
    const lock = new KeyedLock();

    // The in-memory views of the deferred actions and the suppression lists.
    const deferred = new DeferredIndex();
    const lists = new ListIndex();
    new Gauge({
      name: "kairos_suppression_deferred",
      help: "Actions held until a later time (quiet hours, not_before).",
      registers,
      collect() {
        this.set(deferred.size);
      },
    });
    new Gauge({
      name: "kairos_suppression_list_entries",
      help: "Identifiers on suppression lists.",
      registers,
      collect() {
        this.set(lists.size);
      },
    });
    const watches = await Promise.all([
      stores.deferredKv.watch({ key: ">" }),
      stores.listsKv.watch({ key: ">" }),
    ]);
    const [deferredWatch, listWatch] = watches;
    void (async () => {
      for await (const e of deferredWatch) deferred.apply(e.key, SuppressionStores.parseDeferred(e));
    })();
    void (async () => {
      for await (const e of listWatch) lists.apply(e.key, SuppressionStores.parseList(e));
    })();
    runtime.lifecycle.add("connections", "kv-watches", () => {
      for (const w of watches) w.stop();
    });
    runtime.addReadinessCheck({ name: "suppression-stores", check: () => stores.ping() });

    const channelOf = (name: string): ChannelConfig => {
      const c = channels.get(name);
      if (c === undefined) throw new PermanentError(`unknown channel ${JSON.stringify(name)}`);
      return c;
    };
    const policyOf = (workspace: string, channel: ChannelConfig): Policy => {
      const ws = workspaces.get(workspace);
      return { workspaceTz: ws?.timezone ?? "UTC", channel, workspace: ws?.suppression ?? defaultPolicy };
    };

    const unmergedRecords = new Counter({
      name: "kairos_suppression_unmerged_records_total",
      help: "Contact records split apart by an unmerge (withdrawals kept for both, grants dropped).",
      registers,
    });
    /**
     * An unmerge split `restored` back off `survivor`: the merged record both were judged by is
     * given to each as `afterUnmerge` keeps it (every withdrawal either customer made stands, no grant
     * made by then does; sends and cancellations stay), the restored profile's first, marked as
     * split from the survivor (and not given the survivor's record again). Safe to run again:
     * what was said after the unmerge is kept. Without
     * the profiles' locks (compare-and-set): a decision holding one runs it too (`judge`).
     */
    const splitApart = async (
      ws: string,
      restored: string,
      survivor: string,
      atMs: number,
      survivorVersion: number,
    ) => {
      const { state } = await stores.contact(ws, survivor, { fresh: true });
      // Once per split, and only what the survivor's record held by then: what it is told afterwards
      // is its own, never the restored profile's.
      await stores.updateContact(ws, restored, (s) =>
        s.splitFrom === survivor && (s.splitVersion ?? 0) >= survivorVersion
          ? s
          : {
              ...afterUnmerge(mergeContacts(s, asOf(state, atMs)), atMs),
              splitFrom: survivor,
              splitVersion: survivorVersion,
            },
      );
      await stores.updateContact(ws, survivor, (s) => afterUnmerge(s, atMs));
      unmergedRecords.inc();
    };

    /**
     * Gathers the facts and decides. With `take`, a dispatch that counts against
     * a cap records itself in the contact record (compare-and-set, re-deciding
     * on a conflict); `Check` does not.
     */
    const judge = async (
      q: Question,
      take: boolean,
    ): Promise<{ verdict: Verdict; profile: Profile | undefined; decidedAtMs: number }> => {
      const channel = channelOf(q.channel);
      const policy = policyOf(q.workspace, channel);
      // The profile and the contact record are read together (two round trips in parallel).
      const [profile, firstRead] = await Promise.all([
        profiles.get(q.workspace, q.profileId, q.profileVersion ?? 0n),
        stores.contact(q.workspace, q.profileId),
      ]);
      let first = firstRead;
      // Split back off a survivor by an unmerge that this record has not been through yet (its
      // change not processed yet): done first, so a withdrawal made before the split holds.
      if (
        profile !== undefined &&
        profile.splitFrom !== "" &&
        profile.profileId === q.profileId &&
        (first.state.splitFrom !== profile.splitFrom ||
          (first.state.splitVersion ?? 0) < Number(profile.splitFromVersion))
      ) {
        // As of the split, and marked with the survivor's version after it (as the change would).
        // (A profile split before identity said when: as of its last update, no earlier.)
        const at = profile.splitAt ?? profile.updatedAt;
        const atMs = at === undefined ? clock() : timestampMs(at);
        await splitApart(q.workspace, q.profileId, profile.splitFrom, atMs, Number(profile.splitFromVersion));
        first = await stores.contact(q.workspace, q.profileId, { fresh: true });
      }
      // After a merge identity answers with the survivor: its record applies.
      const profileId = profile?.profileId || q.profileId;
      const listed = lists.matching(q.workspace, q.channel, profile?.identifiers ?? [], (...a) =>
        stores.listKey(...a),
      );
      let read: Awaited<ReturnType<typeof stores.contact>> | undefined =
        profileId === q.profileId ? first : undefined;
      for (let attempt = 1; ; attempt++) {
        const now = clock();
        const got = read ?? (await stores.contact(q.workspace, profileId));
        read = undefined;
        const { revision } = got;
        let state = got.state;
        // Merged-away profiles whose records suppression has not joined to this one yet (it does so
        // when the merge's change comes by): what they were told applies already.
        for (const m of profile?.mergedFrom ?? []) {
          const other = m === profileId ? undefined : stores.cachedContact(q.workspace, m);
          if (other !== undefined) state = mergeContacts(state, other);
        }
        const verdict = decide(q, profile, state, listed, policy, now);
        if (!take || verdict.kind !== "dispatch" || !verdict.count)
          return { verdict, profile, decidedAtMs: now };
        try {
          await stores.putContact(
            q.workspace,
            profileId,
            withSent(state, { id: q.actionId, channel: q.channel, atMs: now }),
            revision,
          );
          return { verdict, profile, decidedAtMs: now };
        } catch (e) {
          // Another replica changed this customer's record meanwhile: read it again.
          if (e instanceof WriteConflict && attempt < CAS_ATTEMPTS) continue;
          throw e;
        }
      }
    };

    const record = async (intent: Intent, verdict: Verdict, decidedAtMs: number) => {
      decisions.inc({
        channel: intent.channel,
        verdict: verdict.kind,
        reason: verdict.kind === "dispatch" ? "" : verdict.reason,
      });
      await stores.recordDecision(intent.workspace, intent.profileId, intent.channel, {
        actionId: intent.actionId,
        journey: intent.journey,
        status: OutcomeStatus[statusOf[verdict.kind]],
        reason: verdict.kind === "dispatch" ? "allowed" : verdict.reason,
        detail:
          verdict.kind === "dispatch"
            ? verdict.count
              ? "counted against caps"
              : "no cap applies"
            : verdict.detail,
        decidedAtMs,
        priority: intent.priority,
        purpose: intent.purpose,
      });
    };

    const publishOutcome = async (
      intent: Intent,
      status: OutcomeStatus,
      reason: string,
      detail: string,
      decidedAtMs: number,
      msgID: string,
    ) => {
      await runtime.publisher.publishMessage(
        subjects.outcomes(intent.workspace, intent.channel),
        OutcomeSchema,
        create(OutcomeSchema, {
          actionId: intent.actionId,
          workspace: intent.workspace,
          profileId: intent.profileId,
          channel: intent.channel,
          journey: intent.journey,
          status,
          reason,
          detail,
          times: {
            eventReceivedAt: intent.eventReceivedAt,
            intendedAt: intent.intendedAt,
            decidedAt: timestampFromMs(decidedAtMs),
          },
        }),
        { msgID },
      );
    };

    /**
     * Acts on a verdict: dispatches, defers (durably), or publishes the outcome.
     * `heldUntilMs` is set when the action comes out of the deferred store.
     */
    const settle = async (
      intent: Intent,
      verdict: Verdict,
      profile: Profile | undefined,
      decidedAtMs: number,
      heldUntilMs?: number,
    ): Promise<void> => {
      const key = stores.deferredKey(intent.workspace, intent.actionId);
      if (verdict.kind === "defer") {
        const entry: DeferredEntry = {
          workspace: intent.workspace,
          profileId: profile?.profileId || intent.profileId,
          actionId: intent.actionId,
          untilMs: verdict.untilMs,
          reason: verdict.reason,
          priority: intent.priority,
          intendedAtMs: intent.intendedAt === undefined ? decidedAtMs : timestampMs(intent.intendedAt),
          cancelKeys: intent.cancelKeys,
          intent: Buffer.from(toBinaryFast(IntentSchema, intent)).toString("base64"),
        };
        await stores.putDeferred(entry);
        deferred.apply(key, entry);
        await Promise.all([
          record(intent, verdict, decidedAtMs),
          publishOutcome(
            intent,
            OutcomeStatus.DEFERRED,
            verdict.reason,
            `${verdict.detail}; held until ${new Date(verdict.untilMs).toISOString()}`,
            decidedAtMs,
            `${intent.actionId}:DEFERRED:${verdict.untilMs}`,
          ),
        ]);
        // A cancellation that came while this was being deferred did not see it: look again.
        const { state } = await stores.contact(entry.workspace, entry.profileId);
        const cancelledKey = intent.cancelKeys.find(
          (k) => (state.cancelled[k]?.atMs ?? -1) >= entry.intendedAtMs,
        );
        if (cancelledKey !== undefined) {
          const c = state.cancelled[cancelledKey];
          await settle(
            intent,
            { kind: "cancel", reason: "cancelled", detail: `${cancelledKey} cancelled (${c?.reason ?? ""})` },
            profile,
            clock(),
            verdict.untilMs,
          );
        }
        return;
      }
      if (verdict.kind === "dispatch") {
        const due = dueAtOf(intent);
        const dueAt =
          heldUntilMs !== undefined && (due === undefined || timestampMs(due) < heldUntilMs)
            ? timestampFromMs(heldUntilMs)
            : due;
        await Promise.all([
          record(intent, verdict, decidedAtMs),
          runtime.publisher.publishMessage(
            subjects.dispatch(intent.workspace, intent.channel),
            DispatchSchema,
            create(DispatchSchema, {
              intent,
              decision: "allow",
              destinations: profile?.identifiers ?? [],
              dueAt,
              decidedAt: timestampFromMs(decidedAtMs),
              profileTraits: profile?.traits ?? {},
            }),
            // A redelivered intent (already counted) is published again under the same id: stored once.
            { msgID: intent.actionId },
          ),
        ]);
      } else {
        const status = statusOf[verdict.kind];
        runtime.logger.debug(
          { actionId: intent.actionId, channel: intent.channel, reason: verdict.reason },
          "action not dispatched",
        );
        await Promise.all([
          record(intent, verdict, decidedAtMs),
          publishOutcome(
            intent,
            status,
            verdict.reason,
            verdict.detail,
            decidedAtMs,
            `${intent.actionId}:${OutcomeStatus[status]}`,
          ),
        ]);
      }
      if (heldUntilMs !== undefined) {
        await stores.deleteDeferred(key);
        deferred.apply(key, undefined);
      }
    };

    const profileLock = (workspace: string, profileId: string) => `${workspace}|${profileId}`;

    await runtime.consume(consumers.suppression, {
      stage: "suppress",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinaryFast(IntentSchema, b),
      handle: async (intent, ctx) => {
        const missing = missingFields({
          action_id: intent.actionId,
          workspace: intent.workspace,
          profile_id: intent.profileId,
          channel: intent.channel,
        });
        if (missing.length > 0) throw new PermanentError(`intent without ${missing.join(", ")}`);
        ctx.span.setAttributes({
          "kairos.suppression.action_id": intent.actionId,
          "kairos.suppression.channel": intent.channel,
        });
        await lock.run(profileLock(intent.workspace, intent.profileId), async () => {
          const { verdict, profile, decidedAtMs } = await judge(intent, true);
          ctx.span.setAttribute("kairos.suppression.verdict", verdict.kind);
          await settle(intent, verdict, profile, decidedAtMs);
        });
      },
    });

    // The release loop: deferred actions that are due are decided again, as of now.
    const inFlight = new Set<string>();
    const retryAt = new Map<string, number>();
    const release = async (ref: DeferredRef) => {
      const now = clock();
      if ((retryAt.get(ref.key) ?? 0) > now) return;
      inFlight.add(ref.key);
      try {
        const found = await stores.getDeferred(ref.key);
        if (found === undefined) {
          deferred.apply(ref.key, undefined);
          return;
        }
        const { entry } = found;
        if (entry.untilMs > now) {
          deferred.apply(ref.key, entry);
          return;
        }
        const intent = fromBinaryFast(IntentSchema, Buffer.from(entry.intent, "base64"));
        await lock.run(profileLock(entry.workspace, entry.profileId), async () => {
          const { verdict, profile, decidedAtMs } = await judge(
            { ...intent, workspace: entry.workspace, profileId: entry.profileId },
            true,
          );
          releaseLateness.observe(Math.max(0, decidedAtMs - entry.untilMs) / 1000);
          await settle(intent, verdict, profile, decidedAtMs, entry.untilMs);
        });
        retryAt.delete(ref.key);
      } catch (e) {
        runtime.logger.warn({ err: e, key: ref.key }, "release of a deferred action failed; retrying in 1 s");
        retryAt.set(ref.key, clock() + 1000);
      } finally {
        inFlight.delete(ref.key);
      }
    };
    let releasing = false;
    const tick = async () => {
      if (releasing) return;
      releasing = true;
      try {
        const due = deferred.due(clock()).filter((r) => !inFlight.has(r.key));
        // Per profile, in the workspace's order, so that when a cap has room for only some the right ones go.
        const groups = new Map<string, DeferredRef[]>();
        for (const r of due) {
          const k = profileLock(r.workspace, r.profileId);
          const group = groups.get(k);
          if (group === undefined) groups.set(k, [r]);
          else group.push(r);
        }
        const work = [...groups.values()].map(async (refs) => {
          const order = workspaces.get(refs[0]?.workspace ?? "")?.suppression.capOrder ?? "priority";
          refs.sort((a, b) =>
            order === "priority" && a.priority !== b.priority
              ? b.priority - a.priority
              : a.intendedAtMs - b.intendedAtMs,
          );
          for (const r of refs) await release(r);
        });
        await Promise.all(work);
        deferred.compact();
      } finally {
        releasing = false;
      }
    };
    const timer = setInterval(() => void tick(), cfg.RELEASE_INTERVAL);
    runtime.lifecycle.add("intake", "release-loop", async () => {
      clearInterval(timer);
      while (releasing) await new Promise((r) => setTimeout(r, 20));
    });

    /** Settles the deferred actions `refs` of a profile that were intended by `atMs` as `verdictOf` says. */
    const withdrawDeferred = async (
      workspace: string,
      profileId: string,
      refs: readonly DeferredRef[],
      atMs: number,
      verdictOf: (intent: Intent) => Verdict,
    ) => {
      for (const ref of refs) {
        if (ref.intendedAtMs > atMs) continue;
        const found = await stores.getDeferred(ref.key);
        if (found === undefined) continue;
        const intent = fromBinaryFast(IntentSchema, Buffer.from(found.entry.intent, "base64"));
        await lock.run(profileLock(workspace, profileId), () =>
          settle(intent, verdictOf(intent), undefined, clock(), found.entry.untilMs),
        );
      }
    };

    /**
     * Records a cancellation and withdraws the pending actions it names: the profile's, and those of
     * the profiles merged into it (an abandoned-cart reminder intended for the anonymous profile is
     * withdrawn by the purchase of the customer it was merged into). The merged-away ids come from
     * the profile as of the version the cancellation was decided on; an action intended for one of
     * them later is judged against this profile's record, which holds their keys too.
     */
    const applyCancellation = async (c: Cancellation) => {
      const atMs = c.cancelledAt === undefined ? clock() : timestampMs(c.cancelledAt);
      /** Recorded in the record the actions of `keys` are judged against (a survivor's holds them all). */
      const record = (profileId: string, keys: readonly string[]) =>
        lock.run(profileLock(c.workspace, profileId), () =>
          stores.updateContact(c.workspace, profileId, (s) => withCancelled(s, keys, atMs, c.reason)),
        );
      const withdraw = async (t: { profileId: string; keys: string[] }) => {
        // For the dispatchers: an action already handed to its channel is withdrawn there.
        await cancellations.mark(c.workspace, t.profileId, t.keys, { atMs, reason: c.reason });
        await withdrawDeferred(
          c.workspace,
          t.profileId,
          deferred.withCancelKeys(c.workspace, t.profileId, t.keys),
          atMs,
          (intent) => {
            const key = t.keys.find((k) => intent.cancelKeys.includes(k)) ?? "";
            return { kind: "cancel", reason: "cancelled", detail: `${key} cancelled (${c.reason})` };
          },
        );
      };
      // The profile named first, without asking identity: it is not held up while identity is away
      // (the redelivery that then follows applies it again, which changes nothing).
      const named = { profileId: c.profileId, keys: [...new Set(c.cancelKeys)] };
      await record(named.profileId, named.keys);
      await withdraw(named);
      // The customer's other profiles: merged into this one, or, when this one was merged into another
      // since, that survivor and everything merged into it (all of them one customer now).
      const profile = await profiles.get(c.workspace, c.profileId, c.profileVersion);
      if (profile === undefined) return;
      const survivor = profile.profileId;
      const others = survivor === c.profileId ? [] : [survivor];
      const targets = cancellationTargets(c.profileId, c.cancelKeys, [...others, ...profile.mergedFrom]);
      const rest = targets.slice(1);
      if (rest.length === 0) return;
      // An action intended for any of them is judged against the survivor's record: it holds their keys.
      await record(
        survivor,
        (survivor === c.profileId ? rest : targets).flatMap((t) => t.keys),
      );
      for (const t of rest) await withdraw(t);
    };

    await runtime.consume(consumers.suppressionCancels, {
      stage: "cancel",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinaryFast(CancellationSchema, b),
      handle: async (c) => {
        const missing = missingFields({ workspace: c.workspace, profile_id: c.profileId });
        if (missing.length > 0) throw new PermanentError(`cancellation without ${missing.join(", ")}`);
        if (c.cancelKeys.length === 0) throw new PermanentError("cancellation without cancel_keys");
        await applyCancellation(c);
      },
    });

    const publishCancellation = async (c: Cancellation) => {
      await runtime.publisher.publishMessage(subjects.cancels(c.workspace), CancellationSchema, c, {
        msgID: c.cancellationId,
      });
    };

    /**
     * A deleted customer (GDPR): every action already handed to a channel is withdrawn there (the
     * `profile:deleted` key is checked before each delivery), deferred ones are withdrawn here
     * (CANCELLED, profile_deleted), and the contact record and the decisions recorded about them
     * are erased (what `Explain` answers afterwards is only that they were deleted). Marked at the deletion's
     * time: what was intended after it (a removal from an ad audience that the deletion itself
     * causes, or a re-created customer's actions) goes ahead.
     */
    const forget = async (change: ProfileChanged) => {
      const atMs = change.eventReceivedAt === undefined ? clock() : timestampMs(change.eventReceivedAt);
      // The same under the ids of the profiles merged into theirs: what was intended for those keeps
      // their ids.
      for (const id of new Set([change.profileId, ...change.mergedFrom])) {
        await cancellations.mark(change.workspace, id, [PROFILE_DELETED_KEY], {
          atMs,
          reason: "profile_deleted",
        });
        await withdrawDeferred(change.workspace, id, deferred.ofProfile(change.workspace, id), atMs, () => ({
          kind: "cancel",
          reason: "profile_deleted",
          detail: "the customer was deleted",
        }));
        // Their record and what was decided about them, but the withdrawals the deletion caused
        // (also on a redelivery).
        await lock.run(profileLock(change.workspace, id), async () => {
          await stores.deleteContact(change.workspace, id);
          await stores.purgeDecisions(change.workspace, id, (r) => r.reason === "profile_deleted");
        });
      }
      deletions.inc();
    };
    /**
     * Profiles identity merged into another: their records join the survivor's (a consent
     * withdrawn or a send counted on the merged-away profile still applies to the customer), then
     * are erased. Safe to run again (a redelivery): the merge is idempotent and an erased record
     * is empty.
     */
    const adoptMerged = async (ws: string, survivor: string, merged: readonly string[], version: number) => {
      for (const loser of merged) {
        if (loser === survivor) continue;
        for (let attempt = 1; ; attempt++) {
          // Read from the bucket, not the cache, and erased only as read (compare-and-set): a write
          // to it meanwhile, from any replica, is joined on the next round rather than lost.
          const { state, revision } = await stores.contact(ws, loser, { fresh: true });
          if (revision === 0) break;
          // A merge an unmerge undid since (its change redelivered, or handled late): the profile
          // split off again keeps its record.
          if (state.splitFrom === survivor && version <= (state.splitVersion ?? 0)) break;
          await lock.run(profileLock(ws, survivor), () =>
            stores.updateContact(ws, survivor, (s) => mergeContacts(s, state)),
          );
          try {
            await stores.deleteContact(ws, loser, revision);
            mergedRecords.inc();
            break;
          } catch (e) {
            if (e instanceof WriteConflict && attempt < CAS_ATTEMPTS) continue;
            throw e;
          }
        }
      }
    };
    /**
     * Whose record a statement about `profileId` goes to: the survivor, when it was merged away
     * (asked of identity itself, not of the local view, which may not have seen the merge yet).
     * When identity cannot answer, the statement is recorded as addressed: a withdrawal of consent
     * must not fail for want of identity (merged-away records not yet joined are read with the
     * survivor's at decision time and joined when the merge's change is processed).
     */
    const recordHolder = async (ws: string, profileId: string) => {
      try {
        return (await identityLookup.get(ws, profileId))?.profileId || profileId;
      } catch (err) {
        runtime.logger.warn({ err, workspace: ws, profileId }, "identity unavailable; recorded as addressed");
        return profileId;
      }
    };
    const mergedRecords = new Counter({
      name: "kairos_suppression_merged_records_total",
      help: "Contact records of merged-away profiles joined into their survivor's.",
      registers,
    });
    const deletions = new Counter({
      name: "kairos_suppression_deleted_profiles_total",
      help: "Deleted customers forgotten: deferred actions withdrawn, contact record erased.",
      registers,
    });

    // Every profile change: a deletion is honoured; a later event may, by policy, cancel pending actions.
    await runtime.consume(profilesConsumer, {
      stage: "profile-change",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinaryFast(ProfileChangedSchema, b),
      handle: async (change) => {
        if (change.deleted) {
          await forget(change);
          return;
        }
        if (change.mergedFrom.length > 0)
          await adoptMerged(change.workspace, change.profileId, change.mergedFrom, Number(change.version));
        if (change.unmergedFrom !== "") {
          const atMs = change.eventReceivedAt === undefined ? clock() : timestampMs(change.eventReceivedAt);
          await splitApart(
            change.workspace,
            change.profileId,
            change.unmergedFrom,
            atMs,
            Number(change.unmergedFromVersion),
          );
        }
        const rules = workspaces.get(change.workspace)?.suppression.cancelOn ?? [];
        for (const [i, rule] of rules.entries()) {
          if (rule.event !== change.eventName || change.eventName === "") continue;
          const keys = [
            ...rule.journeys.map((j) => `journey:${j}:${change.profileId}`),
            ...rule.cancelKeys.map((k) => k.replaceAll("{{profile_id}}", change.profileId)),
          ];
          await publishCancellation(
            create(CancellationSchema, {
              cancellationId: `${change.workspace}:${change.eventId}:cancelOn${i}`,
              workspace: change.workspace,
              profileId: change.profileId,
              cancelKeys: keys,
              reason: `event ${change.eventName}`,
              cancelledAt: change.eventReceivedAt ?? timestampFromMs(clock()),
              profileVersion: change.version,
            }),
          );
        }
      },
    });

    const validate = (req: { workspace: string; profileId: string; channel: string }) => {
      const missing = missingFields({
        workspace: req.workspace,
        profile_id: req.profileId,
        channel: req.channel,
      });
      if (missing.length > 0) {
        throw new GrpcError(grpc.status.INVALID_ARGUMENT, `required: ${missing.join(", ")}`);
      }
      if (!channels.has(req.channel)) {
        throw new GrpcError(grpc.status.NOT_FOUND, `unknown channel ${JSON.stringify(req.channel)}`);
      }
    };
    const check = async (req: { workspace: string; profileId: string; channel: string; purpose: string }) => {
      validate(req);
      const { verdict } = await judge({ ...req, actionId: "", notAfter: undefined }, false);
      switch (verdict.kind) {
        case "dispatch":
          return { decision: Decision.ALLOW, reason: "", detail: "" };
        case "defer":
          return {
            decision: Decision.DEFER,
            reason: verdict.reason,
            detail: verdict.detail,
            deferUntil: timestampFromMs(verdict.untilMs),
          };
        default:
          return { decision: Decision.SUPPRESS, reason: verdict.reason, detail: verdict.detail };
      }
    };
    const listReasons = ["unsubscribed", "hard_bounced", "complained", "deleted"];
    const validateListRequest = (req: {
      workspace: string;
      identifier?: { type: string; value: string };
      channel: string;
    }) => {
      const missing = missingFields({
        workspace: req.workspace,
        "identifier.type": req.identifier?.type ?? "",
        "identifier.value": req.identifier?.value ?? "",
        channel: req.channel,
      });
      if (missing.length > 0)
        throw new GrpcError(grpc.status.INVALID_ARGUMENT, `required: ${missing.join(", ")}`);
      if (req.channel !== "*" && !channels.has(req.channel)) {
        throw new GrpcError(grpc.status.NOT_FOUND, `unknown channel ${JSON.stringify(req.channel)} (or "*")`);
      }
      return req.identifier as { type: string; value: string };
    };

    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(SuppressionService, {
        check,
        setConsent: async (req) => {
          validate(req);
          const recordedAtMs = clock();
          await stores.updateContact(req.workspace, await recordHolder(req.workspace, req.profileId), (s) =>
            withConsent(s, req.channel, {
              purpose: req.purpose,
              granted: req.granted,
              source: req.source,
              atMs: recordedAtMs,
            }),
          );
          runtime.logger.info(
            {
              workspace: req.workspace,
              profileId: req.profileId,
              channel: req.channel,
              granted: req.granted,
            },
            "consent recorded",
          );
          return { recordedAt: timestampFromMs(recordedAtMs) };
        },
        setPreferences: async (req) => {
          const missing = missingFields({ workspace: req.workspace, profile_id: req.profileId });
          if (missing.length > 0)
            throw new GrpcError(grpc.status.INVALID_ARGUMENT, `required: ${missing.join(", ")}`);
          const unknown = req.channels.filter((c) => !channels.has(c));
          if (unknown.length > 0) {
            throw new GrpcError(grpc.status.NOT_FOUND, `unknown channel(s): ${unknown.join(", ")}`);
          }
          const recordedAtMs = clock();
          await stores.updateContact(req.workspace, await recordHolder(req.workspace, req.profileId), (s) =>
            withPreferences(s, {
              channels: req.channels,
              maxPerWeek: req.maxPerWeek,
              source: req.source,
              atMs: recordedAtMs,
            }),
          );
          return { recordedAt: timestampFromMs(recordedAtMs) };
        },
        cancel: async (req) => {
          const missing = missingFields({ workspace: req.workspace, profile_id: req.profileId });
          if (req.cancelKeys.length === 0) missing.push("cancel_keys");
          if (missing.length > 0)
            throw new GrpcError(grpc.status.INVALID_ARGUMENT, `required: ${missing.join(", ")}`);
          const cancellation = create(CancellationSchema, {
            cancellationId: randomUUID(),
            workspace: req.workspace,
            profileId: req.profileId,
            cancelKeys: req.cancelKeys,
            reason: req.reason || "api",
            cancelledAt: timestampFromMs(clock()),
          });
          await publishCancellation(cancellation);
          return { cancellation };
        },
        addToSuppressionList: async (req) => {
          const id = validateListRequest(req);
          if (!listReasons.includes(req.reason)) {
            throw new GrpcError(
              grpc.status.INVALID_ARGUMENT,
              `reason ${JSON.stringify(req.reason)} is not one of ${listReasons.join(", ")}`,
            );
          }
          const atMs = clock();
          const entry = {
            workspace: req.workspace,
            channel: req.channel,
            type: id.type,
            value: id.value,
            reason: req.reason,
            source: req.source,
            atMs,
          };
          await stores.addToList(entry);
          // Visible to this replica's next decision at once; others see it through their watch.
          lists.apply(stores.listKey(req.workspace, req.channel, id.type, id.value), entry);
          return { recordedAt: timestampFromMs(atMs) };
        },
        removeFromSuppressionList: async (req) => {
          const id = validateListRequest(req);
          const removed = await stores.removeFromList(req.workspace, req.channel, id.type, id.value);
          lists.apply(stores.listKey(req.workspace, req.channel, id.type, id.value), undefined);
          return { removed };
        },
        explain: async (req) => {
          validate(req);
          const profile = await profiles.get(req.workspace, req.profileId);
          const profileIds = [
            ...new Set([req.profileId, ...(profile ? [profile.profileId, ...profile.mergedFrom] : [])]),
          ];
          const limit = req.limit || 50;
          const found = (
            await Promise.all(profileIds.map((p) => stores.decisions(req.workspace, p, req.channel, limit)))
          )
            .flat()
            .sort((a, b) => b.decidedAtMs - a.decidedAtMs)
            .slice(0, limit);
          return {
            decisions: found.map((d) => ({
              actionId: d.actionId,
              journey: d.journey,
              status: OutcomeStatus[d.status as keyof typeof OutcomeStatus],
              reason: d.reason,
              detail: d.detail,
              decidedAt: timestampFromMs(d.decidedAtMs),
              priority: d.priority,
              purpose: d.purpose,
            })),
            now: await check({ ...req, purpose: "marketing" }),
          };
        },
      }),
    ]);
    return { grpcAddress: grpcServer.address };
  });
}

/** The names of the fields that are empty. */
function missingFields(fields: Record<string, string>): string[] {
  return Object.entries(fields)
    .filter(([, v]) => v === "")
    .map(([k]) => k);
}
