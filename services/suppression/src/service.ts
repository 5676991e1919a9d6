/**
 * The suppression service: every intent passes here. It expires what is past
 * its deadline, suppresses what opt-outs, consent or the daily cap forbid,
 * and hands the rest to the channel's dispatcher as a `Dispatch`.
 */
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Counter } from "prom-client";
import {
  Decision,
  DispatchSchema,
  IntentSchema,
  OutcomeSchema,
  OutcomeStatus,
  SuppressionService,
  type Intent,
  type Profile,
} from "@kairos/contracts";
import { loadMeshConfig, type ChannelConfig } from "@kairos/mesh-config";
import {
  consumers,
  env,
  GrpcError,
  implement,
  KeyedLock,
  PermanentError,
  runtimeConfig,
  startService,
  type ServiceHandle,
  type StartOptions as KitStartOptions,
  subjects,
  type ConfigOf,
} from "@kairos/kit";
import { capDay, decide, dueAtOf, type IntentFacts, type Verdict } from "./decide.js";
import { grpcProfileLookup, type ProfileLookup } from "./profiles.js";
import { SuppressionStores, WriteConflict } from "./stores.js";

/** Environment variables of the suppression service. */
export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50054),
  OPS_PORT: env.port(9464),
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  IDENTITY_GRPC_ADDR: env.string("127.0.0.1:50052"),
  IDENTITY_TIMEOUT: env.duration(2000),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
};

export type SuppressionConfig = ConfigOf<typeof configSpec>;

/** A running suppression service. */
export type SuppressionHandle = ServiceHandle;

export interface StartOptions extends KitStartOptions {
  /** Replaces the gRPC lookup of profiles in identity (closed on shutdown). */
  profiles?: ProfileLookup;
}

/** Compare-and-set attempts on a cap ledger before the intent is handed back for redelivery. */
const CAS_ATTEMPTS = 10;

/** What a decision was made about: an intent, or a `Check` request. */
interface Question extends IntentFacts {
  workspace: string;
  profileId: string;
}

/** Starts the suppression service: the INTENTS consumer and `SuppressionService` over gRPC. */
export async function startSuppression(
  cfg: SuppressionConfig,
  opts: StartOptions = {},
): Promise<SuppressionHandle> {
  const clock = opts.clock ?? Date.now;
  const mesh = loadMeshConfig(cfg.KAIROS_CONFIG);
  const channels = new Map<string, ChannelConfig>(mesh.channels.map((c) => [c.name, c]));
  const timeZones = new Map(mesh.workspaces.map((w) => [w.id, w.timezone]));
  return startService("suppression", cfg, opts, async (runtime) => {
    const stores = await SuppressionStores.open(runtime.nc, cfg.NATS_REPLICAS);
    runtime.addReadinessCheck({ name: "suppression-stores", check: () => stores.ping() });
    const profiles = opts.profiles ?? grpcProfileLookup(cfg.IDENTITY_GRPC_ADDR, cfg.IDENTITY_TIMEOUT);
    runtime.lifecycle.add("connections", "profile-lookup", () => profiles.close());
    runtime.metrics.stageObjective.set({ stage: "suppress" }, 0.005);
    const decisions = new Counter({
      name: "kairos_suppression_decisions_total",
      help: "Decisions on intents, by channel, verdict and reason.",
      labelNames: ["channel", "verdict", "reason"],
      registers: [runtime.metrics.registry],
    });
    // One profile's intents one at a time in this process: fewer cap-ledger conflicts.
    const lock = new KeyedLock();

    const channelOf = (name: string): ChannelConfig => {
      const c = channels.get(name);
      if (c === undefined) throw new PermanentError(`unknown channel ${JSON.stringify(name)}`);
      return c;
    };

    /**
     * Gathers the facts and decides. With `take`, a dispatch verdict also takes
     * its cap slot (compare-and-set, re-deciding on a conflict); `Check` does not.
     */
    const judge = async (
      q: Question,
      take: boolean,
    ): Promise<{ verdict: Verdict; profile: Profile | undefined; decidedAtMs: number }> => {
      const channel = channelOf(q.channel);
      const workspaceTz = timeZones.get(q.workspace) ?? "UTC";
      const profile = await profiles.get(q.workspace, q.profileId);
      // After a merge identity answers with the survivor: its consent and its cap apply.
      const profileId = profile?.profileId || q.profileId;
      const consent = await stores.consentFor(q.workspace, profileId, q.channel, q.purpose);
      for (let attempt = 1; ; attempt++) {
        const now = clock();
        const day = capDay(profile, now, workspaceTz);
        const key = stores.capKey(q.workspace, q.channel, profileId, day);
        const ledger =
          channel.dailyCap === undefined || profile === undefined
            ? { ids: [], revision: 0 }
            : await stores.counted(key);
        const verdict = decide(
          q,
          profile,
          consent,
          { dailyCap: channel.dailyCap, day, counted: ledger.ids },
          now,
          workspaceTz,
        );
        if (!take || verdict.kind !== "dispatch" || verdict.count === undefined) {
          return { verdict, profile, decidedAtMs: now };
        }
        try {
          // decide() counts on the same local day as `capDay`, so `key` is the ledger to extend.
          await stores.count(key, ledger.ids, q.actionId, ledger.revision);
          return { verdict, profile, decidedAtMs: now };
        } catch (e) {
          // Another replica counted for this profile meanwhile: read the ledger again.
          if (e instanceof WriteConflict && attempt < CAS_ATTEMPTS) continue;
          throw e;
        }
      }
    };

    const handleIntent = async (intent: Intent) => {
      const { verdict, profile, decidedAtMs } = await judge(intent, true);
      decisions.inc({
        channel: intent.channel,
        verdict: verdict.kind,
        reason: verdict.kind === "dispatch" ? "" : verdict.reason,
      });
      if (verdict.kind === "dispatch") {
        const dueAt = dueAtOf(intent);
        await runtime.publisher.publishMessage(
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
        );
        return;
      }
      const status = verdict.kind === "expire" ? OutcomeStatus.EXPIRED : OutcomeStatus.SUPPRESSED;
      runtime.logger.debug(
        { actionId: intent.actionId, channel: intent.channel, reason: verdict.reason },
        "intent not dispatched",
      );
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
          reason: verdict.reason,
          detail: verdict.detail,
          times: {
            eventReceivedAt: intent.eventReceivedAt,
            intendedAt: intent.intendedAt,
            decidedAt: timestampFromMs(decidedAtMs),
          },
        }),
        { msgID: `${intent.actionId}:${OutcomeStatus[status]}` },
      );
    };

    await runtime.consume(consumers.suppression, {
      stage: "suppress",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinary(IntentSchema, b),
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
        await lock.run(`${intent.workspace}|${intent.profileId}`, () => handleIntent(intent));
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
    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(SuppressionService, {
        check: async (req) => {
          validate(req);
          const { verdict } = await judge({ ...req, actionId: "", notAfter: undefined }, false);
          return verdict.kind === "dispatch"
            ? { decision: Decision.ALLOW, reason: "" }
            : { decision: Decision.SUPPRESS, reason: verdict.reason };
        },
        setConsent: async (req) => {
          validate(req);
          const recordedAtMs = clock();
          await stores.setConsent(req.workspace, req.profileId, req.channel, req.purpose, {
            granted: req.granted,
            source: req.source,
            recordedAtMs,
          });
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
