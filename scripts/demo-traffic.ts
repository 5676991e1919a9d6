/**
 * Demo traffic for `./kairos start`: customers who browse anonymously, identify
 * themselves, some upgrade to gold and buy, sent to ingestion over the Segment HTTP API.
 */
import { randomUUID } from "node:crypto";

export interface DemoTrafficOptions {
  /** Ingestion base URL, e.g. http://127.0.0.1:8088. */
  url: string;
  writeKey: string;
  /** Events per second. */
  rate: number;
}

const firstNames = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"];

/** One customer's story as Segment calls. */
export function customerStory(n: number): object[] {
  const anonymousId = randomUUID();
  const userId = `demo-user-${n}`;
  const name = firstNames[n % firstNames.length] ?? "Ada";
  const plan = n % 3 === 0 ? "gold" : "basic";
  return [
    { type: "page", anonymousId, name: "Home", properties: { path: "/" } },
    { type: "track", anonymousId, event: "Product Viewed", properties: { sku: `sku-${n % 20}`, price: 49 } },
    {
      type: "identify",
      anonymousId,
      userId,
      traits: {
        email: `${userId}@example.org`,
        first_name: name,
        plan,
        timezone: ["Europe/London", "America/New_York", "Asia/Tokyo"][n % 3] ?? "Europe/London",
        birthday: `19${70 + (n % 30)}-${String(1 + (n % 12)).padStart(2, "0")}-${String(1 + (n % 28)).padStart(2, "0")}`,
      },
    },
    { type: "track", userId, event: "Product Added", properties: { sku: `sku-${n % 20}`, price: 49 } },
    // Two in three buy; the others get the abandoned-cart email an hour later.
    ...(n % 3 === 2
      ? []
      : [
          {
            type: "track",
            userId,
            event: "Order Completed",
            properties: { order_id: `o-${n}`, revenue: 49 },
          },
        ]),
  ];
}

/** Sends demo traffic until the returned stop function is called. */
export function runDemoTraffic(opts: DemoTrafficOptions): () => Promise<void> {
  const auth = `Basic ${Buffer.from(`${opts.writeKey}:`).toString("base64")}`;
  let queue: object[] = [];
  let n = 0;
  let inflight: Promise<unknown> = Promise.resolve();
  const tickMs = 200;
  const perTick = Math.max(1, Math.round((opts.rate * tickMs) / 1000));
  const timer = setInterval(() => {
    const batch: object[] = [];
    while (batch.length < perTick) {
      if (queue.length === 0) queue = customerStory(n++);
      const next = queue.shift();
      if (next) batch.push({ ...next, messageId: randomUUID(), timestamp: new Date().toISOString() });
    }
    inflight = fetch(`${opts.url}/v1/batch`, {
      method: "POST",
      headers: { authorization: auth, "content-type": "application/json" },
      body: JSON.stringify({ batch }),
    }).catch(() => undefined);
  }, tickMs);
  return async () => {
    clearInterval(timer);
    await inflight;
  };
}
