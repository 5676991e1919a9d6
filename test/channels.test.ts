/**
 * The channels built on the dispatcher SDK, against a real nats-server, real
 * local HTTP endpoints and real suppression: what each channel sends, the
 * email unsubscribe link, timeouts retried, a rate limit respected, a dead
 * email endpoint not holding the web channel back, and ad audiences following
 * segment entry, exit and deletion.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, request, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { create, fromBinary, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DispatchSchema,
  IntentSchema,
  MembershipChange,
  OutcomeSchema,
  OutcomeStatus,
  ProfileChangedSchema,
  SegmentMembershipChangedSchema,
  type Intent,
  type Outcome,
} from "@kairos/contracts";
import { loadConfig, subjects } from "@kairos/kit";
import { collect, NatsServer, waitFor } from "@kairos/testkit";
import type { DispatcherHandle } from "@kairos/dispatcher-sdk";
import * as suppression from "@kairos/suppression";
import * as web from "@kairos/dispatcher-web";
import * as email from "@kairos/dispatcher-email";
import * as contactCentre from "@kairos/dispatcher-contact-centre";
import * as ads from "@kairos/dispatcher-ads";
import * as webhook from "@kairos/dispatcher-webhook";

const WS = "shop";

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: JsonObject;
  atMs: number;
}

/** Channel endpoints on one local server: `/ok/*` answers 200 (`/ok/slow-first/*` waits 1.5 s on a key's first try), `/never/*` never answers. */
async function startEndpoints() {
  const received: Received[] = [];
  const seenKeys = new Set<string>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = req.url ?? "/";
      if (path.startsWith("/never/")) return; // holds the connection, answers nothing
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as JsonObject;
      received.push({ path, headers: req.headers, body, atMs: Date.now() });
      const key = String(req.headers["idempotency-key"]);
      const first = !seenKeys.has(key);
      seenKeys.add(key);
      const answer = () => res.writeHead(200, { "content-type": "application/json" }).end('{"id":"esp-1"}');
      if (path.startsWith("/ok/slow-first/") && first) setTimeout(answer, 1500);
      else answer();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return { server, received, base: `http://127.0.0.1:${port}` };
}

let nats: NatsServer;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let endpoints: Awaited<ReturnType<typeof startEndpoints>>;
const stops: (() => Promise<unknown>)[] = [];
let outcomes: Outcome[] = [];
let intents: Intent[] = [];
let emailHandle: DispatcherHandle;
let webHandle: DispatcherHandle;

function meshConfig(base: string): string {
  const dir = mkdtempSync(join(tmpdir(), "kairos-channels-"));
  const file = join(dir, "mesh.yaml");
  writeFileSync(
    file,
    `
workspaces:
  - id: ${WS}
    writeKeys: [{ key: shop-browser-key, source: website }]
    segments:
      - { name: big-spender, condition: "true" }
channels:
  - name: web
    mode: respond
    freshnessSlo: 100ms
    quietHours: false
  - name: email
    mode: inspire
    freshnessSlo: 2m
    settings:
      url: ${base}/ok/email
      from: "Shop <hello@shop.example>"
      templates:
        default: { subject: "Hello", text: "Hi" }
        welcome:
          subject: "Welcome, {{traits.first_name}}"
          text: "Hi {{traits.first_name}}. Unsubscribe: {{unsubscribe_url}}"
          html: "<p>Hi {{traits.first_name}}</p>"
  - name: email-down
    mode: inspire
    freshnessSlo: 2m
    concurrency: 4
    settings:
      url: ${base}/never/email
      timeout: 30s
      from: "Shop <hello@shop.example>"
      templates: { default: { subject: "Hello", text: "Hi" } }
  - name: email-slow
    mode: inspire
    freshnessSlo: 2m
    settings:
      url: ${base}/ok/slow-first/email
      timeout: 300ms
      from: "Shop <hello@shop.example>"
      templates: { default: { subject: "Hello", text: "Hi" } }
  - name: contact-centre
    mode: respond
    freshnessSlo: 2s
    settings:
      url: ${base}/ok/crm
      script: "Offer {{traits.first_name}} the {{payload.offer}} upgrade"
      summaryTraits: [first_name, plan]
  - name: sms
    mode: inspire
    freshnessSlo: 30s
    rateLimit: { perSecond: 20, burst: 1 }
    webhook: { url: ${base}/ok/sms }
  - name: ads
    mode: inspire
    freshnessSlo: 15m
    batch: { maxSize: 100, maxWait: 300ms }
    settings:
      url: ${base}/ok/audiences
      audiences: [{ name: lookalike, segment: big-spender }]
`,
  );
  return file;
}

