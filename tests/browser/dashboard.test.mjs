// Browser tests: the real debug binary against fake targets, driven in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core; no browser download). Screenshots of
// every page go to test-artifacts/ (git-ignored). Run: node --test tests/browser/
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { startTarget } from "./fake-target.mjs";
import { launchChromium, startZaiDash, stopZaiDash, waitFor } from "./binary.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(path.join(repo, "frontend", "package.json"));
const { chromium } = require("playwright-core");
const artifacts = path.join(repo, "test-artifacts");
const XSS_MODEL = "<script>alert(1)</script>";

let tmp, server, base, context, targets = [];
const problems = [];

function startServer(urls) {
  return startZaiDash(repo, {
    LISTEN_ADDR: "127.0.0.1:0",
    DB_PATH: path.join(tmp, "zai-dash.db"),
    SCRAPE_TARGETS: urls.join(","),
    SCRAPE_INTERVAL: "1s",
    SCRAPE_TIMEOUT: "500ms",
    RUST_LOG: "zai_dash=warn",
  });
}

async function newPage(opts = {}) {
  const page = await context.newPage();
  if (opts.width) await page.setViewportSize({ width: opts.width, height: 900 });
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  page.on("dialog", (d) => {
    problems.push(`dialog opened: ${d.message()}`);
    d.dismiss();
  });
  return page;
}

const shot = (page, name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });

before(async () => {
  fs.mkdirSync(artifacts, { recursive: true });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "zai-dash-browser-"));
  const xss = (f) =>
    `zai_proxy_tokens_total{direction="input",model="${XSS_MODEL}",pricing_tier="peak",variant="canary"} ${Math.floor(1000 * f)}\n`;
  targets = [await startTarget("production", 0.02), await startTarget("canary", 0.01, [xss])];
  const s = await startServer(targets.map((t) => t.url));
  server = s.child;
  base = s.base;
  // Points with traffic for both variants (the first scrape of a target is only a baseline).
  await waitFor("traffic on both variants", async () => {
    const st = await (await fetch(`${base}/api/status`)).json();
    return st.production?.req_rate > 0 && st.canary?.req_rate > 0;
  });
  context = await launchChromium(chromium, tmp, { width: 1280, height: 900 });
});

