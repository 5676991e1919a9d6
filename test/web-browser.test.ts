/**
 * The web channel in a real browser: headless Chromium (Debian's package,
 * driven by playwright-core) opens the example page served by dispatcher-web,
 * which subscribes with Server-Sent Events; a click sends a `Product Viewed`
 * event to ingestion's Segment HTTP API; the journey's action, through
 * identity, segmentation and suppression, appears on the page.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium, type Browser } from "playwright-core";
import { loadConfig } from "@kairos/kit";
import { NatsServer } from "@kairos/testkit";
import * as ingestion from "@kairos/ingestion";
import * as identity from "@kairos/identity";
import * as segmentation from "@kairos/segmentation";
import * as suppression from "@kairos/suppression";
import * as web from "@kairos/dispatcher-web";

const config = fileURLToPath(new URL("./fixtures/web-browser.yaml", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let nats: NatsServer;
let browser: Browser;
const stops: (() => Promise<unknown>)[] = [];
let pageUrl: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: install Debian's chromium package (./kairos test does) or set CHROMIUM_PATH`,
    );
  }
  nats = await NatsServer.start();
  const base = {
    NATS_URL: nats.url,
    GRPC_PORT: "0",
    OPS_PORT: "0",
    KAIROS_CONFIG: config,
    LOG_LEVEL: "silent",
  };
  const id = await identity.startIdentity(loadConfig(identity.configSpec, base));
  stops.push(() => id.stop());
  const seg = await segmentation.startSegmentation(loadConfig(segmentation.configSpec, base));
  stops.push(() => seg.stop());
  const sup = await suppression.startSuppression(
    loadConfig(suppression.configSpec, { ...base, IDENTITY_GRPC_ADDR: id.grpcAddress }),
  );
  stops.push(() => sup.stop());
  const ing = await ingestion.startIngestion(loadConfig(ingestion.configSpec, { ...base, HTTP_PORT: "0" }));
  stops.push(() => ing.stop());
  const disp = await web.startDispatcherWeb(
    loadConfig(web.configSpec, { ...base, HTTP_PORT: "0", INGEST_URL: ing.httpUrl }),
  );
  stops.push(() => disp.stop());
  pageUrl = `${disp.addresses.http}/?writeKey=shop-browser-key`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  for (const stop of stops.reverse()) await stop();
  await nats?.[Symbol.asyncDispose]();
});

describe("the web channel's example page in headless Chromium", () => {
  it("shows the action a Product Viewed event earns, pushed over Server-Sent Events", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(pageUrl);
    await page.waitForSelector("body[data-subscribed=true]", { timeout: 15_000 });
    await page.click("#view");
    const item = await page.waitForSelector("#actions li", { timeout: 30_000 });
    expect(await item.innerText()).toContain("Free shipping on Trail Shoes today");
    expect(await item.getAttribute("data-action-id")).toMatch(/^act_/);
    expect(await page.textContent("#status")).toBe("event sent");

    // A second view is a second action (reentry: every), pushed to the same open stream.
    await page.click("#view");
    await page.waitForSelector("#actions li:nth-child(2)", { timeout: 30_000 });
    expect(errors).toEqual([]);
    await page.close();
  });
});
