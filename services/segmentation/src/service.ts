/**
 * The segmentation service: evaluates every workspace segment on each profile
 * change, records entries and exits, and turns journey triggers into intents.
 */
import * as grpc from "@grpc/grpc-js";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Counter, Histogram } from "prom-client";
import {
  CancellationSchema,
  IntentSchema,
  MembershipChange,
  ProfileChangedSchema,
  SegmentMembershipChangedSchema,
  SegmentService,
  type ProfileChanged,
  fromBinaryFast,
} from "@kairos/contracts";
import { followMeshConfig, loadMeshConfig, type ActionConfig, type MeshConfig } from "@kairos/mesh-config";
import {
  consumers,
  DurableTimers,
  env,
  grpcProfileLookup,
  GrpcError,
  implement,
  KeyedLock,
  keyToken,
  LATENCY_BUCKETS_S,
  runtimeConfig,
  startService,
  type ServiceHandle,
  type StartOptions,
  subjects,
  type ConfigOf,
} from "@kairos/kit";
import {
  actionIdFor,
  compileWorkspace,
  evaluate,
  hasJourneys,
  journeysToHandOver,
  renderPayload,
  restoredState,
  undoneMerge,
  withJourneysOf,
  type CompiledWorkspace,
  type MembershipState,
  type Plan,
} from "./plan.js";
import { nextOccurrence, type DateRule } from "./dates.js";
import { bindingsOf } from "./conditions.js";
import { chooseArm, dueAfterWait, horizonOf, nodeAt } from "./steps.js";
import { MembershipStore, WriteConflict } from "./store.js";

export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50053),
  OPS_PORT: env.port(9463),
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
  /** How often due journey timers are looked for (their lateness is at most about this). */
  TIMER_TICK: env.duration(100),
  /** Identity's `ProfileService`: journeys with branches decide on the profile as it is when they are reached. */
  IDENTITY_GRPC_ADDR: env.string("127.0.0.1:50052"),
  IDENTITY_TIMEOUT: env.duration(2000),
};

/** A journey with branches, waiting to decide which arm of the branches at `path` to take. */
interface StepTimer {
  workspace: string;
  profileId: string;
  journey: string;
  /** Which start of the journey (trigger event id, `v<version>`, or `once`). */
  instance: string;
  path: number[];
  startedAtMs: number;
  /** The triggering event, for payload templates and `event.*` in conditions. */
  eventId: string;
  eventName: string;
  eventProperties: JsonObject;
}

/** A date journey's timer: whom it is for, the occurrence, and how to find the next one. */
interface DateTimer {
  workspace: string;
  profileId: string;
  journey: string;
  date: string;
  rule: DateRule;
  payload: JsonObject;
  profileVersion: string;
}

export type SegmentationConfig = ConfigOf<typeof configSpec>;

export type SegmentationHandle = ServiceHandle;

export type { StartOptions };

