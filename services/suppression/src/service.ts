/**
 * The suppression service: every intent passes here. It expires what is past
 * its deadline, suppresses what consent, opt-outs or the daily cap forbid,
 * and hands the rest to the channel's dispatcher as a `Dispatch`.
 */
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { SpanProcessor } from "@opentelemetry/sdk-trace-node";
import { Counter } from "prom-client";
import {
  Decision,
  DispatchSchema,
  IntentSchema,
  OutcomeSchema,
  OutcomeStatus,
  SuppressionService,
  type Intent,
} from "@kairos/contracts";
import { loadMeshConfig, type MeshConfig } from "@kairos/mesh-config";
import {
  consumers,
  env,
  GrpcError,
  implement,
  KeyedLock,
  PermanentError,
  runtimeConfig,
  ServiceRuntime,
  subjects,
  type ConfigOf,
} from "@kairos/kit";
import { decide, localDay, timeZoneOf, type Verdict } from "./decide.js";
import { grpcProfileLookup, type ProfileLookup } from "./profiles.js";
import { SuppressionStores, WriteConflict } from "./stores.js";

export const configSpec = {
  ...runtimeConfig,
  GRPC_PORT: env.port(50054),
  OPS_PORT: env.port(9464),
  KAIROS_CONFIG: env.string("config/demo.yaml"),
  IDENTITY_GRPC_ADDR: env.string("127.0.0.1:50052"),
  CONCURRENCY: env.int(64, { min: 1, max: 4096 }),
};

export type SuppressionConfig = ConfigOf<typeof configSpec>;

export interface SuppressionHandle {
  runtime: ServiceRuntime;
  grpcAddress: string;
  stop(): Promise<boolean>;
}

export interface StartOptions {
  spanProcessors?: SpanProcessor[];
  handleSignals?: boolean;
  clock?: () => number;
  /** Overrides the gRPC lookup of profiles in identity. */
  profiles?: ProfileLookup;
}

function workspaceTimeZone(mesh: MeshConfig, ws: string): string | undefined {
  return mesh.workspaces.find((w) => w.id === ws)?.timezone;
}

