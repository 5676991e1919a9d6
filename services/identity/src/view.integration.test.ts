/**
 * Identity's lookup view against a real nats-server: it replays what is stored, follows writes
 * and deletions, answers from memory, and leaves to the store whatever it does not hold.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { createLogger } from "@kairos/kit";
import { NatsServer, waitFor } from "@kairos/testkit";
import { KvProfileStore } from "./store.js";
import { newProfile, type Ident } from "./profile-record.js";
import { ProfileReadView } from "./view.js";

let server: NatsServer;
let nc: NatsConnection;
let store: KvProfileStore;
/** Another replica's store: its writes reach the view only through the watch. */
let other: KvProfileStore;
const logger = createLogger({ service: "view-test", level: "silent" });

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connect({ servers: server.url });
  store = await KvProfileStore.open(nc);
  other = await KvProfileStore.open(nc);
});
afterAll(async () => {
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

async function stored(ws: string, id: string, plan: string, by = other) {
  const p = newProfile(ws, id, Date.now());
  const email: Ident = { type: "email", value: `${id}@example.org` };
  p.identifiers = [email];
  p.traits = { plan };
  const rev = await by.putProfile(p, 0);
  await by.link(ws, email, { profileId: id }, 0);
  return { p, email, rev };
}

describe("ProfileReadView", () => {
  it("replays the store, answers from memory, follows updates and deletions", async () => {
    const a = await stored("ws-a", "p-a", "free");
    const view = await ProfileReadView.start(nc, store, { maxEntries: 1000, logger });
    try {
      await waitFor(() => view.ready);
      expect(view.stats()).toMatchObject({ profiles: 1, identifiers: 1 });
      expect(view.stats().bytes).toBeGreaterThan(JSON.stringify(a.p).length);
      const hits = view.hits;
      expect((await view.lookup("ws-a", a.email))?.value).toEqual({ profileId: "p-a" });
      expect((await view.getProfile("ws-a", "p-a"))?.value.traits).toEqual({ plan: "free" });
      expect(view.hits).toBe(hits + 2);

      // Another replica's write arrives through the watch.
      a.p.traits = { plan: "gold" };
      a.p.version += 1;
      const rev = await other.putProfile(a.p, a.rev);
      await waitFor(async () => (await view.getProfile("ws-a", "p-a"))?.revision === rev);
      expect((await view.getProfile("ws-a", "p-a"))?.value.traits).toEqual({ plan: "gold" });

      // This process's own write is there as soon as it succeeded.
      a.p.traits = { plan: "platinum" };
      a.p.version += 1;
      const own = await store.putProfile(a.p, rev);
      expect(await view.getProfile("ws-a", "p-a")).toMatchObject({
        revision: own,
        value: { traits: { plan: "platinum" } },
      });
      await store.deleteProfile("ws-a", "p-a");
      await store.unlink("ws-a", a.email);
      // Gone at once (read from the store until the watch brings the deletion, then not held).
      expect(await view.getProfile("ws-a", "p-a")).toBeUndefined();
      expect(await view.lookup("ws-a", a.email)).toBeUndefined();
      await waitFor(() => view.stats().profiles === 0 && view.stats().identifiers === 0);
      expect(view.stats().bytes).toBe(0);
      expect(await view.getProfile("ws-a", "p-a")).toBeUndefined();
    } finally {
      view.stop();
    }
  });

  it("reads the store for what it does not hold: not arrived yet, or beyond its bound", async () => {
    const view = await ProfileReadView.start(nc, store, { maxEntries: 2, logger });
    try {
      await waitFor(() => view.ready);
      const b = await stored("ws-b", "p-b", "free");
      const c = await stored("ws-b", "p-c", "gold");
      // Whether or not the watch has brought them yet, both are found.
      expect((await view.getProfile("ws-b", "p-b"))?.value.traits).toEqual({ plan: "free" });
      expect((await view.lookup("ws-b", c.email))?.value).toEqual({ profileId: "p-c" });
      await waitFor(() => view.stats().profiles + view.stats().identifiers === 2);
      // Full: two of the four entries are held, the other two are read from the store every time.
      const misses = view.misses;
      expect((await view.getProfile("ws-b", "p-b"))?.value.traits).toEqual({ plan: "free" });
      expect((await view.getProfile("ws-b", "p-c"))?.value.traits).toEqual({ plan: "gold" });
      expect((await view.lookup("ws-b", b.email))?.value).toEqual({ profileId: "p-b" });
      expect((await view.lookup("ws-b", c.email))?.value).toEqual({ profileId: "p-c" });
      expect(view.misses).toBe(misses + 2);
    } finally {
      view.stop();
    }
  });

  it("holds nothing past its memory bound, and still answers from the store", async () => {
    const d = await stored("ws-c", "p-d", "gold");
    const view = await ProfileReadView.start(nc, store, { maxEntries: 1000, maxBytes: 100, logger });
    try {
      await waitFor(() => view.ready);
      expect(view.stats()).toMatchObject({ profiles: 0, bytes: 0 });
      expect((await view.getProfile("ws-c", "p-d"))?.value.traits).toEqual({ plan: "gold" });
      expect((await view.lookup("ws-c", d.email))?.value).toEqual({ profileId: "p-d" });
    } finally {
      view.stop();
    }
  });
});