export async function startSegmentation(
  cfg: SegmentationConfig,
  opts: StartOptions = {},
): Promise<SegmentationHandle> {
  const clock = opts.clock ?? Date.now;
  const compileAll = (mesh: MeshConfig) =>
    new Map<string, CompiledWorkspace>(mesh.workspaces.map((w) => [w.id, compileWorkspace(w)]));
  let workspaces = compileAll(loadMeshConfig(cfg.KAIROS_CONFIG));
  return startService("segmentation", cfg, opts, async (runtime) => {
    // A configuration applied with `kairos apply` overrides the file, and reloads live.
    const configWatch = await followMeshConfig(
      runtime.nc,
      (mesh) => {
        workspaces = compileAll(mesh);
      },
      runtime.logger,
      cfg.NATS_REPLICAS,
    );
    runtime.lifecycle.add("intake", "config-watch", () => configWatch.stop());
    const store = await MembershipStore.open(runtime.nc, cfg.NATS_REPLICAS);
    runtime.addReadinessCheck({ name: "membership-store", check: () => store.ping() });
    runtime.metrics.stageObjective.set({ stage: "segment" }, 0.005);
    const transitionsTotal = new Counter({
      name: "kairos_segment_transitions_total",
      help: "Segment entries and exits.",
      labelNames: ["workspace", "segment", "change"],
      registers: [runtime.metrics.registry],
    });
    const conditionErrors = new Counter({
      name: "kairos_segment_condition_errors_total",
      help: "Conditions that could not be evaluated on a profile (counted as not satisfied).",
      labelNames: ["workspace", "segment"],
      registers: [runtime.metrics.registry],
    });
    const intentsTotal = new Counter({
      name: "kairos_journey_intents_total",
      help: "Intents published, by journey.",
      labelNames: ["workspace", "journey"],
      registers: [runtime.metrics.registry],
    });
    const exitsTotal = new Counter({
      name: "kairos_journey_exits_total",
      help: "Customers who left a journey with actions pending (cancelled), by journey.",
      labelNames: ["workspace", "journey"],
      registers: [runtime.metrics.registry],
    });
    const lock = new KeyedLock();

    /** One intent of a journey's action; its id makes a repeat one message. */
    const publishIntent = (i: {
      workspace: string;
      profileId: string;
      journey: string;
      action: ActionConfig;
      actionId: string;
      step: string;
      payload: JsonObject;
      dueMs: number;
      profileVersion: bigint;
      eventReceivedAt?: Timestamp | undefined;
    }) => {
      intentsTotal.inc({ workspace: i.workspace, journey: i.journey });
      return runtime.publisher.publishMessage(
        subjects.intents(i.workspace, i.action.channel),
        IntentSchema,
        create(IntentSchema, {
          actionId: i.actionId,
          workspace: i.workspace,
          profileId: i.profileId,
          channel: i.action.channel,
          journey: i.journey,
          step: i.step,
          payload: i.payload,
          notBefore: timestampFromMs(i.dueMs),
          ...(i.action.relevance === undefined
            ? {}
            : { notAfter: timestampFromMs(i.dueMs + i.action.relevance) }),
          priority: i.action.priority,
          cancelKeys: [`journey:${i.journey}:${i.profileId}`],
          purpose: i.action.purpose,
          ...(i.eventReceivedAt === undefined ? {} : { eventReceivedAt: i.eventReceivedAt }),
          intendedAt: timestampFromMs(clock()),
          profileVersion: i.profileVersion,
        }),
        { msgID: i.actionId },
      );
    };

    // Journeys with branches wait in their own durable timers (set up below; date journeys hand over to them).
    let stepTimers: DurableTimers<StepTimer> | undefined;
    /** Starts a journey's branches for one start of it, due at `dueMs`; once per start (a repeat leaves it be). */
    const startSteps = async (t: Omit<StepTimer, "path" | "startedAtMs">, dueMs: number): Promise<void> => {
      if (stepTimers === undefined) throw new Error("journey step timers not started yet");
      const key = [t.workspace, t.journey, t.profileId, t.instance].map(keyToken).join(".");
      if (stepTimers.dueOf(key) !== undefined || (await stepTimers.get(key)) !== undefined) return;
      await stepTimers.set(key, { dueMs, payload: { ...t, path: [], startedAtMs: clock() } });
    };

    // Date journeys (a birthday, a holiday) wait in durable timers until their local time.
    const timerLateness = new Histogram({
      name: "kairos_journey_timer_lateness_seconds",
      help: "How late date-journey timers fired (fired-at − due), in seconds.",
      buckets: LATENCY_BUCKETS_S,
      registers: [runtime.metrics.registry],
    });
    const timers = await DurableTimers.start<DateTimer>(runtime.nc, {
      bucket: "journey-timers",
      replicas: cfg.NATS_REPLICAS,
      tickMs: cfg.TIMER_TICK,
      clock,
      logger: runtime.logger,
      fire: async (_key, entry) => {
        const t = entry.payload;
        const journey = workspaces.get(t.workspace)?.config.journeys.find((j) => j.name === t.journey);
        if (journey === undefined || !("date" in journey.trigger)) return undefined; // removed since
        const a = journey.action;
        // With exit rules, the customer is in the journey until its last deadline (recorded before
        // the intent is published, so an exit right after it finds it).
        if (journey.exit.length > 0) {
          const until = entry.dueMs + horizonOf({ ...journey, wait: undefined, waitUntil: undefined });
          await lock.run(`${t.workspace}|${t.profileId}`, async () => {
            for (let attempt = 0; ; attempt++) {
              const { state, revision } = await store.get(t.workspace, t.profileId);
              const inJourney = { ...(state.inJourney ?? {}), [journey.name]: until };
              try {
                await store.put(t.workspace, t.profileId, { ...state, inJourney }, revision);
                return;
              } catch (e) {
                if (!(e instanceof WriteConflict) || attempt >= 9) throw e;
              }
            }
          });
        }
        if (a !== undefined) {
          await publishIntent({
            workspace: t.workspace,
            profileId: t.profileId,
            journey: journey.name,
            action: a,
            actionId: actionIdFor(t.workspace, journey.name, t.profileId, `date:${t.date}`),
            step: "action",
            payload: t.payload,
            dueMs: entry.dueMs,
            profileVersion: BigInt(t.profileVersion),
          });
        }
        if (journey.branches !== undefined) {
          // Decided now, on the profile as it is on the day (this occurrence's own start).
          await startSteps(
            {
              workspace: t.workspace,
              profileId: t.profileId,
              journey: journey.name,
              instance: `date:${t.date}`,
              eventId: "",
              eventName: "",
              eventProperties: {},
            },
            entry.dueMs,
          );
        }
        const next = nextOccurrence(t.rule, entry.dueMs);
        return next === undefined
          ? undefined
          : { next: { dueMs: next.atMs, payload: { ...t, date: next.date } } };
      },
    });
    timers.onFired = (ms) => timerLateness.observe(ms / 1000);
    runtime.lifecycle.add("intake", "journey-timers", () => timers.stop());
    runtime.addReadinessCheck({ name: "journey-timers", check: () => timers.ready });

    // Journeys with branches: when a wait is over, a durable timer takes the arm that holds on
    // the customer's profile as it is then (from identity), publishes its action and, when the
    // arm branches again, waits for that. An exit since the start stops it.
    const profiles = grpcProfileLookup(cfg.IDENTITY_GRPC_ADDR, cfg.IDENTITY_TIMEOUT);
    runtime.lifecycle.add("connections", "profile-lookup", () => profiles.close());
    const branchesTaken = new Counter({
      name: "kairos_journey_branches_total",
      help: "Branches reached in journeys, by the arm taken (`none` when no arm held).",
      labelNames: ["workspace", "journey", "arm"],
      registers: [runtime.metrics.registry],
    });
    stepTimers = await DurableTimers.start<StepTimer>(runtime.nc, {
      bucket: "journey-steps",
      replicas: cfg.NATS_REPLICAS,
      tickMs: cfg.TIMER_TICK,
      clock,
      logger: runtime.logger,
      fire: async (_key, entry) => {
        const t = entry.payload;
        const ws = workspaces.get(t.workspace);
        const journey = ws?.config.journeys.find((j) => j.name === t.journey);
        if (ws === undefined || journey === undefined || nodeAt(journey, t.path)?.branches === undefined)
          return undefined; // removed from the config since
        const profile = await profiles.get(t.workspace, t.profileId);
        if (profile === undefined) return undefined; // deleted
        // Left since the start: recorded on the profile it started for or, once that was merged
        // away (its journeys went to the survivor), on the survivor identity answers with.
        for (const id of new Set([t.profileId, profile.profileId])) {
          const { state } = await store.get(t.workspace, id, { fresh: true });
          if ((state.exitedAt?.[journey.name] ?? -1) >= t.startedAtMs) return undefined;
        }
        const change = create(ProfileChangedSchema, {
          workspace: t.workspace,
          profileId: profile.profileId,
          version: profile.version,
          profile,
          computedTraits: profile.computedTraits ?? {},
          eventId: t.eventId,
          eventName: t.eventName,
          eventProperties: t.eventProperties,
        });
        const choice = chooseArm(
          journey,
          ws.arms.get(journey.name) ?? new Map<string, undefined>(),
          t.path,
          bindingsOf(change),
        );
        for (const e of choice.errors)
          conditionErrors.inc({ workspace: t.workspace, segment: `journey:${journey.name}:${e.path}` });
        branchesTaken.inc({
          workspace: t.workspace,
          journey: journey.name,
          arm: choice.index === undefined ? "none" : [...t.path, choice.index].join("."),
        });
        if (choice.index === undefined) return undefined;
        const path = [...t.path, choice.index];
        const arm = nodeAt(journey, path)!;
        // From when the branch point was due, not when it fired: lateness does not add up.
        const dueMs = dueAfterWait(arm, profile.traits ?? {}, ws.config.timezone, entry.dueMs);
        if (arm.action !== undefined) {
          await publishIntent({
            workspace: t.workspace,
            profileId: t.profileId,
            journey: journey.name,
            action: arm.action,
            // One action per branch point, whichever arm: a firing repeated after a crash, on a
            // profile that changed meanwhile, cannot send a second arm's action as well.
            actionId: actionIdFor(
              t.workspace,
              journey.name,
              t.profileId,
              `${t.instance}@${t.path.join(".")}`,
            ),
            step: `branch ${path.join(".")}`,
            payload: renderPayload(arm.action.payload, change),
            dueMs,
            profileVersion: profile.version,
          });
        }
        if (arm.branches === undefined) return undefined;
        return { next: { dueMs, payload: { ...t, path } } };
      },
    });
    const steps = stepTimers;
    runtime.lifecycle.add("intake", "journey-steps", () => steps.stop());
    runtime.addReadinessCheck({ name: "journey-steps", check: () => steps.ready });
    const timerKey = (ws: string, journey: string, profileId: string) =>
      [ws, journey, profileId].map(keyToken).join(".");

    /** Publishes what an evaluation produced; same ids on a repeat, so JetStream stores each once. */
    const publishPlan = async (ws: CompiledWorkspace, change: ProfileChanged, plan: Plan) => {
      const now = clock();
      const publishes: Promise<unknown>[] = [];
      for (const t of plan.transitions) {
        const kind = t.entered ? "entered" : "exited";
        publishes.push(
          runtime.publisher.publishMessage(
            subjects.segments(change.workspace, t.segment),
            SegmentMembershipChangedSchema,
            create(SegmentMembershipChangedSchema, {
              workspace: change.workspace,
              segment: t.segment,
              profileId: change.profileId,
              change: t.entered ? MembershipChange.ENTERED : MembershipChange.EXITED,
              reason: t.reason,
              profileVersion: change.version,
              eventId: change.eventId,
              eventReceivedAt: change.eventReceivedAt,
              changedAt: timestampFromMs(now),
            }),
            { msgID: `${change.workspace}:${t.segment}:${change.profileId}:${plan.version}:${kind}` },
          ),
        );
      }
      for (const f of plan.firings) {
        const journey = ws.config.journeys.find((j) => j.name === f.journey);
        if (journey === undefined) continue; // removed from the config since
        const dueMs = dueAfterWait(journey, change.profile?.traits ?? {}, ws.config.timezone, now);
        if (journey.action !== undefined) {
          publishes.push(
            publishIntent({
              workspace: change.workspace,
              profileId: change.profileId,
              journey: journey.name,
              action: journey.action,
              actionId: f.actionId,
              step: "action",
              payload: renderPayload(journey.action.payload, change),
              dueMs,
              profileVersion: change.version,
              eventReceivedAt: change.eventReceivedAt,
            }),
          );
        }
        if (journey.branches !== undefined && f.instance !== undefined) {
          publishes.push(
            startSteps(
              {
                workspace: change.workspace,
                profileId: change.profileId,
                journey: journey.name,
                instance: f.instance,
                eventId: change.eventId,
                eventName: change.eventName,
                eventProperties: change.eventProperties ?? {},
              },
              dueMs,
            ),
          );
        }
      }
      // A journey the customer left: its pending actions are cancelled (suppression drops
      // deferred ones, dispatchers withdraw what was handed over).
      for (const x of plan.exits ?? []) {
        const cancellationId = `${change.workspace}:${x.journey}:${change.profileId}:exit:${plan.version}`;
        publishes.push(
          runtime.publisher.publishMessage(
            subjects.cancels(change.workspace),
            CancellationSchema,
            create(CancellationSchema, {
              cancellationId,
              workspace: change.workspace,
              profileId: change.profileId,
              cancelKeys: [`journey:${x.journey}:${change.profileId}`],
              reason: `exit ${x.journey}: ${x.reason}`,
              cancelledAt: timestampFromMs(now),
              profileVersion: change.version,
            }),
            { msgID: cancellationId },
          ),
        );
        exitsTotal.inc({ workspace: change.workspace, journey: x.journey });
      }
      // Date journeys: set (or move) the profile's timer, or remove it.
      for (const sch of plan.schedules ?? []) {
        const key = timerKey(change.workspace, sch.journey, change.profileId);
        const journey = ws.config.journeys.find((j) => j.name === sch.journey);
        if (sch.occurrence === undefined || sch.rule === undefined || journey === undefined) {
          publishes.push(timers.cancel(key));
          continue;
        }
        publishes.push(
          timers.set(key, {
            dueMs: sch.occurrence.atMs,
            payload: {
              workspace: change.workspace,
              profileId: change.profileId,
              journey: sch.journey,
              date: sch.occurrence.date,
              rule: sch.rule,
              payload: renderPayload(journey.action?.payload ?? {}, change),
              profileVersion: String(change.version),
            },
          }),
        );
      }
      await Promise.all(publishes);
    };

    /** Compare-and-set `fn` on a profile's record, read again after another writer's change. */
    const update = async (
      ws: string,
      profileId: string,
      fn: (s: MembershipState) => MembershipState | undefined,
    ) => {
      for (let attempt = 0; ; attempt++) {
        const { state, revision } = await store.get(ws, profileId);
        const next = fn(state);
        if (next === undefined) return; // nothing to change
        try {
          await store.put(ws, profileId, next, revision);
          return;
        } catch (e) {
          if (e instanceof WriteConflict && attempt < 10) continue;
          throw e;
        }
      }
    };
    /**
     * A merged-away profile's pending journeys go to its survivor (`journeysToHandOver`): joined
     * there first, the decision kept on the survivor, then recorded on the merged-away profile
     * (compare-and-set on what was read), whose removal then exits only the others (cancelled). A
     * stop in between hands over again, the same journeys. The actions pending keep their ids;
     * suppression reaches them through the survivor's cancellations.
     */
    const handOver = async (
      ws: CompiledWorkspace,
      loser: string,
      survivor: string,
      mergeVersion: number,
    ): Promise<void> => {
      const workspace = ws.config.id;
      for (let attempt = 0; ; attempt++) {
        const from = await store.get(workspace, loser, { fresh: true });
        if (!hasJourneys(from.state) || from.state.handedOver !== undefined) return;
        if (undoneMerge(from.state, survivor, mergeVersion)) return; // split off again meanwhile
        let handed: string[] = [];
        await update(workspace, survivor, (s) => {
          handed = journeysToHandOver(ws, s, from.state, loser, mergeVersion);
          return withJourneysOf(s, from.state, loser, handed);
        });
        try {
          await store.put(workspace, loser, { ...from.state, handedOver: handed }, from.revision);
          return;
        } catch (e) {
          if (e instanceof WriteConflict && attempt < 10) continue;
          throw e;
        }
      }
    };

    /** Evaluates a change; `unless` (read on every attempt) says when it no longer applies. */
    const apply = async (
      ws: CompiledWorkspace,
      change: ProfileChanged,
      unless?: (s: MembershipState) => boolean,
    ): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        const got = await store.get(change.workspace, change.profileId);
        if (unless?.(got.state) === true) return;
        const { revision } = got;
        const version = Number(change.version);
        // A profile split back off a merge (unmerge) starts afresh but for its journeys
        // (`restoredState`): only from its removal as merged-away, at the top version (a redelivery
        // of the split's change after a later change of the profile is older, and ignored below).
        let state =
          change.unmergedFrom !== "" && got.state.version === Number.MAX_SAFE_INTEGER
            ? restoredState(got.state, clock())
            : got.state;
        if (change.unmergedFrom !== "") {
          // Live again: a removal as merged-away that comes later (its merge's) is not made.
          const split = { profileId: change.unmergedFrom, version: Number(change.unmergedFromVersion) };
          const { handedOver: _, ...rest } = state;
          state = { ...rest, splitFrom: split };
        }
        if (version < state.version) return; // older than what we already evaluated
        if (version === state.version && state.last !== undefined) {
          // A repeat (redelivery after a crash): publish the same outputs again.
          await publishPlan(ws, change, state.last);
          return;
        }
        const { plan, next, errors } = evaluate(ws, change, state, clock());
        for (const e of errors) conditionErrors.inc({ workspace: change.workspace, segment: e.segment });
        try {
          await store.put(change.workspace, change.profileId, next, revision);
        } catch (e) {
          if (e instanceof WriteConflict && attempt < 10) continue;
          throw e;
        }
        await Promise.all(
          plan.transitions.map((t) => {
            transitionsTotal.inc({
              workspace: change.workspace,
              segment: t.segment,
              change: t.entered ? "entered" : "exited",
            });
            return store.setMember(
              change.workspace,
              t.segment,
              change.profileId,
              t.entered ? next.members[t.segment] : undefined,
            );
          }),
        );
        await publishPlan(ws, change, plan);
        return;
      }
    };

    await runtime.consume(consumers.segmentation, {
      stage: "segment",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinaryFast(ProfileChangedSchema, b),
      handle: async (change) => {
        const ws = workspaces.get(change.workspace);
        if (ws === undefined) {
          runtime.logger.debug(
            { workspace: change.workspace },
            "profile change of a workspace without segments",
          );
          return;
        }
        await lock.run(`${change.workspace}|${change.profileId}`, async () => {
          // A merge an unmerge undid since (this change redelivered, or handled late): the profile
          // split off again is live, and keeps what it has. Read from the bucket: a cached copy from
          // when this replica removed it would repeat that removal's exits. (`handOver` and the
          // removal's `unless` look again, for a split landing meanwhile.)
          const losers: string[] = [];
          for (const loser of change.mergedFrom) {
            if (loser === change.profileId) continue;
            const { state } = await store.get(change.workspace, loser, { fresh: true });
            if (!undoneMerge(state, change.profileId, Number(change.version))) losers.push(loser);
          }
          // Profiles merged away hand their journeys to the survivor first, so that this change
          // (a purchase that also logged the customer in) can already exit them.
          for (const loser of losers) {
            await lock.run(`${change.workspace}|${loser}`, () =>
              handOver(ws, loser, change.profileId, Number(change.version)),
            );
          }
          await apply(ws, change);
          // Profiles merged away leave their segments: their ids are gone.
          for (const loser of losers) {
            await lock.run(`${change.workspace}|${loser}`, () =>
              apply(
                ws,
                create(ProfileChangedSchema, {
                  workspace: change.workspace,
                  profileId: loser,
                  version: BigInt(Number.MAX_SAFE_INTEGER),
                  deleted: true,
                  eventReceivedAt: change.eventReceivedAt,
                }),
                // Split off again meanwhile (another replica, or just now): it stays live.
                (s) => undoneMerge(s, change.profileId, Number(change.version)),
              ),
            );
          }
        });
        // Split back off its survivor: what it handed over there is its own again (`restoredState`),
        // and a later merge of the two decides afresh. (Outside this profile's lock: a merge holds
        // the survivor's, then the merged-away profile's.)
        if (change.unmergedFrom !== "") {
          await update(change.workspace, change.unmergedFrom, (s) => {
            if (s.handedFrom?.[change.profileId] === undefined) return undefined;
            const { [change.profileId]: _, ...rest } = s.handedFrom;
            const { handedFrom: _h, ...next } = s;
            return Object.keys(rest).length > 0 ? { ...next, handedFrom: rest } : next;
          });
        }
      },
    });

    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(SegmentService, {
        listMemberships: async (req) => {
          if (req.workspace === "" || req.profileId === "") {
            throw new GrpcError(grpc.status.INVALID_ARGUMENT, "workspace and profile_id are required");
          }
          const { state } = await store.get(req.workspace, req.profileId, { fresh: true });
          return {
            memberships: Object.entries(state.members).map(([segment, since]) => ({
              segment,
              profileId: req.profileId,
              enteredAt: timestampFromMs(since),
            })),
          };
        },
        listSegmentMembers: async (req) => {
          const ws = workspaces.get(req.workspace);
          if (ws === undefined)
            throw new GrpcError(grpc.status.NOT_FOUND, `unknown workspace ${JSON.stringify(req.workspace)}`);
          if (!ws.segments.some((s) => s.name === req.segment)) {
            throw new GrpcError(
              grpc.status.NOT_FOUND,
              `unknown segment ${JSON.stringify(req.segment)} in workspace ${req.workspace}`,
            );
          }
          const limit = req.pageSize === 0 ? 100 : Math.min(req.pageSize, 1000);
          const page = await store.listMembers(req.workspace, req.segment, req.pageToken, limit);
          return {
            members: page.map((m) => ({
              segment: req.segment,
              profileId: m.profileId,
              enteredAt: timestampFromMs(m.since),
            })),
            nextPageToken: page.length === limit ? (page.at(-1)?.profileId ?? "") : "",
          };
        },
      }),
    ]);
    return { grpcAddress: grpcServer.address };
  });
}