let seq = 0;
function dispatchTo(
  channel: string,
  opts: {
    profile?: string;
    destinations?: [string, string][];
    payload?: JsonObject;
    traits?: JsonObject;
    purpose?: string;
  } = {},
) {
  const actionId = `act_${channel}_${++seq}`;
  const now = Date.now();
  const profile = opts.profile ?? `p-${seq}`;
  const d = create(DispatchSchema, {
    intent: {
      actionId,
      workspace: WS,
      profileId: profile,
      channel,
      journey: "test-journey",
      purpose: opts.purpose ?? "marketing",
      payload: opts.payload ?? {},
      notAfter: timestampFromMs(now + 120_000),
      intendedAt: timestampFromMs(now),
    },
    destinations: (opts.destinations ?? [["email", `${profile}@example.org`]]).map(([type, value]) => ({
      type,
      value,
    })),
    profileTraits: opts.traits ?? { first_name: "Ada", plan: "gold", secret_score: 7 },
    dueAt: timestampFromMs(now),
    decidedAt: timestampFromMs(now),
  });
  return js
    .publish(subjects.dispatch(WS, channel), toBinary(DispatchSchema, d), { msgID: actionId })
    .then(() => actionId);
}

// Suppression's DISPATCHED records are not what a channel did.
const outcomeOf = (id: string) =>
  outcomes.find((o) => o.actionId === id && o.status !== OutcomeStatus.DISPATCHED);

beforeAll(async () => {
  nats = await NatsServer.start();
  endpoints = await startEndpoints();
  const config = meshConfig(endpoints.base);
  const base = {
    NATS_URL: nats.url,
    GRPC_PORT: "0",
    OPS_PORT: "0",
    KAIROS_CONFIG: config,
    LOG_LEVEL: "silent",
  };
  // Suppression records unsubscribes (it needs no identity for that).
  const sup = await suppression.startSuppression(
    loadConfig(suppression.configSpec, { ...base, IDENTITY_GRPC_ADDR: "127.0.0.1:1" }),
  );
  stops.push(() => sup.stop());
  const start = async (h: Promise<DispatcherHandle>) => {
    const handle = await h;
    stops.push(() => handle.stop());
    return handle;
  };
  emailHandle = await start(
    email.startDispatcherEmail(
      loadConfig(email.configSpec, {
        ...base,
        HTTP_PORT: "0",
        SUPPRESSION_GRPC_ADDR: sup.grpcAddress,
        UNSUBSCRIBE_SECRET: "test-secret",
      }),
    ),
  );
  for (const ch of ["email-down", "email-slow"]) {
    await start(
      email.startDispatcherEmail(loadConfig(email.configSpec, { ...base, HTTP_PORT: "0", CHANNEL: ch })),
    );
  }
  webHandle = await start(web.startDispatcherWeb(loadConfig(web.configSpec, { ...base, HTTP_PORT: "0" })));
  await start(contactCentre.startDispatcherContactCentre(loadConfig(contactCentre.configSpec, base)));
  await start(webhook.startDispatcherWebhook(loadConfig(webhook.configSpec, { ...base, CHANNEL: "sms" })));
  await start(ads.startDispatcherAds(loadConfig(ads.configSpec, base)));
  nc = await connect({ servers: nats.url });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
  outcomes = collect(nc, "kairos.outcomes.>", (b) => fromBinary(OutcomeSchema, b));
  intents = collect(nc, "kairos.intents.>", (b) => fromBinary(IntentSchema, b));
}, 60_000);

afterAll(async () => {
  await nc?.close();
  for (const stop of stops.reverse()) await stop();
  endpoints?.server.closeAllConnections();
  endpoints?.server.close();
  await nats?.[Symbol.asyncDispose]();
});

describe("contact centre", () => {
  it("pushes the profile summary and the rendered agent script to the CRM", async () => {
    const id = await dispatchTo("contact-centre", { payload: { offer: "platinum" } });
    const post = await waitFor(() => endpoints.received.find((r) => r.headers["idempotency-key"] === id));
    expect(post.path).toBe("/ok/crm");
    expect(post.body).toMatchObject({
      action_id: id,
      agent_script: "Offer Ada the platinum upgrade",
      profile: { traits: { first_name: "Ada", plan: "gold" } },
    });
    expect((post.body.profile as JsonObject).traits).not.toHaveProperty("secret_score");
    await waitFor(() => outcomeOf(id)?.status === OutcomeStatus.DELIVERED);
  });
});

