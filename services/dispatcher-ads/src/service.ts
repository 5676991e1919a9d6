/**
 * The ad-audiences channel (Inspire mode, minutes): keeps ad platforms'
 * customer-match audiences in step with segments. Batched add/remove of
 * SHA-256-hashed normalised emails and phones to an audience endpoint.
 *
 * - A customer entering a segment that feeds an audience (settings.audiences)
 *   becomes an Intent on this channel, so suppression applies consent and
 *   suppression lists before anyone is uploaded; journeys may target the
 *   channel too, with payload `{audience, op}`.
 * - Exiting the segment, or being deleted, removes exactly the identifiers that
 *   were added (KV `ad-audience-members`), published straight to DISPATCH:
 *   removing needs no consent. A pending add is cancelled as well.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Kvm, type KV } from "@nats-io/kv";
import { z } from "zod";
import {
  CancellationSchema,
  DispatchSchema,
  IntentSchema,
  MembershipChange,
  ProfileChangedSchema,
  SegmentMembershipChangedSchema,
  fromBinaryFast,
} from "@kairos/contracts";
import {
  classifyError,
  classifyStatus,
  configSpecOf,
  delivered,
  fail,
  startDispatcher,
  type ChannelDefinition,
  type DispatcherConfig,
  type DispatcherHandle,
  type DispatcherHost,
} from "@kairos/dispatcher-sdk";
import { Cancellations, durableConsumer, keyToken, subjects, type StartOptions } from "@kairos/kit";
import { duration } from "@kairos/mesh-config";
import {
  applyToRecord,
  audienceActionId,
  audienceCancelKey,
  audienceOp,
  hashedIdentifiers,
  planBatch,
  type MemberRecord,
} from "./audience.js";

export const settingsSchema = z
  .object({
    /** The audience endpoint: one POST per audience and operation per batch. */
    url: z.string().url(),
    timeout: duration.default(30_000),
    headers: z.record(z.string()).default({}),
    /** Audiences fed by segments: entering adds, exiting removes. */
    audiences: z
      .array(
        z
          .object({
            name: z.string().min(1),
            segment: z.string().min(1),
            purpose: z.string().default("marketing"),
          })
          .strict(),
      )
      .default([]),
    /** How long an add stays relevant (e.g. while held by quiet hours or a paused endpoint). */
    relevance: duration.default(86_400_000),
  })
  .strict();

export type AdsSettings = z.output<typeof settingsSchema>;

const enc = new TextEncoder();
const dec = new TextDecoder();
const memberKey = (workspace: string, profileId: string) => `${keyToken(workspace)}.${keyToken(profileId)}`;