after(async () => {
  await context?.close();
  await stopZaiDash(server);
  for (const t of targets) t.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test("the overview shows cards, charts and tables with data", async () => {
  const page = await newPage();
  await page.goto(`${base}/`);
  const rate = page.locator('.card[data-variant="production"] [data-field="req_rate"]');
  assert.match(await rate.innerText(), /^[\d.]+k?\/s$/);
  assert.equal(await page.locator(".card[data-variant]").count(), 2, "one card per variant");
  assert.ok((await page.locator("svg.chart path.s").count()) >= 8, "chart lines drawn");
  assert.equal(await page.locator("#panel-models td.model", { hasText: "glm-4.7" }).count() > 0, true);
  await waitFor("live status", async () => (await page.locator("#live").innerText()).startsWith("live"), 30000);
  await shot(page, "overview-light");
  await page.close();
});

// Waits are generous (30 s on top of the intervals): a loaded machine delays points, and how
// soon they come is not what these tests check.
test("a live value changes on the card without a reload", async () => {
  const page = await newPage();
  await page.goto(`${base}/`);
  const card = page.locator('.card[data-variant="production"]');
  // Live points come once per point width (5 s), stated by the page itself.
  const interval = Number(await page.locator("body").getAttribute("data-interval-ms"));
  assert.ok(interval >= 1000, `interval ${interval}`);
  const ts0 = await card.getAttribute("data-ts");
  const rate0 = await card.locator('[data-field="req_rate"]').innerText();
  await page.evaluate(() => (window.__noReload = true));
  await waitFor("a new point on the card", async () => (await card.getAttribute("data-ts")) !== ts0, 2 * interval + 30000);
  // The targets' rates keep growing, so the shown rate moves too.
  await waitFor("the request rate to change", async () => (await card.locator('[data-field="req_rate"]').innerText()) !== rate0, 4 * interval + 30000);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was not reloaded");
  await page.close();
});

test("the range switch re-draws without a reload", async () => {
  const page = await newPage();
  await page.goto(`${base}/?range=1h`);
  await page.evaluate(() => (window.__noReload = true));
  await page.locator('.controls a[data-range="5m"]').click();
  await waitFor("range 5m", async () => (await page.locator("#dash").getAttribute("data-range")) === "5m", 20000);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was not reloaded");
  assert.match(page.url(), /range=5m/);
  assert.equal(await page.locator('.controls a[data-range="5m"]').getAttribute("aria-current"), "true");
  assert.ok((await page.locator("svg.chart path.s").count()) > 0);
  await page.close();
});

test("the no-JS page has links and charts", async () => {
  const resp = await fetch(`${base}/?range=15m&variant=canary`);
  assert.equal(resp.status, 200);
  const html = await resp.text();
  assert.match(html, /href="\/\?range=7d(&amp;|&#38;)variant=canary"/);
  assert.match(html, /<svg class="chart"/);
  assert.ok(!html.includes(XSS_MODEL), "the model name is escaped");
});

test("the compare page shows a verdict", async () => {
  const page = await newPage();
  await page.goto(`${base}/compare?baseline=production&candidate=canary&window=5m`);
  assert.match(await page.locator("#verdict").innerText(), /Verdict: (PASS|WARN|FAIL|INSUFFICIENT_DATA)/i);
  assert.ok((await page.locator("table.cmp tbody tr").count()) >= 5);
  const api = await (await fetch(`${base}/api/compare?baseline=production&candidate=canary&window=5m`)).json();
  assert.ok(["pass", "warn", "fail", "insufficient_data"].includes(api.verdict));
  await shot(page, "compare-light");
  await page.close();
});

test("the targets page lists every target as up", async () => {
  const page = await newPage();
  await page.goto(`${base}/targets`);
  assert.equal(await page.locator("table.targets tbody tr").count(), 2);
  assert.equal(await page.locator("table.targets .badge.up").count(), 2);
  await shot(page, "targets-light");
  await page.close();
});

test("a hostile model name renders as text", async () => {
  const page = await newPage();
  await page.goto(`${base}/?range=5m`);
  const cell = page.locator("#panel-models td.model", { hasText: "alert(1)" });
  assert.equal(await cell.innerText(), XSS_MODEL);
  assert.equal(await page.locator("#panel-models td.model script").count(), 0);
  await page.close();
});

test("dark theme, the toggle, and a 375 px screen", async () => {
  const page = await newPage({ width: 375 });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(`${base}/`);
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, "rgb(13, 17, 23)");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `page scrolls sideways by ${overflow}px at 375 px`);
  await shot(page, "overview-dark-375");
  await page.goto(`${base}/compare`);
  await shot(page, "compare-dark-375");
  await page.goto(`${base}/targets`);
  await shot(page, "targets-dark-375");
  await page.goto(`${base}/`);
  await page.locator("#theme").click();
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "light");
  await page.reload();
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "light", "the choice persists");
  await page.evaluate(() => localStorage.removeItem("zai-dash-theme"));
  await shot(page, "overview-toggled-light-375");
  await page.close();
});

test("no console errors on any page", () => {
  assert.deepEqual(problems, []);
});

// Last: it stops the server. The page's refused reconnects log console errors by design, so
// this page is not watched for them.
test("losing the server shows the reconnect countdown, then stale cards", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/`);
  const interval = Number(await page.locator("body").getAttribute("data-interval-ms"));
  await waitFor("live status", async () => (await page.locator("#live").innerText()).startsWith("live"), 30000);
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await exited;
  await waitFor("the reconnect countdown", async () => /retrying in \d+s/.test(await page.locator("#live").innerText()), 30000);
  await waitFor("stale cards", async () => (await page.locator(".card .stale:not([hidden])").count()) === 2, 3 * interval + 30000);
  await shot(page, "overview-disconnected");
  await page.close();
});