describe("email", () => {
  it("renders the template with profile fields and an unsubscribe link that one POST honours", async () => {
    const id = await dispatchTo("email", { profile: "p-ada", payload: { template: "welcome" } });
    const post = await waitFor(() => endpoints.received.find((r) => r.headers["idempotency-key"] === id));
    expect(post.body).toMatchObject({
      to: "p-ada@example.org",
      from: "Shop <hello@shop.example>",
      subject: "Welcome, Ada",
      html: "<p>Hi Ada</p>",
      headers: { "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" },
    });
    await waitFor(() => outcomeOf(id)?.status === OutcomeStatus.DELIVERED);
    expect(outcomeOf(id)?.reason).toBe("esp_id:esp-1");

    const link = /Unsubscribe: (\S+)/.exec(post.body.text as string)?.[1] ?? "";
    expect(link.startsWith(emailHandle.addresses.http!)).toBe(true);
    const call = (method: string, url: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(url, { method }, (res) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        req.end();
      });
    const lists = await new Kvm(nc).open("suppression-lists");
    const listed = async () => {
      const keys: string[] = [];
      for await (const k of await lists.keys()) keys.push(k);
      return keys.filter((k) => k.startsWith(`${WS}.email.email.`));
    };
    // A GET (a mail scanner following the link) shows the confirmation only.
    const page = await call("GET", link);
    expect(page.status).toBe(200);
    expect(page.body).toContain("p-ada@example.org");
    expect(await listed()).toEqual([]);
    expect((await call("POST", link)).status).toBe(200);
    await waitFor(async () => (await listed()).length === 1);
    // A link whose token was tampered with is refused, naming why.
    const bad = await call(
      "POST",
      link.replace(/.$/, (c) => (c === "A" ? "B" : "A")),
    );
    expect(bad.status).toBe(400);
    expect(bad.body).toContain("signature is not valid");
  });

  it("FAILs an action with no email address at once, with the reason, and dead-letters it", async () => {
    const id = await dispatchTo("email", { destinations: [["phone", "+4915112345678"]] });
    await waitFor(() => outcomeOf(id) !== undefined);
    expect(outcomeOf(id)).toMatchObject({
      status: OutcomeStatus.FAILED,
      reason: "no_email_address",
      attempts: 1,
    });
    await waitFor(async () => (await jsm.streams.info("DLQ")).state.messages >= 1);
  });

  it("retries a delivery that timed out, with the same idempotency key", async () => {
    const id = await dispatchTo("email-slow");
    await waitFor(() => outcomeOf(id)?.status === OutcomeStatus.DELIVERED, { timeoutMs: 20_000 });
    const posts = endpoints.received.filter((r) => r.headers["idempotency-key"] === id);
    expect(posts.length).toBeGreaterThanOrEqual(2);
    expect(outcomeOf(id)?.attempts).toBeGreaterThanOrEqual(2);
  });

  it("an email endpoint that never answers does not hold the web channel back", async () => {
    const stuck = await Promise.all(Array.from({ length: 40 }, () => dispatchTo("email-down")));
    const sse = await new Promise<{ ids: string[]; close: () => void }>((resolve, reject) => {
      const ids: string[] = [];
      const req = request(
        `${webHandle.addresses.http}/v1/stream?writeKey=shop-browser-key&anonymousId=anon-iso`,
        (res) => {
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            for (const m of chunk.matchAll(/^id: (\S+)$/gm)) ids.push(m[1]!);
            if (chunk.includes(": subscribed")) resolve({ ids, close: () => res.destroy() });
          });
        },
      );
      req.on("error", reject);
      req.end();
    });
    const webIds: string[] = [];
    for (let i = 0; i < 20; i++)
      webIds.push(await dispatchTo("web", { destinations: [["anonymous_id", "anon-iso"]] }));
    await waitFor(() => webIds.every((id) => outcomeOf(id)?.status === OutcomeStatus.DELIVERED), {
      timeoutMs: 20_000,
    });
    expect(sse.ids.sort()).toEqual([...webIds].sort());
    // Meanwhile not one email to the dead endpoint has been settled.
    expect(stuck.filter((id) => outcomeOf(id) !== undefined)).toEqual([]);
    sse.close();
  });
});

