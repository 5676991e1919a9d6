/**
 * The profile store on MongoDB (the production store on Kubernetes), with the
 * same contract as the JetStream KV adapter: compare-and-set on a revision
 * number kept beside each document.
 */
import { MongoClient, MongoServerError, type Collection, type Db } from "mongodb";
import { indexKey, WriteConflict, type IndexTarget, type ProfileStore, type Versioned } from "./store.js";
import type { Ident, ProfileRecord } from "./profile-record.js";

interface ProfileDoc {
  _id: string;
  workspace: string;
  profileId: string;
  rev: number;
  /**
   * The record as JSON text: trait and property names come from customers' events, and MongoDB
   * gives `$`-prefixed and dotted field names meanings (or refuses them) in updates.
   */
  json?: string;
  /** Records written before `json` (read, never written). */
  record?: ProfileRecord;
}

function recordOf(doc: ProfileDoc): ProfileRecord {
  if (doc.json !== undefined) return JSON.parse(doc.json) as ProfileRecord;
  if (doc.record !== undefined) return doc.record;
  throw new Error(`profile document ${doc._id} has neither json nor record`);
}

interface IdentifierDoc {
  _id: string;
  workspace: string;
  rev: number;
  target: IndexTarget;
}

const DUPLICATE_KEY = 11000;

/**
 * The first revision of a new document. Not 1: after a delete and a re-create, a
 * revision some cache still holds must not match again (KV revisions never repeat either).
 */
function firstRevision(): number {
  return Date.now() * 1000 + Math.floor(Math.random() * 1000);
}

function isDuplicateKey(e: unknown): boolean {
  return e instanceof MongoServerError && e.code === DUPLICATE_KEY;
}

export class MongoProfileStore implements ProfileStore {
  private constructor(
    private readonly client: MongoClient,
    private readonly db: Db,
    private readonly profiles: Collection<ProfileDoc>,
    private readonly identifiers: Collection<IdentifierDoc>,
  ) {}

  /** Connects and creates the indexes (idempotent). */
  static async open(uri: string, dbName: string): Promise<MongoProfileStore> {
    const client = new MongoClient(uri, { appName: "kairos-identity" });
    await client.connect();
    const db = client.db(dbName);
    const profiles = db.collection<ProfileDoc>("profiles");
    const identifiers = db.collection<IdentifierDoc>("identifiers");
    await profiles.createIndex({ workspace: 1, profileId: 1 }, { unique: true, name: "workspace_profile" });
    await identifiers.createIndex({ workspace: 1, "target.profileId": 1 }, { name: "workspace_target" });
    return new MongoProfileStore(client, db, profiles, identifiers);
  }

  async getProfile(workspace: string, profileId: string): Promise<Versioned<ProfileRecord> | undefined> {
    const doc = await this.profiles.findOne({ _id: `${workspace}.${profileId}` });
    return doc === null ? undefined : { value: recordOf(doc), revision: doc.rev };
  }

  async putProfile(p: ProfileRecord, revision: number): Promise<number> {
    const _id = `${p.workspace}.${p.profileId}`;
    if (revision === 0) {
      try {
        const rev = firstRevision();
        await this.profiles.insertOne({
          _id,
          workspace: p.workspace,
          profileId: p.profileId,
          rev,
          json: JSON.stringify(p),
        });
        return rev;
      } catch (e) {
        if (isDuplicateKey(e)) throw new WriteConflict(`profile ${p.profileId}`);
        throw e;
      }
    }
    const res = await this.profiles.updateOne(
      { _id, rev: revision },
      { $set: { json: JSON.stringify(p) }, $unset: { record: "" }, $inc: { rev: 1 } },
    );
    if (res.matchedCount === 0) throw new WriteConflict(`profile ${p.profileId}`);
    return revision + 1;
  }

  async deleteProfile(workspace: string, profileId: string): Promise<void> {
    await this.profiles.deleteOne({ _id: `${workspace}.${profileId}` });
  }

  async lookup(workspace: string, id: Ident): Promise<Versioned<IndexTarget> | undefined> {
    const doc = await this.identifiers.findOne({ _id: indexKey(workspace, id) });
    return doc === null ? undefined : { value: doc.target, revision: doc.rev };
  }

  async link(workspace: string, id: Ident, target: IndexTarget, revision: number): Promise<number> {
    const _id = indexKey(workspace, id);
    if (revision === 0) {
      try {
        const rev = firstRevision();
        await this.identifiers.insertOne({ _id, workspace, rev, target });
        return rev;
      } catch (e) {
        if (isDuplicateKey(e)) throw new WriteConflict(`identifier ${id.type}`);
        throw e;
      }
    }
    const res = await this.identifiers.updateOne(
      { _id, rev: revision },
      { $set: { target }, $inc: { rev: 1 } },
    );
    if (res.matchedCount === 0) throw new WriteConflict(`identifier ${id.type}`);
    return revision + 1;
  }

  async unlink(workspace: string, id: Ident): Promise<void> {
    await this.identifiers.deleteOne({ _id: indexKey(workspace, id) });
  }

  async ping(): Promise<boolean> {
    await this.db.command({ ping: 1 });
    return true;
  }

  /** Drops the whole database (contract tests clean up with it). */
  async dropDatabase(): Promise<void> {
    await this.db.dropDatabase();
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
