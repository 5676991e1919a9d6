/**
 * Identity resolution: finds (or creates) the one profile an event belongs to,
 * merging the profiles its identifiers point at, applies the event once, and
 * keeps the identifier index pointing at the survivor. Safe to run again for
 * the same event (redelivery after a crash): it is recognised and not re-applied.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { EventType, type Event } from "@kairos/contracts";
import {
  applyEvent,
  eventTimeMs,
  appliedChange,
  identifiersWithTimes,
  identKey,
  sameIdent,
  mergeInto,
  newProfile,
  pickSurvivor,
  profileIdFor,
  standIn,
  tombstone,
  type Ident,
  type ProfileRecord,
} from "./profile-record.js";
import { WriteConflict, type IndexTarget, type ProfileStore, type Versioned } from "./store.js";
import { compileRules, type CompiledRules } from "./identity-rules.js";
import { applyComputed } from "./computed.js";

const defaultRules = compileRules();

/** An event that can never be resolved (no identifier at all). */
export class Unresolvable extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Unresolvable";
  }
}

export type Resolution =
  | {
      kind: "applied" | "duplicate";
      profile: ProfileRecord;
      /**
       * The change this event produced: the survivor's new version, or for a redelivery the
       * (profile, version) it produced the first time, so its re-publish carries the same id.
       */
      changeId: { profileId: string; version: number };
      changedTraits: JsonObject;
      /** Profiles merged into the survivor by this event. */
      merged: string[];
      /**
       * Set when a redelivered event (`duplicate`) merged profiles all the same (it finished a
       * merge that stopped): the survivor's new version, a change of its own to publish after
       * the event's change is re-published.
       */
      mergedAs?: { profileId: string; version: number };
    }
  | { kind: "suppressed"; profileIds: string[] };

const MAX_ATTEMPTS = 12;
/** How long a claim on an identifier may wait for its profile to be written before it is taken over. */
const STALE_CLAIM_MS = 5_000;
const MAX_MERGE_HOPS = 16;

/** Where an identifier's index entry leads. */
interface Lead {
  /** The live profile holding it, and retired profiles on the way it does not hold yet. */
  profile?: Versioned<ProfileRecord>;
  unabsorbed?: Unabsorbed[];
  /** Claimed for a profile id not written (yet). */
  pending?: string;
  /** Claimed for a profile that does not hold it (`on`: that profile, when the entry names it). */
  claimedFor?: string;
  on?: Versioned<ProfileRecord>;
  claimedAt?: number;
}

/** Whether the profile, or a retired one on the way to it, holds the identifier. */
function holds(id: Ident, p: ProfileRecord, unabsorbed: readonly Unabsorbed[]): boolean {
  const has = (r: ProfileRecord) => r.identifiers.some((x) => sameIdent(x, id));
  return has(p) || unabsorbed.some((u) => has(u.tomb.value));
}

/** An index entry this resolution wrote: the revision it left. */
interface Claim {
  id: Ident;
  revision: number;
}

/** A retired profile whose survivor (`into`, as read) does not hold it yet. */
interface Unabsorbed {
  tomb: Versioned<ProfileRecord>;
  into: Versioned<ProfileRecord>;
}

export class Resolver {
  conflicts = 0;

  constructor(
    private readonly store: ProfileStore,
    private readonly clock: () => number = Date.now,
    private readonly rulesFor: (workspace: string) => CompiledRules = () => defaultRules,
    /** Told when identifiers were dropped from an event to keep a profile within its limits. */
    private readonly onDropped: (event: Event, dropped: Ident[]) => void = () => undefined,
    private readonly opts: {
      /** The store itself, past any cache (to check claims); default the store given. */
      fresh?: ProfileStore;
      /** How long a claim waits for its profile before it is taken over (default 5 s). */
      staleClaimMs?: number;
    } = {},
  ) {}

