// Browser tests of the budgets panels (issue 21): the overview's quota card and runway panel,
// spend card and "Who is waiting" panel, and the /slos page, at a desktop (1400 px) and a phone
// (390 px) width: nothing scrolls sideways and the key figures are on the page. The real debug
// binary scrapes a fake zai-proxy (the contract's sample, whose quota gauges, costs and caller
// buckets it carries, growing with time) in headless Chromium, as dashboard.test.mjs does.
// Screenshots go to test-artifacts/. Run: node --test tests/browser/
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
const WIDTHS = [1400, 390];

let tmp, server, base, context, target;
const problems = [];

function startServer(url) {
  const rules = path.join(tmp, "rules.yaml");
  fs.writeFileSync(rules, "rules: []\nslos:\n  - {name: Availability, variant: production, indicator: availability, objective: 99.5, period: 3d}\n");
  return startZaiDash(repo, {
    SOURCE: undefined,
    PROMETHEUS_URL: undefined,
    DASHBOARD_TOKEN: undefined,
    BUDGET_MONTHLY_USD: undefined,
    LISTEN_ADDR: "127.0.0.1:0",
    DB_PATH: path.join(tmp, "zai-dash.db"),
    SCRAPE_TARGETS: url,
    SCRAPE_INTERVAL: "1s",
    SCRAPE_TIMEOUT: "500ms",
    ALERT_RULES: rules,
    // Far below the fixture's spend: the budget line is red and its alerts fire.
    BUDGET_DAILY_USD: "0.5",
    RUST_LOG: "zai_dash=warn",
  });
}

async function newPage(width) {
  const page = await context.newPage();
  await page.setViewportSize({ width, height: 900 });
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  return page;
}

/** How far the page scrolls sideways (0 when it fits). */
const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
const shot = (page, name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });

before(async () => {
  fs.mkdirSync(artifacts, { recursive: true });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "zai-dash-budgets-"));
  target = await startTarget("production", 0.05);
  const s = await startServer(target.url);
  server = s.child;
  base = s.base;
  // The alert engine has evaluated quota, spend and the objective with traffic behind them.
  await waitFor("spend with a pace", async () => {
    const r = await fetch(`${base}/api/spend`);
    return r.ok && (await r.json()).total?.projected_day_usd > 0;
  });
  await waitFor("an objective with requests", async () => {
    const r = await fetch(`${base}/api/slos`);
    return r.ok && (await r.json()).some((s) => s.sli !== null);
  });
  context = await launchChromium(chromium, tmp, { width: 1400, height: 900 });
});

after(async () => {
  await context?.close();
  await stopZaiDash(server);
  target?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

for (const width of WIDTHS) {
  test(`the overview's quota, spend and waiting panels at ${width} px`, async () => {
    const page = await newPage(width);
    await page.goto(`${base}/?range=5m`);
    // Quota card and runway panel: both windows of the fixture's poller.
    const quota = page.locator("#quota-card");
    assert.match(await quota.innerText(), /production 5h: \d+ % used/);
    assert.match(await quota.innerText(), /production week: \d+ % used/);
    assert.equal(await page.locator("#panel-quota tbody tr").count(), 2);
    // Spend card: the four figures in dollars and the daily budget's line, over it.
    const spend = page.locator("#spend-card");
    for (const label of ["Today", "Day at this pace", "This month", "Month at this pace"]) {
      assert.match(await spend.locator("dt", { hasText: label }).first().innerText(), new RegExp(`^${label}$`));
    }
    assert.match(await spend.locator("dd").first().innerText(), /^\$\d+\.\d+$/);
    assert.match(await spend.innerText(), /Daily budget \$0\.50/);
    assert.equal(await spend.locator("li.danger").count(), 1, "spent past the budget: red");
    // Who is waiting: the fixture's two caller buckets, the waiting one first.
    await waitFor("both caller buckets", async () => (await page.locator("#panel-waiting tbody tr").count()) === 2);
    const first = page.locator("#panel-waiting tbody tr").first();
    assert.equal(await first.locator("td").nth(1).innerText(), "source-43");
    assert.match(await first.locator("td").nth(3).innerText(), /^[\d.]+ m?s$/, "a wait p95");
    for (const id of ["#quota-card", "#spend-card", "#panel-quota", "#panel-waiting"]) {
      const box = await page.locator(id).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= width + 1, `${id} inside ${width} px: ${JSON.stringify(box)}`);
    }
    const over = await overflow(page);
    assert.ok(over <= 1, `the overview scrolls sideways by ${over}px at ${width} px`);
    await shot(page, `budgets-overview-${width}`);
    await page.close();
  });

  test(`the objectives page at ${width} px`, async () => {
    const page = await newPage(width);
    await page.goto(`${base}/slos`);
    const text = await page.locator("main").innerText();
    assert.match(text, /Availability/);
    assert.match(text, /Error budget left/);
    assert.match(text, /Burn rate/);
    assert.ok((await page.locator("main svg").count()) >= 1, "budget and burn-rate charts");
    const over = await overflow(page);
    assert.ok(over <= 1, `/slos scrolls sideways by ${over}px at ${width} px`);
    await shot(page, `budgets-slos-${width}`);
    await page.close();
  });
}

test("no console errors on the budgets pages", () => {
  assert.deepEqual(problems, []);
});
