/**
 * A workspace's identity rules, compiled: which event fields are identifiers,
 * how their values are normalised, which values are blocked, the priority
 * order, and the per-type limits that stop a merge. Pure.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Event } from "@kairos/contracts";
import {
  defaultIdentity,
  type ComputedTraitConfig,
  type IdentityConfig,
  type IdentifierRule,
} from "@kairos/mesh-config";
import { traitsOf, type Ident } from "./profile-record.js";

export interface CompiledRules {
  /** The workspace's computed traits. */
  readonly computed: readonly ComputedTraitConfig[];
  /** Identifier types in priority order, strongest first. */
  readonly types: readonly string[];
  /** The identifiers an event carries, normalised, blocked values removed, in priority order. */
  identifiersOf(e: Event): Ident[];
  /** Normalises a value given for `type` (a lookup); undefined when it can never be an identifier. */
  normalize(type: string, value: string): string | undefined;
  /**
   * The event identifiers to keep so that the profile they resolve to stays within the
   * per-type limits: the lowest-priority ones are dropped first (at least one is kept).
   * `existing(ids)` gives the identifiers already on the profiles those ids resolve to, with
   * when each was added where known (a type's `limitWindow` counts only those added within it
   * before `nowMs`; one of unknown age counts).
   */
  withinLimits(
    ids: readonly Ident[],
    existing: (ids: readonly Ident[]) => readonly (Ident & { addedAtMs?: number })[],
    nowMs?: number,
  ): { kept: Ident[]; dropped: Ident[] };
  /** Whether one profile holding all of these identifiers stays within the per-type limits. */
  fits(ids: readonly (Ident & { addedAtMs?: number })[], nowMs?: number): boolean;
}

/** E.164: `+` and 7 to 15 digits, the first not 0. Separators are removed, a leading `00` becomes `+`. */
export function normalizePhone(raw: string): string | undefined {
  let v = raw.trim().replace(/[\s().-]/g, "");
  if (v.startsWith("00")) v = `+${v.slice(2)}`;
  return /^\+[1-9]\d{6,14}$/.test(v) ? v : undefined;
}

function normalizeWith(rule: IdentifierRule, raw: string): string | undefined {
  switch (rule.normalize) {
    case "none":
      return raw === "" ? undefined : raw;
    case "trim":
      return raw.trim() === "" ? undefined : raw.trim();
    case "email": {
      const v = raw.trim().toLowerCase();
      return /^[^\s@]+@[^\s@]+$/.test(v) ? v : undefined;
    }
    case "phone":
      return normalizePhone(raw);
  }
}

function blockedMatcher(blocked: readonly string[]): (v: string) => boolean {
  const exact = new Set<string>();
  const patterns: RegExp[] = [];
  for (const b of blocked) {
    const m = /^\/(.*)\/([a-z]*)$/.exec(b);
    if (m === null) exact.add(b.toLowerCase());
    else patterns.push(new RegExp(m[1]!, m[2]));
  }
  return (v) => exact.has(v.toLowerCase()) || patterns.some((p) => p.test(v));
}

function eventView(e: Event): JsonObject {
  const c = e.context;
  const context: JsonObject = {
    ...(c?.extra ?? {}),
    ...(c?.ip ? { ip: c.ip } : {}),
    ...(c?.userAgent ? { userAgent: c.userAgent } : {}),
    ...(c?.locale ? { locale: c.locale } : {}),
    ...(c?.timezone ? { timezone: c.timezone } : {}),
  };
  if (c?.device !== undefined) {
    context.device = { id: c.device.id, advertisingId: c.device.advertisingId, type: c.device.type };
  }
  return {
    userId: e.userId,
    anonymousId: e.anonymousId,
    traits: traitsOf(e),
    context,
    properties: e.properties ?? {},
  };
}

function read(view: JsonObject, path: string): string | undefined {
  let cur: JsonValue | undefined = view;
  for (const part of path.split(".")) {
    cur = cur !== null && typeof cur === "object" && !Array.isArray(cur) ? cur[part] : undefined;
  }
  if (typeof cur === "string") return cur;
  if (typeof cur === "number" && Number.isFinite(cur)) return String(cur);
  return undefined;
}

export function compileRules(
  cfg: IdentityConfig = defaultIdentity,
  computed: readonly ComputedTraitConfig[] = [],
): CompiledRules {
  const rules = cfg.identifiers;
  const isBlocked = blockedMatcher(cfg.blocked);
  const byType = new Map(rules.map((r) => [r.type, r]));
  const priority = new Map(rules.map((r, i) => [r.type, i]));
  const normalize = (type: string, value: string) => {
    const rule = byType.get(type);
    if (rule === undefined) return undefined;
    const v = normalizeWith(rule, value);
    return v === undefined || isBlocked(v) ? undefined : v;
  };
  const overLimit = (ids: readonly (Ident & { addedAtMs?: number })[], nowMs: number) => {
    const counts = new Map<string, Set<string>>();
    for (const id of ids) {
      const window = byType.get(id.type)?.limitWindow;
      if (window !== undefined && id.addedAtMs !== undefined && id.addedAtMs < nowMs - window) continue;
      counts.set(id.type, (counts.get(id.type) ?? new Set()).add(id.value));
    }
    return rules.some((r) => r.limit !== undefined && (counts.get(r.type)?.size ?? 0) > r.limit);
  };
  return {
    computed,
    types: rules.map((r) => r.type),
    normalize,
    identifiersOf(e) {
      const view = eventView(e);
      const out: Ident[] = [];
      for (const r of rules) {
        const raw = read(view, r.field);
        if (raw === undefined) continue;
        const v = normalize(r.type, raw);
        if (v !== undefined && !out.some((x) => x.type === r.type && x.value === v))
          out.push({ type: r.type, value: v });
      }
      return out;
    },
    fits(ids, nowMs = Date.now()) {
      return !overLimit(ids, nowMs);
    },
    withinLimits(ids, existing, nowMs = Date.now()) {
      const kept = [...ids].sort((a, b) => (priority.get(a.type) ?? 99) - (priority.get(b.type) ?? 99));
      const dropped: Ident[] = [];
      while (kept.length > 1 && overLimit([...existing(kept), ...kept], nowMs)) dropped.push(kept.pop()!);
      return { kept, dropped };
    },
  };
}