  async resolve(event: Event): Promise<Resolution> {
    const rules = this.rulesFor(event.workspace);
    const ids = rules.identifiersOf(event);
    if (ids.length === 0) {
      throw new Unresolvable(`the event has no usable identifier (${rules.types.join(", ")})`);
    }
    // New profiles an attempt of this resolution claimed identifiers for (and may have written):
    // a later attempt joins them to what the event's identifiers lead to.
    const ownClaims = new Set<string>();
    // Index entries this resolution claimed or released, with the revision it left each at: such
    // an entry is its own claim (not waited for) until another writer writes it.
    const ownLinks = new Map<string, number>();
    // Profiles an attempt of this resolution wrote the event onto (before a later step failed).
    const writtenTo = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.attempt(event, ids, attempt, ownClaims, ownLinks, writtenTo);
      } catch (e) {
        if (!(e instanceof WriteConflict) || attempt >= MAX_ATTEMPTS) throw e;
        this.conflicts++;
        // Let the other writer finish: 1, 2, 4 … 32 ms, with jitter.
        await new Promise((r) => setTimeout(r, Math.min(32, 2 ** (attempt - 1)) * (0.5 + Math.random())));
      }
    }
  }

  /** Follows merge tombstones to the live profile. */
  async live(workspace: string, profileId: string): Promise<Versioned<ProfileRecord> | undefined> {
    return (await this.chase(workspace, profileId)).profile;
  }

  /**
   * Follows merge tombstones to the live profile, and returns the tombstones on the way whose
   * content the live profile does not hold yet: a merge retires its losers before it writes the
   * survivor, so one stopped (or beaten) in between leaves them for the next resolution. `dead`:
   * the tombstones on the way when the chain ends at no profile (the survivor was erased, or a
   * cache still held it as live when it was retired into it).
   */
  private async chase(
    workspace: string,
    profileId: string,
    read: (ws: string, id: string) => Promise<Versioned<ProfileRecord> | undefined> = (ws, id) =>
      this.store.getProfile(ws, id),
  ): Promise<{
    profile?: Versioned<ProfileRecord>;
    unabsorbed: Unabsorbed[];
    dead: Versioned<ProfileRecord>[];
    /** The chain ends at a stand-in: a profile never written, that never will be. */
    standIn?: true;
  }> {
    const passed: Versioned<ProfileRecord>[] = [];
    let id = profileId;
    for (let hop = 0; hop < MAX_MERGE_HOPS; hop++) {
      const p = await read(workspace, id);
      if (p === undefined) return { unabsorbed: [], dead: passed };
      if (p.value.neverWritten === true) return { unabsorbed: [], dead: passed, standIn: true };
      if (p.value.mergedInto === undefined) {
        const held = new Set(p.value.mergedFrom);
        const unabsorbed = passed
          // Nor by a later tombstone on the way, which brings it along (two stopped merges in a row).
          .filter((t, i) => !passed.slice(i + 1).some((u) => u.value.mergedFrom.includes(t.value.profileId)))
          .filter((t) => !held.has(t.value.profileId))
          .map((tomb) => ({ tomb, into: p }));
        return { profile: p, unabsorbed, dead: [] };
      }
      passed.push(p);
      id = p.value.mergedInto;
    }
    throw new Error(`profile ${profileId}: merge chain longer than ${MAX_MERGE_HOPS}`);
  }

  /**
   * Brings a retired profile back (its merge never completed), then the resolution starts again
   * and finds it live. The profile its chain led to is written first, compare-and-set on the
   * revision read through the chain (and without the profile in `merging`): should the merge's own
   * writer have written it meanwhile, holding the profile, this fails instead of bringing back a
   * profile already merged.
   */
  private async restore(
    t: Versioned<ProfileRecord>,
    into: Versioned<ProfileRecord> | undefined,
    why: string,
  ): Promise<never> {
    if (into !== undefined) {
      // Read again (the copy read may have been changed by this attempt), and compare-and-set at
      // the revision read: a stale cached copy fails the write and is dropped from the cache.
      const current = await this.store.getProfile(into.value.workspace, into.value.profileId);
      if (current?.revision !== into.revision) throw new WriteConflict(`profile ${into.value.profileId}`);
      const merging = (current.value.merging ?? []).filter((id) => id !== t.value.profileId);
      const { merging: _, ...rest } = current.value;
      await this.store.putProfile(merging.length > 0 ? { ...rest, merging } : rest, into.revision);
    }
    const { mergedInto: _, ...content } = t.value;
    await this.store.putProfile(
      { ...content, version: content.version + 1, updatedAtMs: this.clock() },
      t.revision,
    );
    throw new WriteConflict(`profile ${t.value.profileId} (restored: ${why})`);
  }

  /**
   * For a deletion: the live profile an identifier points at, and the retired profiles it does not
   * hold yet (a merge stopped before writing it), found on the way from the identifier or named in
   * its `merging`, or left on the way to a profile already erased (a deletion that stopped): to be
   * erased with it. A suppressed identifier still names the profile a stopped deletion was erasing.
   */
  async findForErasure(
    workspace: string,
    id: Ident | { type: "profile_id"; value: string },
  ): Promise<{ profile?: Versioned<ProfileRecord>; retired: Versioned<ProfileRecord>[] }> {
    let start = id.value;
    /** Found through an index entry that may be only a claim (see `find`). */
    let claimable = false;
    if (id.type !== "profile_id") {
      const entry = await this.store.lookup(workspace, id);
      if (entry === undefined) return { retired: [] };
      if ("suppressed" in entry.value) {
        if (entry.value.erasing === undefined) return { retired: [] };
        start = entry.value.erasing;
      } else {
        start = entry.value.profileId;
        claimable = true;
      }
    }
    const { profile, unabsorbed, dead } = await this.chase(workspace, start);
    if (profile === undefined) return { retired: dead };
    if (claimable && !holds(id, profile.value, unabsorbed)) return { retired: [] };
    const p = profile.value;
    const retired = unabsorbed.map((u) => u.tomb);
    const chain = new Set([p.profileId, ...p.mergedFrom]);
    for (const t of p.merging ?? []) {
      if (p.mergedFrom.includes(t) || retired.some((r) => r.value.profileId === t)) continue;
      const r = await this.store.getProfile(workspace, t);
      if (r?.value.mergedInto !== undefined && chain.has(r.value.mergedInto)) retired.push(r);
    }
    return { profile, retired };
  }

  /** The live profile an identifier points at. */
  async find(
    workspace: string,
    id: Ident | { type: "profile_id"; value: string },
  ): Promise<Versioned<ProfileRecord> | undefined> {
    if (id.type === "profile_id") return this.live(workspace, id.value);
    const target = await this.store.lookup(workspace, id);
    if (target === undefined || !("profileId" in target.value)) return undefined;
    const { profile, unabsorbed } = await this.chase(workspace, target.value.profileId);
    // An entry leading to a profile that does not hold the identifier is a claim, not membership
    // (a writer's, not written yet, or one left by a write that lost).
    return profile !== undefined && holds(id, profile.value, unabsorbed) ? profile : undefined;
  }

  private async attempt(
    event: Event,
    eventIds: readonly Ident[],
    attemptNo: number,
    ownClaims: Set<string>,
    ownLinks: Map<string, number>,
    writtenTo: Set<string>,
  ): Promise<Resolution> {
    const ids = [...eventIds];
    const ws = event.workspace;
    const now = this.clock();
    // An alias links the previous id, whichever kind it was.
    const lookupIds: Ident[] = [...ids];
    if (event.type === EventType.ALIAS && event.previousId !== "") {
      lookupIds.push(
        { type: "user_id", value: event.previousId },
        { type: "anonymous_id", value: event.previousId },
      );
    }
    const entries = await Promise.all(lookupIds.map((id) => this.store.lookup(ws, id)));
    const suppressed = entries.filter((e) => e !== undefined && "suppressed" in e.value);
    if (suppressed.length > 0) return { kind: "suppressed", profileIds: [] };

    // The live profile (or the claimed-but-unwritten profile id) behind each looked-up identifier,
    // and retired profiles on the way that it does not hold yet (a merge stopped part-way).
    // Each profile is read once: the limits are checked on the revision the writes compare-and-set.
    const reads = new Map<string, Promise<Versioned<ProfileRecord> | undefined>>();
    const readOnce = (w: string, id: string) => {
      let r = reads.get(id);
      if (r === undefined) reads.set(id, (r = this.store.getProfile(w, id)));
      return r;
    };
    const live = await Promise.all(
      entries.map(async (e, i): Promise<Lead> => {
        if (e === undefined || !("profileId" in e.value)) return {};
        const { profile: p, unabsorbed, dead, standIn } = await this.chase(ws, e.value.profileId, readOnce);
        // A deletion is erasing it (or the profile it was retired into): waited for.
        if ([p, ...unabsorbed.map((u) => u.tomb), ...dead].some((x) => x?.value.erasing !== undefined))
          throw new WriteConflict(`profile ${e.value.profileId} (being erased)`);
        // Retired into a profile that is gone: the merge never completed; the profile comes back
        // (one at a time: the resolution starts again after each).
        const [gone] = dead;
        if (gone !== undefined) await this.restore(gone, undefined, "its survivor is gone");
        // Claimed for a profile whose claims were taken over once (a stand-in holds its id): no
        // write is coming for it, so the claim is anyone's, as a released one.
        if (standIn === true) return { claimedFor: e.value.profileId, claimedAt: 0 };
        if (p === undefined) return { pending: e.value.profileId, claimedAt: e.value.claimedAt ?? 0 };
        // Leading to a profile that does not hold it (nor does a retired one on the way): claimed
        // for it by a writer that has not written it yet (or never will: its write lost, perhaps
        // to a merge that retired the profile since). Not a member.
        if (!holds(lookupIds[i]!, p.value, unabsorbed)) {
          // Not written back, so no compare-and-set would catch a stale cached copy: the
          // profile is read from the store itself; if the cache was behind, it starts again.
          const fresh = this.opts.fresh;
          if (fresh !== undefined && fresh !== this.store) {
            const f = await this.chase(ws, e.value.profileId, (w, x) => fresh.getProfile(w, x));
            if (f.profile?.revision !== p.revision || f.unabsorbed.length !== unabsorbed.length) {
              for (const x of [
                e.value.profileId,
                p.value.profileId,
                ...unabsorbed.map((u) => u.tomb.value.profileId),
              ])
                this.store.forgetProfile?.(ws, x);
              throw new WriteConflict(`profile ${p.value.profileId} (cached copy behind)`);
            }
          }
          const straight = p.value.profileId === e.value.profileId;
          return {
            claimedFor: e.value.profileId,
            claimedAt: e.value.claimedAt ?? 0,
            ...(straight ? { on: p } : {}),
          };
        }
        return { profile: p, unabsorbed };
      }),
    );
    const at = (id: Ident) => live[lookupIds.findIndex((x) => x.type === id.type && x.value === id.value)];

    // Per-type limits: an event that would push the profile past one does not merge; its
    // lowest-priority identifiers are dropped until the rest fit.
    const existing = (kept: readonly Ident[]) => {
      const seen = new Set<string>();
      const out: (Ident & { addedAtMs?: number })[] = [];
      for (const id of kept) {
        const l = at(id);
        // With the profiles a stopped merge retired on the way, which this one would fold in.
        for (const p of [l?.profile, ...(l?.unabsorbed ?? []).map((u) => u.tomb)]) {
          if (p === undefined || seen.has(p.value.profileId)) continue;
          seen.add(p.value.profileId);
          out.push(...identifiersWithTimes(p.value));
        }
      }
      return out;
    };
    const { kept, dropped } = this.rulesFor(ws).withinLimits(ids, existing, now);
    if (dropped.length > 0 && attemptNo === 1) this.onDropped(event, dropped);
    ids.splice(0, ids.length, ...kept);

    const found = new Map<string, Versioned<ProfileRecord>>();
    // An index entry whose profile is not written yet (another attempt is mid-way, or died
    // between linking and writing): adopt its id rather than invent a competing one.
    let adopted: string | undefined;
    /** Other writers' claims for profiles not written yet, made less than the takeover time ago. */
    const freshClaims = new Set<string>();
    // An alias's previous id joins what it leads to only within the limits too.
    const aliasIds = lookupIds.slice(eventIds.length);
    const aliasFits =
      aliasIds.length === 0 || this.rulesFor(ws).fits([...existing([...kept, ...aliasIds]), ...kept], now);
    if (!aliasFits && attemptNo === 1) this.onDropped(event, aliasIds);
    const considered = aliasFits ? [...kept, ...aliasIds] : [...kept];
    const unabsorbed = new Map<string, Unabsorbed>();
    /** Claims for profiles not written (this resolution's own, or stale ones: fresh ones are waited for). */
    const pending = new Set<string>();
    /** Claims on existing profiles this resolution takes over (its own, or stale ones). */
    const claimsTaken = new Set<string>();
    let waitForClaim = false;
    /** Whether the identifier's entry is as this resolution last wrote it (its own claim). */
    const ownEntry = (i: number) => {
      const linked = ownLinks.get(identKey(lookupIds[i]!));
      return linked !== undefined && linked === entries[i]?.revision;
    };
    for (const id of considered) {
      const l = at(id);
      const own = ownEntry(lookupIds.findIndex((x) => sameIdent(x, id)));
      if (l?.claimedFor !== undefined) {
        const stale = now - (l.claimedAt ?? 0) >= (this.opts.staleClaimMs ?? STALE_CLAIM_MS);
        if (own || stale) claimsTaken.add(l.claimedFor);
        else waitForClaim = true;
      }
      for (const u of l?.unabsorbed ?? []) unabsorbed.set(u.tomb.value.profileId, u);
      if (l?.profile !== undefined) found.set(l.profile.value.profileId, l.profile);
      else if (l?.pending !== undefined) {
        adopted ??= l.pending;
        pending.add(l.pending);
        if (!own && now - (l.claimedAt ?? 0) < (this.opts.staleClaimMs ?? STALE_CLAIM_MS))
          freshClaims.add(l.pending);
      }
    }
    if (event.type === EventType.ALIAS && event.previousId !== "") {
      // Found: it leads to a profile that holds it (an entry that is only a claim does not count).
      const aliasFound = live.slice(eventIds.length).some((l) => l.profile !== undefined);
      const previous = { type: "anonymous_id", value: event.previousId };
      // (Once: an alias whose previous id is its own anonymous id would claim it twice at once and
      // conflict with itself on every attempt.)
      if (!aliasFound && aliasFits && !ids.some((i) => sameIdent(i, previous))) ids.push(previous);
    }
    if (waitForClaim || (freshClaims.size > 0 && (found.size > 0 || pending.size > 1))) {
      // Another writer claimed one of these identifiers and is about to write its profile.
      // Going ahead now would leave that profile split off: wait for it (this attempt is
      // retried with backoff, then the message is redelivered), then merge it. A claim older
      // than STALE_CLAIM_MS is a writer that died between claiming and writing: taken over.
      // (With nothing else found and that claim alone, this event joins it: its id is adopted.)
      // A cached entry may be one the profile's erasure removed: the retry reads the store.
      for (const id of considered) if (at(id)?.pending !== undefined) this.store.forget?.(ws, id);
      throw new WriteConflict(`profile ${adopted ?? "claimed"} (being written)`);
    }
    let stays = false;
    for (const w of writtenTo) {
      // An earlier attempt wrote the event onto this profile, then a later step failed: the event
      // stays there, whatever its identifiers lead to now (another writer may have moved one, or
      // the limits now drop the one that led there). It is not applied a second time elsewhere.
      const p = await this.live(ws, w);
      if (p === undefined || appliedChange(p.value, event.messageId) === undefined) continue;
      found.clear();
      found.set(p.value.profileId, p);
      unabsorbed.clear();
      stays = true;
      break;
    }
    for (const p of [...found.values()]) {
      // A redelivery of an event whose merge an unmerge split back apart since: not made again.
      if (appliedChange(p.value, event.messageId) === undefined) continue;
      for (const u of p.value.unmerged ?? []) if (u.eventId === event.messageId) found.delete(u.profileId);
    }
    for (const own of stays ? [] : ownClaims) {
      // A profile an earlier attempt of this resolution created, whose claim another writer then
      // took over (`checkClaims`): it holds this event, and its identifiers may lead elsewhere now.
      // It joins what they lead to, when it holds nothing but identifiers this event still keeps.
      if (found.has(own)) continue;
      const p = await this.live(ws, own);
      if (p === undefined || found.has(p.value.profileId)) continue;
      if (p.value.identifiers.every((i) => kept.some((k) => k.type === i.type && k.value === i.value)))
        found.set(p.value.profileId, p);
    }
    let newId = adopted ?? profileIdFor(ws, ids[0]!);
    if (found.size === 0 && adopted === undefined) {
      // Deterministic id: a redelivery after a crash finds the profile it created. That id may be
      // another customer's profile (an event of theirs adopted this identifier's claim, and then
      // the limits kept the identifier from it): then this event's profile gets an id of its own.
      for (const id of [newId, profileIdFor(ws, ids[0]!, event.messageId)]) {
        newId = id;
        const there = await this.store.getProfile(ws, id);
        if (there === undefined) break; // free (the common case: one read)
        const p = there.value.mergedInto === undefined ? there : await this.live(ws, id);
        if (p !== undefined && appliedChange(p.value, event.messageId) !== undefined) {
          found.set(p.value.profileId, p);
          break;
        }
      }
    } else if (found.size === 0) {
      // Joining another writer's claim: should its profile be there by now, the limits have not
      // seen it: the resolution starts again and finds it through the index.
      const p = await this.live(ws, newId);
      if (p !== undefined) {
        for (const id of considered) this.store.forget?.(ws, id);
        throw new WriteConflict(`profile ${newId} (written meanwhile)`);
      }
    }

    const erasing = [...found.values()].find((p) => p.value.erasing !== undefined);
    if (erasing !== undefined) throw new WriteConflict(`profile ${erasing.value.profileId} (being erased)`);
    let survivor: Versioned<ProfileRecord> | undefined;
    for (const p of found.values()) {
      survivor =
        survivor === undefined ? p : pickSurvivor(survivor.value, p.value)[0] === p.value ? p : survivor;
    }
    const s = survivor ?? { value: newProfile(ws, newId, now), revision: 0 };
    const losers = [...found.values()].filter((p) => p !== s);
    // As stored, before this resolution changes it (the merge intent is written on it).
    const stored = losers.length > 0 ? (JSON.parse(JSON.stringify(s.value)) as ProfileRecord) : undefined;
    const record = s.value;
    for (const l of losers) {
      // Why: the event's identifiers that led to the merged profile.
      const linkedBy = considered.filter((id) => at(id)?.profile?.value.profileId === l.value.profileId);
      mergeInto(record, l.value, { atMs: now, eventId: event.messageId, linkedBy });
    }
    // Retired by a merge that stopped before writing its survivor: folded in here, once.
    // Unless the survivor has changed since so that the two no longer fit the limits: then the
    // merge is undone (it never completed) and the resolution starts again.
    const folded: string[] = [];
    for (const { tomb: t, into } of unabsorbed.values()) {
      if (record.mergedFrom.includes(t.value.profileId)) continue;
      const both = [...identifiersWithTimes(record), ...identifiersWithTimes(t.value)];
      if (!this.rulesFor(ws).fits(both, now)) await this.restore(t, into, "no longer within the limits");
      const { mergedInto: _, ...content } = t.value;
      mergeInto(record, content, { atMs: now, eventId: event.messageId });
      folded.push(t.value.profileId);
    }
    // Retirements still in flight (named by this profile or by those merged into it), until merged.
    const merging = [
      ...new Set([...(record.merging ?? []), ...losers.flatMap((l) => l.value.merging ?? [])]),
    ].filter((id) => !record.mergedFrom.includes(id));
    if (merging.length > 0) record.merging = merging;
    else delete record.merging;

    const already = appliedChange(record, event.messageId);
    let changedTraits: JsonObject = {};
    const mergedNow = losers.length > 0 || folded.length > 0;
    if (already !== undefined && mergedNow) {
      record.version += 1;
      record.updatedAtMs = now;
    }
    if (already === undefined) {
      changedTraits = applyEvent(record, event, ids, now);
      const computed = this.rulesFor(ws).computed;
      if (computed.length > 0)
        applyComputed((record.computed ??= {}), computed, event, eventTimeMs(event, now), now);
    }
    // Order matters. A conflict at any step retries from the start, and a writer may stop after
    // any write (a crash, or another replica's write): every identifier still leads to what it
    // brought, and the next resolution through it finishes the work.
    // A claim taken over from another existing profile (it does not hold the identifier): that
    // profile is written again first, unchanged, compare-and-set on the revision read, so that the
    // writer that made the claim, should it only have stalled, fails its write of it and tries again.
    const claimedOn = new Map<string, Versioned<ProfileRecord>>();
    for (const l of live) {
      if (l.on === undefined) continue;
      const x = l.on.value.profileId;
      if (claimsTaken.has(x) && !found.has(x) && x !== record.profileId) claimedOn.set(x, l.on);
    }
    for (const x of claimedOn.values()) await this.store.putProfile(x.value, x.revision);
    // A claim taken over for a profile never written (its writer presumed dead): a stand-in is
    // created at that profile's id, so that the writer, should it only have stalled, fails to
    // create it and tries again (rather than leave the identifiers on two profiles and the event
    // applied twice). Created only if absent: a writer that has written it meanwhile makes this
    // resolution start again and find it. It leads nowhere (a lookup of that id finds nothing; an
    // entry still naming it is a claim anyone may take), so an id it takes that was a profile
    // erased since stays erased. Written where this profile exists (an existing one before its
    // claims are taken, a new one once written).
    const standIns = async () => {
      for (const x of pending) {
        if (x !== record.profileId) await this.store.putProfile(standIn(ws, x, now), 0);
      }
    };
    if (s.revision !== 0) await standIns();
    const claimedAt = this.clock();
    if (s.revision === 0) {
      // A new profile: its identifiers are claimed first, so that two writers starting profiles
      // for one customer meet on the claim rather than make two; then it is written.
      // Entries that lead here already are written again, compare-and-set: another writer taking
      // over the same claim meets this one there, and one whose claim was adopted, should it only
      // have been slow, finds them changed rather than repointing them elsewhere.
      // Should the profile not be written, the claims are released.
      ownClaims.add(record.profileId);
      const made: Claim[] = [];
      try {
        await this.pointIndex(ws, record, lookupIds, entries, claimedAt, undefined, dropped, made);
        await this.store.putProfile(record, 0);
      } catch (e) {
        await this.release(ws, record.profileId, made, ownLinks);
        throw e;
      }
      await standIns();
      // Another writer may take a claim over once it looks stale; a writer this quick gave nobody
      // the chance (half the window, for clocks that differ between replicas).
      const stale = this.opts.staleClaimMs ?? STALE_CLAIM_MS;
      if (this.clock() - claimedAt >= stale / 2) await this.checkClaims(ws, record);
    } else {
      // An existing profile. The event's new identifiers are claimed first (as for a new profile).
      // (Not for a redelivery: the profile holds what the event brought, and `pointIndex` links it.)
      const claims =
        already === undefined
          ? await this.claim(ws, record, ids, lookupIds, entries, claimedAt, ownLinks, (i) => {
              const l = live[i];
              return l?.claimedFor !== undefined || l?.pending !== undefined;
            })
          : [];
      try {
        // Then the merged profiles are retired, compare-and-set on what was read: a merge that lost
        // one to another writer retries, so no profile is merged into two. Their tombstones lead
        // here; if this writer stops before writing the survivor, the next resolution through them
        // finds the survivor without them and folds them in (`chase`).
        // The survivor first names the profiles it is about to retire, so that an erasure of it
        // finds them should this writer stop before it writes the survivor.
        let revision = s.revision;
        if (stored !== undefined) {
          const retiring = [...new Set([...(stored.merging ?? []), ...losers.map((l) => l.value.profileId)])];
          revision = await this.store.putProfile({ ...stored, merging: retiring }, revision);
        }
        for (const l of losers) {
          await this.store.putProfile(tombstone(l.value, record.profileId, now), l.revision);
        }
        if (already === undefined || losers.length > 0 || folded.length > 0)
          await this.store.putProfile(record, revision);
        if (already === undefined) writtenTo.add(record.profileId);
      } catch (e) {
        // The profile was not written: the claims are released.
        await this.release(ws, record.profileId, claims, ownLinks);
        throw e;
      }
      // Last, identifiers that lead to a merged profile are pointed here (they reach it through
      // the tombstones meanwhile). One that leads to another live profile is left to it.
      const mine = new Set([
        record.profileId,
        ...record.mergedFrom,
        ...losers.map((l) => l.value.profileId),
        ...pending,
        ...ownClaims,
        ...claimsTaken,
      ]);
      await this.pointIndex(ws, record, lookupIds, entries, claimedAt, mine, dropped);
    }

    return {
      kind: already === undefined ? "applied" : "duplicate",
      profile: record,
      changeId: already ?? { profileId: record.profileId, version: record.version },
      changedTraits,
      // Downstream joins what it keeps under these ids to the survivor (consent, memberships).
      merged: [...losers.map((l) => l.value.profileId), ...folded],
      ...(already !== undefined && mergedNow
        ? { mergedAs: { profileId: record.profileId, version: record.version } }
        : {}),
    };
  }

  /**
   * After a new profile is written: a claim of ours taken over meanwhile (we were slow, not dead,
   * and another writer pointed the identifier elsewhere) would leave this profile split off. Then
   * the resolution runs again: it finds both profiles and merges them (the event, applied here,
   * is recognised and not applied twice).
   */
  private async checkClaims(ws: string, p: ProfileRecord): Promise<void> {
    const fresh = this.opts.fresh ?? this.store;
    const entries = await Promise.all(p.identifiers.map((id) => fresh.lookup(ws, id)));
    const lost = p.identifiers.filter((_, i) => {
      const e = entries[i];
      return e === undefined || !("profileId" in e.value) || e.value.profileId !== p.profileId;
    });
    if (lost.length === 0) return;
    for (const id of lost) this.store.forget?.(ws, id);
    throw new WriteConflict(
      `claims on ${lost.map((i) => i.type).join(", ")} of new profile ${p.profileId} taken over`,
    );
  }

  /**
   * Claims for an existing profile, before it is written with them, the event's identifiers that
   * no profile holds yet: those without an index entry (created), and those whose entry is a claim
   * this resolution takes over (`taking`: its own, or a stale one), compare-and-set on the entry as
   * read. Two writers taking over one claim for two profiles meet here: one of them retries. (A
   * writer stalled past the takeover time between its claim and its profile write fails that write:
   * the profile it claimed for was rewritten, or a stand-in created at its id, by the taker.)
   */
  private async claim(
    ws: string,
    p: ProfileRecord,
    kept: readonly Ident[],
    looked: Ident[],
    entries: (Versioned<IndexTarget> | undefined)[],
    claimedAt: number,
    ownLinks: Map<string, number>,
    taking: (i: number) => boolean,
  ): Promise<Claim[]> {
    const made: Claim[] = [];
    const target = { profileId: p.profileId, claimedAt };
    const results = await Promise.allSettled(
      kept.map(async (id) => {
        const i = looked.findIndex((x) => sameIdent(x, id));
        const entry = i < 0 ? undefined : entries[i];
        if (i < 0 || (entry !== undefined && !taking(i))) return;
        const revision = await this.store.link(ws, id, target, entry?.revision ?? 0);
        entries[i] = { value: target, revision };
        ownLinks.set(identKey(id), revision);
        made.push({ id, revision });
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) {
      await this.release(ws, p.profileId, made, ownLinks);
      throw failed.reason;
    }
    return made;
  }

  /**
   * Releases claims made for a profile that was then not written (aged, compare-and-set): others
   * need not wait for a write that is not coming, and may take them over; a retry may take them again.
   */
  private async release(
    ws: string,
    profileId: string,
    made: readonly Claim[],
    ownLinks: Map<string, number>,
  ): Promise<void> {
    await Promise.all(
      made.map(async ({ id, revision }) => {
        try {
          ownLinks.set(identKey(id), await this.store.link(ws, id, { profileId, claimedAt: 0 }, revision));
        } catch {
          ownLinks.delete(identKey(id));
        }
      }),
    );
  }

  /**
   * Points the profile's identifiers at it: those without an entry, and those whose entry leads to
   * a profile in `mine` (merged into it, or a claim it takes over). One that leads to another
   * profile, or is suppressed, or that the limits dropped from this event, is left as it is.
   * `made` (a new profile, before it is written): every entry is claimed, also those that lead here
   * already (another writer's claim, adopted, or this resolution's own released one, which another
   * writer may be taking over meanwhile); the claims are added to `made`.
   */
  private async pointIndex(
    ws: string,
    p: ProfileRecord,
    looked: Ident[],
    entries: (Versioned<IndexTarget> | undefined)[],
    claimedAt: number,
    mine: ReadonlySet<string> | undefined,
    dropped: readonly Ident[] = [],
    made?: Claim[],
  ): Promise<void> {
    const target = { profileId: p.profileId, claimedAt };
    const results = await Promise.allSettled(
      p.identifiers.map(async (id) => {
        if (dropped.some((d) => sameIdent(d, id))) return;
        const i = looked.findIndex((x) => x.type === id.type && x.value === id.value);
        const entry = i >= 0 ? entries[i] : await this.store.lookup(ws, id);
        if (
          entry !== undefined &&
          "profileId" in entry.value &&
          entry.value.profileId === p.profileId &&
          made === undefined
        )
          return;
        if (
          entry !== undefined &&
          mine !== undefined &&
          !("profileId" in entry.value && mine.has(entry.value.profileId))
        )
          return;
        const revision = await this.store.link(ws, id, target, entry?.revision ?? 0);
        made?.push({ id, revision });
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }
}