describe("rate limit", () => {
  it("spaces deliveries to one destination at the channel's rate", async () => {
    const ids = await Promise.all(
      Array.from({ length: 21 }, () => dispatchTo("sms", { destinations: [["phone", "+441234567890"]] })),
    );
    await waitFor(() => ids.every((id) => outcomeOf(id)?.status === OutcomeStatus.DELIVERED), {
      timeoutMs: 20_000,
    });
    const times = endpoints.received
      .filter((r) => ids.includes(String(r.headers["idempotency-key"])))
      .map((r) => r.atMs);
    // 20 per second with a burst of 1: 21 deliveries cannot take less than a second.
    expect(Math.max(...times) - Math.min(...times)).toBeGreaterThanOrEqual(950);
  });
});

describe("ad audiences", () => {
  it("adds on segment entry through suppression, in batches of hashed identifiers, and removes exactly those on exit and on deletion", async () => {
    const membership = (profileId: string, change: MembershipChange, version: bigint) =>
      js.publish(
        subjects.segments(WS, "big-spender"),
        toBinary(
          SegmentMembershipChangedSchema,
          create(SegmentMembershipChangedSchema, {
            workspace: WS,
            segment: "big-spender",
            profileId,
            change,
            profileVersion: version,
            changedAt: timestampFromMs(Date.now()),
          }),
        ),
      );
    const profiles = ["aud-1", "aud-2", "aud-3"];
    for (const p of profiles) await membership(p, MembershipChange.ENTERED, 1n);
    // Entry becomes an intent on the ads channel, for suppression to clear.
    const entered = await waitFor(() => {
      const got = intents.filter((i) => i.channel === "ads" && profiles.includes(i.profileId));
      return got.length === 3 ? got : undefined;
    });
    expect(entered[0]).toMatchObject({ purpose: "marketing", payload: { audience: "lookalike", op: "add" } });
    expect(entered[0]?.cancelKeys).toEqual([`audience:lookalike:${entered[0]?.profileId}`]);
    // Suppression clears them (played here): the dispatches carry the profiles' identifiers.
    for (const i of entered) {
      const d = create(DispatchSchema, {
        intent: i,
        destinations: [
          { type: "email", value: ` ${i.profileId.toUpperCase()}@Example.org ` },
          { type: "phone", value: "+44 (0)20 7946-0000".replace("(0)", "") },
        ],
        dueAt: timestampFromMs(Date.now()),
      });
      await js.publish(subjects.dispatch(WS, "ads"), toBinary(DispatchSchema, d), { msgID: i.actionId });
    }
    const adds = await waitFor(() => {
      const got = endpoints.received.filter((r) => r.path === "/ok/audiences" && r.body.operation === "add");
      const n = got.reduce((s, r) => s + (r.body.members as unknown[]).length, 0);
      return n === 3 ? got : undefined;
    });
    expect(adds.length).toBeLessThanOrEqual(2); // batched
    const { createHash } = await import("node:crypto");
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    expect(adds.flatMap((r) => r.body.members as JsonObject[])).toContainEqual({
      email_sha256: [sha("aud-1@example.org")],
      phone_sha256: [sha("+442079460000")],
    });
    await waitFor(() => entered.every((i) => outcomeOf(i.actionId)?.status === OutcomeStatus.DELIVERED));

    // Exit removes what was added for that profile.
    await membership("aud-1", MembershipChange.EXITED, 2n);
    const removal = await waitFor(() =>
      endpoints.received.find(
        (r) =>
          r.body.operation === "remove" && JSON.stringify(r.body.members).includes(sha("aud-1@example.org")),
      ),
    );
    expect(removal.body.members).toEqual([
      { email_sha256: [sha("aud-1@example.org")], phone_sha256: [sha("+442079460000")] },
    ]);

    // Deletion removes the profile from every audience it is in.
    await js.publish(
      subjects.profiles(WS, 0),
      toBinary(
        ProfileChangedSchema,
        create(ProfileChangedSchema, {
          workspace: WS,
          profileId: "aud-2",
          version: 5n,
          deleted: true,
          eventReceivedAt: timestampFromMs(Date.now()),
        }),
      ),
    );
    await waitFor(() =>
      endpoints.received.find(
        (r) =>
          r.body.operation === "remove" && JSON.stringify(r.body.members).includes(sha("aud-2@example.org")),
      ),
    );
  });
});
