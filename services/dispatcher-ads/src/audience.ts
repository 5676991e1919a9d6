/**
 * Ad audiences, pure parts: identifiers normalised and SHA-256 hashed as ad
 * platforms match them, a batch of add/remove actions turned into one request
 * per audience and operation, and the record of what was added where (so an
 * exit or a deletion can remove exactly that).
 */
import { createHash } from "node:crypto";
import type { Action } from "@kairos/dispatcher-sdk";

export type Operation = "add" | "remove";

/** What one profile was added to: audience → hashed identifiers. */
export type MemberRecord = Record<string, { email_sha256: string[]; phone_sha256: string[] }>;

export const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** Email: trimmed, lower-cased. */
export const normaliseEmail = (e: string) => e.trim().toLowerCase();

/** Phone: E.164 digits with a leading `+` (separators dropped); undefined when it cannot be one. */
export function normalisePhone(p: string): string | undefined {
  const digits = p.replace(/[\s().-]/g, "");
  const m = /^(\+|00)?(\d{7,15})$/.exec(digits);
  if (m === null) return undefined;
  return `+${m[2]}`;
}

/** The hashed identifiers of an action: plain emails and phones hashed, already hashed ones kept. */
export function hashedIdentifiers(a: Action): { email_sha256: string[]; phone_sha256: string[] } {
  const email = new Set<string>();
  const phone = new Set<string>();
  for (const d of a.destinations) {
    if (d.type === "email") email.add(sha256(normaliseEmail(d.value)));
    else if (d.type === "email_sha256") email.add(d.value);
    else if (d.type === "phone") {
      const p = normalisePhone(d.value);
      if (p !== undefined) phone.add(sha256(p));
    } else if (d.type === "phone_sha256") phone.add(d.value);
  }
  return { email_sha256: [...email].sort(), phone_sha256: [...phone].sort() };
}

/** The audience and operation an action asks for, or why it cannot be done. */
export function audienceOp(
  a: Action,
): { ok: true; audience: string; op: Operation } | { ok: false; reason: string } {
  const audience = a.payload.audience;
  if (typeof audience !== "string" || audience === "") return { ok: false, reason: "no_audience" };
  const op = a.payload.op ?? "add";
  if (op !== "add" && op !== "remove") return { ok: false, reason: "unknown_operation" };
  return { ok: true, audience, op };
}

export interface AudienceRequest {
  audience: string;
  operation: Operation;
  /** Indexes into the batch of the actions this request carries. */
  actions: number[];
  members: { email_sha256: string[]; phone_sha256: string[] }[];
  idempotencyKey: string;
}

export type Planned =
  | { kind: "request"; index: number }
  | { kind: "fail"; reason: string }
  | { kind: "superseded" }
  | { kind: "nothing_to_match" };

/**
 * One request per (audience, operation), in order of first appearance. When
 * one profile is both added to and removed from an audience in the same batch,
 * only its last operation is sent (the earlier one is superseded).
 */
export function planBatch(actions: readonly Action[]): { requests: AudienceRequest[]; plan: Planned[] } {
  const plan: Planned[] = [];
  const last = new Map<string, number>();
  const parsed = actions.map((a, i) => {
    const p = audienceOp(a);
    if (p.ok) last.set(`${a.workspace}\u0000${p.audience}\u0000${a.profileId}`, i);
    return p;
  });
  const byGroup = new Map<string, AudienceRequest>();
  const requests: AudienceRequest[] = [];
  actions.forEach((a, i) => {
    const p = parsed[i]!;
    if (!p.ok) return void (plan[i] = { kind: "fail", reason: p.reason });
    if (last.get(`${a.workspace}\u0000${p.audience}\u0000${a.profileId}`) !== i)
      return void (plan[i] = { kind: "superseded" });
    const members = hashedIdentifiers(a);
    if (members.email_sha256.length + members.phone_sha256.length === 0)
      return void (plan[i] = { kind: "nothing_to_match" });
    const key = `${a.workspace}\u0000${p.audience}\u0000${p.op}`;
    let r = byGroup.get(key);
    if (r === undefined) {
      r = { audience: p.audience, operation: p.op, actions: [], members: [], idempotencyKey: "" };
      byGroup.set(key, r);
      requests.push(r);
    }
    plan[i] = { kind: "request", index: requests.indexOf(r) };
    r.actions.push(i);
    r.members.push(members);
  });
  for (const r of requests) {
    r.idempotencyKey = `aud_${sha256(
      r.actions
        .map((i) => actions[i]!.actionId)
        .sort()
        .join("|"),
    ).slice(0, 32)}`;
  }
  return { requests, plan };
}

/** The record after an add or a removal was delivered. */
export function applyToRecord(
  record: MemberRecord,
  audience: string,
  op: Operation,
  members: { email_sha256: string[]; phone_sha256: string[] },
): MemberRecord {
  const out = { ...record };
  if (op === "remove") {
    delete out[audience];
    return out;
  }
  const had = out[audience] ?? { email_sha256: [], phone_sha256: [] };
  out[audience] = {
    email_sha256: [...new Set([...had.email_sha256, ...members.email_sha256])].sort(),
    phone_sha256: [...new Set([...had.phone_sha256, ...members.phone_sha256])].sort(),
  };
  return out;
}

/** Deterministic ids of what the ads dispatcher itself publishes. */
export const audienceActionId = (parts: string[]) => `act_${sha256(parts.join("|")).slice(0, 32)}`;
export const audienceCancelKey = (audience: string, profileId: string) => `audience:${audience}:${profileId}`;
