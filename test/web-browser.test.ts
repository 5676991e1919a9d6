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
import * as web from "@kairos/dispatcher-web";
import { startCoreMesh, type CoreMesh } from "./in-process.js";

const config = fileURLToPath(new URL("./fixtures/web-browser.yaml", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let nats: NatsServer;
let browser: Browser;
let mesh: CoreMesh | undefined;
let pageUrl: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: install Debian's chromium package (./kairos test does) or set CHROMIUM_PATH`,
    );
  }
  nats = await NatsServer.start();
  mesh = await startCoreMesh(nats.url, config);
  const disp = await mesh.add(
    web.startDispatcherWeb(
      loadConfig(web.configSpec, { ...mesh.base, HTTP_PORT: "0", INGEST_URL: mesh.httpUrl }),
    ),
  );
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
  await mesh?.stop();
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