export async function startSuppression(
  cfg: SuppressionConfig,
  opts: StartOptions = {},
): Promise<SuppressionHandle> {
  const clock = opts.clock ?? Date.now;
  const mesh = loadMeshConfig(cfg.KAIROS_CONFIG);
  const channels = new Map(mesh.channels.map((c) => [c.name, c]));
  const runtime = await ServiceRuntime.start({
    service: "suppression",
    natsUrl: cfg.NATS_URL,
    natsReplicas: cfg.NATS_REPLICAS,
    opsHost: cfg.OPS_HOST,
    opsPort: cfg.OPS_PORT,
    logLevel: cfg.LOG_LEVEL,
    shutdownTimeoutMs: cfg.SHUTDOWN_TIMEOUT,
    handleSignals: opts.handleSignals ?? false,
    spanProcessors: opts.spanProcessors ?? [],
  });
  try {
    const stores = await SuppressionStores.open(runtime.nc, cfg.NATS_REPLICAS);
    runtime.addReadinessCheck({ name: "suppression-stores", check: () => stores.ping() });
    const profiles = opts.profiles ?? grpcProfileLookup(cfg.IDENTITY_GRPC_ADDR);
    runtime.lifecycle.add("connections", "profile-lookup", () => profiles.close());
    runtime.metrics.stageObjective.set({ stage: "suppress" }, 0.005);
    const decisions = new Counter({
      name: "kairos_suppression_decisions_total",
      help: "Decisions on intents, by channel, verdict and reason.",
      labelNames: ["channel", "verdict", "reason"],
      registers: [runtime.metrics.registry],
    });
    const lock = new KeyedLock();

    /** Gathers the facts and decides; for the pipeline, also takes a cap slot (atomically). */
    const judge = async (
      q: {
        workspace: string;
        profileId: string;
        channel: string;
        purpose: string;
        actionId: string;
        notAfterMs?: number;
      },
      take: boolean,
    ): Promise<Verdict> => {
      const channel = channels.get(q.channel);
      if (channel === undefined) throw new PermanentError(`unknown channel ${JSON.stringify(q.channel)}`);
      const tzDefault = workspaceTimeZone(mesh, q.workspace) ?? "UTC";
      for (let attempt = 0; ; attempt++) {
        const now = clock();
        const [profile, consentWithdrawn] = await Promise.all([
          profiles.get(q.workspace, q.profileId),
          stores.consentWithdrawn(q.workspace, q.profileId, q.channel, q.purpose),
        ]);
        const capKey = stores.capKey(
          q.workspace,
          q.channel,
          q.profileId,
          localDay(now, timeZoneOf(profile?.traits, tzDefault)),
        );
        const ledger =
          channel.dailyCap === undefined ? { ids: [], revision: 0 } : await stores.counted(capKey);
        const verdict = decide({
          nowMs: now,
          channel: q.channel,
          purpose: q.purpose,
          actionId: q.actionId,
          notAfterMs: q.notAfterMs,
          traits: profile === undefined ? undefined : (profile.traits ?? {}),
          consentWithdrawn,
          dailyCap: channel.dailyCap,
          countedToday: ledger.ids,
        });
        if (!take || verdict.kind !== "dispatch" || !verdict.countsAgainstCap) return verdict;
        try {
          await stores.count(capKey, ledger.ids, q.actionId, ledger.revision);
          return verdict;
        } catch (e) {
          if (e instanceof WriteConflict && attempt < 10) continue;
          throw e;
        }
      }
    };

    const handleIntent = async (intent: Intent) => {
      const notAfterMs = intent.notAfter === undefined ? undefined : timestampMs(intent.notAfter);
      const verdict = await judge(
        {
          workspace: intent.workspace,
          profileId: intent.profileId,
          channel: intent.channel,
          purpose: intent.purpose,
          actionId: intent.actionId,
          ...(notAfterMs === undefined ? {} : { notAfterMs }),
        },
        true,
      );
      const decidedAt = clock();
      decisions.inc({
        channel: intent.channel,
        verdict: verdict.kind,
        reason: verdict.kind === "dispatch" ? "" : verdict.reason,
      });
      if (verdict.kind === "dispatch") {
        const profile = await profiles.get(intent.workspace, intent.profileId);
        const notBefore = intent.notBefore === undefined ? 0 : timestampMs(intent.notBefore);
        const intended = intent.intendedAt === undefined ? notBefore : timestampMs(intent.intendedAt);
        // Immediate actions are due when the customer acted; scheduled ones at their time.
        const dueAt = notBefore > intended ? intent.notBefore : (intent.eventReceivedAt ?? intent.notBefore);
        await runtime.publisher.publishMessage(
          subjects.dispatch(intent.workspace, intent.channel),
          DispatchSchema,
          create(DispatchSchema, {
            intent,
            decision: "allow",
            destinations: profile?.identifiers ?? [],
            dueAt,
            decidedAt: timestampFromMs(decidedAt),
            profileTraits: profile?.traits ?? {},
          }),
          { msgID: intent.actionId },
        );
        return;
      }
      const status = verdict.kind === "expire" ? OutcomeStatus.EXPIRED : OutcomeStatus.SUPPRESSED;
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
          times: {
            eventReceivedAt: intent.eventReceivedAt,
            intendedAt: intent.intendedAt,
            decidedAt: timestampFromMs(decidedAt),
          },
        }),
        { msgID: `${intent.actionId}:${OutcomeStatus[status]}` },
      );
    };

    await runtime.consume(consumers.suppression, {
      stage: "suppress",
      concurrency: cfg.CONCURRENCY,
      decode: (b) => fromBinary(IntentSchema, b),
      handle: async (intent) => {
        if (
          intent.actionId === "" ||
          intent.workspace === "" ||
          intent.profileId === "" ||
          intent.channel === ""
        ) {
          throw new PermanentError("intent without action_id, workspace, profile_id or channel");
        }
        // One profile's intents one at a time: the cap ledger is read and written in order.
        await lock.run(`${intent.workspace}|${intent.profileId}`, () => handleIntent(intent));
      },
    });

    const requireFields = (fields: Record<string, string>) => {
      const missing = Object.entries(fields)
        .filter(([, v]) => v === "")
        .map(([k]) => k);
      if (missing.length > 0)
        throw new GrpcError(grpc.status.INVALID_ARGUMENT, `required: ${missing.join(", ")}`);
    };
    const grpcServer = await runtime.serveGrpc(cfg.GRPC_HOST, cfg.GRPC_PORT, [
      implement(SuppressionService, {
        check: async (req) => {
          requireFields({ workspace: req.workspace, profile_id: req.profileId, channel: req.channel });
          if (!channels.has(req.channel))
            throw new GrpcError(grpc.status.NOT_FOUND, `unknown channel ${JSON.stringify(req.channel)}`);
          const v = await judge(
            {
              workspace: req.workspace,
              profileId: req.profileId,
              channel: req.channel,
              purpose: req.purpose,
              actionId: "",
            },
            false,
          );
          return v.kind === "dispatch"
            ? { decision: Decision.ALLOW, reason: "" }
            : { decision: Decision.SUPPRESS, reason: v.reason };
        },
        setConsent: async (req) => {
          requireFields({ workspace: req.workspace, profile_id: req.profileId, channel: req.channel });
          if (!channels.has(req.channel))
            throw new GrpcError(grpc.status.NOT_FOUND, `unknown channel ${JSON.stringify(req.channel)}`);
          const recordedAtMs = clock();
          await stores.setConsent(req.workspace, req.profileId, req.channel, req.purpose, {
            granted: req.granted,
            source: req.source,
            recordedAtMs,
          });
          return { recordedAt: timestampFromMs(recordedAtMs) };
        },
      }),
    ]);
    runtime.markReady();
    return { runtime, grpcAddress: grpcServer.address, stop: () => runtime.shutdown() };
  } catch (e) {
    await runtime.shutdown("failed to start");
    throw e;
  }
}