export function adsChannel(): ChannelDefinition<AdsSettings> {
  let members: KV | undefined;
  let cancellations: Cancellations | undefined;

  const readRecord = async (workspace: string, profileId: string) => {
    const e = await members!.get(memberKey(workspace, profileId));
    if (e === null || e.operation !== "PUT" || e.value.length === 0)
      return { record: {} as MemberRecord, revision: 0 };
    return { record: JSON.parse(dec.decode(e.value)) as MemberRecord, revision: e.revision };
  };

  /** Compare-and-set update of one profile's record. */
  const updateRecord = async (
    workspace: string,
    profileId: string,
    fn: (r: MemberRecord) => MemberRecord,
  ) => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const { record, revision } = await readRecord(workspace, profileId);
      const next = fn(record);
      const key = memberKey(workspace, profileId);
      try {
        if (Object.keys(next).length === 0) {
          if (revision !== 0) await members!.delete(key, { previousSeq: revision });
        } else if (revision === 0) await members!.create(key, enc.encode(JSON.stringify(next)));
        else await members!.update(key, enc.encode(JSON.stringify(next)), revision);
        return;
      } catch (e) {
        if (attempt === 19) throw e;
      }
    }
  };

  /** Removal of what was added, straight to DISPATCH, and cancellation of a pending add. */
  const removeFrom = async (
    host: DispatcherHost<AdsSettings, DispatcherConfig>,
    workspace: string,
    profileId: string,
    audiences: string[],
    cause: string,
    /** When what caused the removal happened: the removal is intended after it (so a deletion does not withdraw it). */
    causedAtMs = 0,
  ) => {
    const { runtime, channel } = host;
    const now = Math.max(host.clock(), causedAtMs + 1);
    const cancelKeys = audiences.map((a) => audienceCancelKey(a, profileId));
    // Marked before the record is read; an add being delivered writes the record before it
    // reads the marks (afterDelivered): whichever comes second sees the other.
    await cancellations!.mark(workspace, profileId, cancelKeys, { atMs: now, reason: `audience_${cause}` });
    const { record } = await readRecord(workspace, profileId);
    await runtime.publisher.publishMessage(
      subjects.cancels(workspace),
      CancellationSchema,
      create(CancellationSchema, {
        cancellationId: audienceActionId([workspace, channel.name, profileId, ...audiences, cause, "cancel"]),
        workspace,
        profileId,
        cancelKeys,
        reason: `audience_${cause}`,
        cancelledAt: timestampFromMs(now),
      }),
      { msgID: audienceActionId([workspace, channel.name, profileId, ...audiences, cause, "cancel"]) },
    );
    for (const audience of audiences) {
      const added = record[audience];
      if (added === undefined) continue;
      const actionId = audienceActionId([workspace, channel.name, audience, profileId, cause, "remove"]);
      await runtime.publisher.publishMessage(
        subjects.dispatch(workspace, channel.name),
        DispatchSchema,
        create(DispatchSchema, {
          intent: {
            actionId,
            workspace,
            profileId,
            channel: channel.name,
            journey: `audience:${audience}`,
            purpose: "service",
            payload: { audience, op: "remove" },
            intendedAt: timestampFromMs(now),
          },
          decision: `removal:${cause}`,
          destinations: [
            ...added.email_sha256.map((value) => ({ type: "email_sha256", value })),
            ...added.phone_sha256.map((value) => ({ type: "phone_sha256", value })),
          ],
          dueAt: timestampFromMs(now),
          decidedAt: timestampFromMs(now),
        }),
        { msgID: actionId },
      );
    }
  };

  return {
    service: "dispatcher-ads",
    defaultChannel: "ads",
    ports: { grpc: 50060, ops: 9470 },
    settings: settingsSchema,
    destinationKey: (a) => (typeof a.payload.audience === "string" ? a.payload.audience : "none"),
    deliverBatch: async (actions, { settings, http, traceHeaders, now }) => {
      const { requests, plan } = planBatch(actions);
      const answers = await Promise.all(
        requests.map(async (r) => {
          try {
            const answer = await http.post(
              settings.url,
              { ...settings.headers, ...traceHeaders, "idempotency-key": r.idempotencyKey },
              JSON.stringify({
                audience: r.audience,
                operation: r.operation,
                schema: ["EMAIL_SHA256", "PHONE_SHA256"],
                members: r.members,
                action_ids: r.actions.map((i) => actions[i]!.actionId),
              }),
              settings.timeout,
            );
            return classifyStatus(answer.status, answer.headers["retry-after"], now());
          } catch (e) {
            return classifyError(e);
          }
        }),
      );
      return plan.map((p) => {
        if (p.kind === "request") return answers[p.index]!;
        if (p.kind === "fail") return fail(p.reason);
        return delivered(p.kind);
      });
    },
    afterDelivered: async (a, detail, host) => {
      if (detail === "superseded" || detail === "nothing_to_match") return;
      const p = audienceOp(a);
      if (!p.ok) return;
      await updateRecord(a.workspace, a.profileId, (r) =>
        applyToRecord(r, p.audience, p.op, hashedIdentifiers(a)),
      );
      // The customer left the segment while this add was on its way: take it back out.
      if (p.op === "add" && a.cancelKeys.length > 0) {
        const cancelled = await cancellations!.cancelling(
          a.workspace,
          a.profileId,
          a.cancelKeys,
          a.intendedAtMs ?? 0,
        );
        if (cancelled !== undefined) {
          await removeFrom(host, a.workspace, a.profileId, [p.audience], `late:${a.actionId}`);
        }
      }
    },
    setup: async (host) => {
      const { runtime, settings, channel, config, clock } = host;
      members = await new Kvm(runtime.nc).create("ad-audience-members", {
        history: 1,
        replicas: config.NATS_REPLICAS,
      });
      cancellations = await Cancellations.open(runtime.nc, config.NATS_REPLICAS);
      const bySegment = new Map<string, AdsSettings["audiences"]>();
      for (const a of settings.audiences) bySegment.set(a.segment, [...(bySegment.get(a.segment) ?? []), a]);

      await runtime.consume(durableConsumer("SEGMENTS", `dispatcher-${channel.name}-segments`), {
        stage: "audience",
        decode: (b) => fromBinaryFast(SegmentMembershipChangedSchema, b),
        handle: async (m) => {
          const audiences = bySegment.get(m.segment) ?? [];
          if (audiences.length === 0) return;
          if (m.change === MembershipChange.EXITED) {
            await removeFrom(
              host,
              m.workspace,
              m.profileId,
              audiences.map((a) => a.name),
              `exit:${m.segment}:${m.profileVersion}`,
            );
            return;
          }
          if (m.change !== MembershipChange.ENTERED) return;
          const now = clock();
          for (const a of audiences) {
            const actionId = audienceActionId([
              m.workspace,
              channel.name,
              a.name,
              m.profileId,
              "enter",
              String(m.profileVersion),
            ]);
            await runtime.publisher.publishMessage(
              subjects.intents(m.workspace, channel.name),
              IntentSchema,
              create(IntentSchema, {
                actionId,
                workspace: m.workspace,
                profileId: m.profileId,
                channel: channel.name,
                journey: `audience:${a.name}`,
                payload: { audience: a.name, op: "add" },
                notBefore: timestampFromMs(now),
                notAfter: timestampFromMs(now + settings.relevance),
                priority: 10,
                cancelKeys: [audienceCancelKey(a.name, m.profileId)],
                purpose: a.purpose,
                profileVersion: m.profileVersion,
                ...(m.eventReceivedAt === undefined ? {} : { eventReceivedAt: m.eventReceivedAt }),
                intendedAt: timestampFromMs(
                  m.changedAt === undefined ? now : Math.max(now, timestampMs(m.changedAt)),
                ),
              }),
              { msgID: actionId },
            );
          }
        },
      });

      await runtime.consume(durableConsumer("PROFILES", `dispatcher-${channel.name}-deletions`), {
        stage: "audience",
        decode: (b) => fromBinaryFast(ProfileChangedSchema, b),
        handle: async (c) => {
          if (!c.deleted) return;
          const { record } = await readRecord(c.workspace, c.profileId);
          const audiences = [...new Set([...Object.keys(record), ...settings.audiences.map((a) => a.name)])];
          await removeFrom(
            host,
            c.workspace,
            c.profileId,
            audiences,
            `deleted:${c.version}`,
            c.eventReceivedAt === undefined ? 0 : timestampMs(c.eventReceivedAt),
          );
        },
      });
    },
  };
}

export const configSpec = configSpecOf(adsChannel());

export function startDispatcherAds(
  cfg: DispatcherConfig,
  opts: StartOptions = {},
): Promise<DispatcherHandle> {
  return startDispatcher(adsChannel(), cfg, opts);
}
