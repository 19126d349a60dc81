// Live layer of the zai-dash pages. The server renders everything (cards, SVG charts, tables);
// this script only keeps it current: it follows /api/events, updates card values in place,
// re-fetches the chart fragment after each tick, switches range without a reload, reconnects
// with backoff (and says so), marks data stale after 3 missed intervals on a timer, relabels
// UTC times in the viewer's zone, and toggles the theme.

export {};

type Point = { timestamp: number; variant: string } & Record<string, unknown>;
type LiveEvent =
  | { type: "connected"; data: { scrape_interval: number } }
  | { type: "metrics"; data: Point }
  | { type: "alert"; data: unknown };
type PromAlert = { labels: Record<string, string>; annotations: Record<string, string>; state: string; activeAt: string };

const THEME_KEY = "zai-dash-theme";
const root = document.documentElement;
const intervalMs = Number(document.body.dataset.intervalMs) || 5000;

// ---- formatting, mirroring src/web/charts.rs ----
function compact(v: number): string {
  const a = Math.abs(v);
  if (!Number.isFinite(v)) return "–";
  if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 1e3) return (v / 1e3).toFixed(2) + "k";
  if (a >= 100 || a === 0) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function ms(v: number): string {
  return Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(0) + " ms";
}

function formatField(field: string, v: unknown): string {
  if (typeof v !== "number") return "–";
  if (field === "req_rate") return compact(v) + "/s";
  if (field === "error_rate_pct") return v.toFixed(2) + "%";
  if (field.startsWith("token_rate")) return compact(v) + " tok/s";
  if (field.startsWith("latency") || field.startsWith("ttft")) return ms(v);
  return compact(v);
}

// ---- time labels in the viewer's zone ----
function pad(n: number): string {
  return String(n).padStart(2, "0");
}

function relabel(scope: ParentNode): void {
  scope.querySelectorAll<SVGTextElement>("text[data-t]").forEach((el) => {
    const d = new Date(Number(el.dataset.t));
    const daily = (el.textContent || "").includes("-");
    el.textContent = daily ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  });
  scope.querySelectorAll<HTMLTimeElement>("time[data-t-iso]").forEach((el) => {
    const d = new Date(el.dataset.tIso || "");
    if (!Number.isNaN(d.getTime())) {
      el.dateTime = el.dataset.tIso || "";
      el.textContent = d.toLocaleString();
      el.title = el.dataset.tIso || "";
    }
  });
  document.querySelectorAll("footer").forEach((f) => (f.innerHTML = f.innerHTML.replace(" (UTC)", "")));
}

// ---- theme ----
function effectiveTheme(): string {
  return root.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}

function setupTheme(): void {
  const btn = document.getElementById("theme");
  if (!btn) return;
  const label = () => {
    const next = effectiveTheme() === "dark" ? "light" : "dark";
    btn.textContent = next === "dark" ? "Dark theme" : "Light theme";
    btn.setAttribute("aria-label", `Switch to the ${next} theme`);
  };
  btn.hidden = false;
  label();
  btn.addEventListener("click", () => {
    const next = effectiveTheme() === "dark" ? "light" : "dark";
    root.dataset.theme = next;
    try {
      localStorage.setItem(THEME_KEY, next);
    } catch {
      /* private mode: the choice lasts for this page only */
    }
    label();
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", label);
}

// ---- connection status and staleness ----
const live = document.getElementById("live");
const lastSeen = new Map<string, number>();
const pageLoaded = Date.now();
let connected = false;

function status(text: string, cls: "ok" | "bad" | ""): void {
  if (!live) return;
  live.textContent = text;
  live.className = "live " + cls;
}

// Stale = no point for a variant within 3 scrape intervals of *our* clock (receive time), so
// browser/server clock skew cannot hide it; runs on a timer, not only when something renders.
function checkStale(): void {
  const now = Date.now();
  let anyStale = false;
  document.querySelectorAll<HTMLElement>(".card[data-variant]").forEach((card) => {
    const seen = lastSeen.get(card.dataset.variant || "") ?? pageLoaded;
    const stale = now - seen > 3 * intervalMs;
    const badge = card.querySelector<HTMLElement>(".stale");
    if (badge) {
      badge.hidden = !stale;
      badge.textContent = stale ? `stale ${Math.round((now - seen) / 1000)}s` : "stale";
    }
    anyStale ||= stale;
  });
  if (connected) status(anyStale ? "live · some data stale" : "live", anyStale ? "bad" : "ok");
}

// ---- live updates ----
function updateCard(p: Point): void {
  lastSeen.set(p.variant, Date.now());
  const card = document.querySelector<HTMLElement>(`.card[data-variant="${CSS.escape(p.variant)}"]`);
  if (!card) return;
  card.dataset.ts = String(p.timestamp);
  card.querySelectorAll<HTMLElement>("[data-field]").forEach((dd) => {
    const field = dd.dataset.field || "";
    if (field in p) dd.textContent = formatField(field, p[field]);
  });
}

const main = document.getElementById("dash");
let refreshTimer = 0;
let inFlight: AbortController | null = null;

function fragmentUrl(href: string): string {
  const u = new URL(href, location.href);
  u.searchParams.set("fragment", "1");
  return u.pathname + u.search;
}

async function loadFragment(href: string, whole: boolean): Promise<void> {
  if (!main) return;
  inFlight?.abort();
  const ctl = new AbortController();
  inFlight = ctl;
  const resp = await fetch(fragmentUrl(href), { signal: ctl.signal });
  if (!resp.ok) throw new Error(`fragment: HTTP ${resp.status}`);
  const tpl = document.createElement("template");
  tpl.innerHTML = await resp.text();
  if (whole) {
    main.replaceChildren(tpl.content);
    const u = new URL(href, location.href);
    main.dataset.range = u.searchParams.get("range") || "1h";
    main.dataset.variant = u.searchParams.get("variant") || "all";
  } else {
    // Cards and charts; the controls (and an open pod list) stay as they are.
    for (const sel of [".cards", ".panels"]) {
      const fresh = tpl.content.querySelector(sel);
      const old = main.querySelector(sel);
      if (fresh && old) old.replaceWith(fresh);
    }
  }
  relabel(main);
  checkStale();
}

// One chart refresh per tick, after all variants' points of the tick have arrived.
function scheduleRefresh(): void {
  if (!main || refreshTimer) return;
  refreshTimer = window.setTimeout(() => {
    refreshTimer = 0;
    loadFragment(location.href, false).catch(() => undefined);
  }, 400);
}

let attempts = 0;
let source: EventSource | null = null;
let countdown = 0;

function connect(): void {
  window.clearInterval(countdown);
  source = new EventSource("/api/events");
  status("connecting…", "");
  source.onopen = () => {
    attempts = 0;
    connected = true;
    status("live", "ok");
  };
  source.onmessage = (e: MessageEvent<string>) => {
    const ev = JSON.parse(e.data) as LiveEvent;
    // `connected` carries the scrape interval, but points come once per point width, which the
    // page already states in data-interval-ms; only metrics matter here.
    if (ev.type === "metrics") {
      updateCard(ev.data);
      scheduleRefresh();
    } else if (ev.type === "alert") {
      refreshAlerts().catch(() => undefined);
    }
  };
  source.onerror = () => {
    // Our own backoff (1 s, 2 s, 4 s ... 30 s) instead of the browser's silent retries, so
    // the page can say what is happening.
    source?.close();
    connected = false;
    attempts += 1;
    let left = Math.min(1000 * 2 ** (attempts - 1), 30000);
    status(`disconnected · retrying in ${Math.ceil(left / 1000)}s`, "bad");
    countdown = window.setInterval(() => {
      left -= 1000;
      if (left <= 0) {
        connect();
      } else {
        status(`disconnected · retrying in ${Math.ceil(left / 1000)}s`, "bad");
      }
    }, 1000);
  };
}

// The strip of firing alerts under the header and the count in the navigation, rebuilt from
// /api/alerts when an alert changes state (text nodes only: labels come from the server).
function alertLine(a: PromAlert): HTMLElement {
  const p = document.createElement("p");
  const severity = a.labels.severity || "";
  p.className = `alert-line ${severity.replace(/[^A-Za-z0-9_-]/g, "")}`;
  const link = document.createElement("a");
  link.href = "/alerts";
  const name = document.createElement("strong");
  name.textContent = a.labels.alertname || "";
  link.append(name, ` (${a.labels.variant || ""}, ${severity})`);
  const since = document.createElement("small");
  const time = document.createElement("time");
  time.dataset.tIso = a.activeAt;
  time.textContent = a.activeAt;
  since.append("since ", time);
  p.append(link, `: ${a.annotations.summary || ""} `, since);
  return p;
}

async function refreshAlerts(): Promise<void> {
  const strip = document.getElementById("alert-strip");
  if (!strip) return;
  const resp = await fetch("/api/alerts", { headers: { accept: "application/json" } });
  if (!resp.ok) return;
  const body = (await resp.json()) as { data: { alerts: PromAlert[] } };
  const firing = body.data.alerts.filter((a) => a.state === "firing");
  strip.replaceChildren(...firing.map(alertLine));
  strip.hidden = firing.length === 0;
  relabel(strip);
  const nav = document.querySelector<HTMLAnchorElement>('.top nav a[href="/alerts"]');
  if (nav) {
    document.getElementById("alert-count")?.remove();
    if (firing.length > 0) {
      const badge = document.createElement("span");
      badge.className = "badge firing";
      badge.id = "alert-count";
      badge.textContent = String(firing.length);
      nav.append(" ", badge);
    }
  }
}

// Range, variant and pod links: fetch the fragment instead of reloading the page.
function setupNavigation(): void {
  if (!main) return;
  main.addEventListener("click", (e) => {
    const a = (e.target as Element).closest("a");
    if (!a || !a.closest(".controls") || e.ctrlKey || e.metaKey || e.shiftKey) return;
    e.preventDefault();
    const href = a.getAttribute("href") || "/";
    loadFragment(href, true)
      .then(() => history.pushState(null, "", href))
      .catch(() => (location.href = href));
  });
  window.addEventListener("popstate", () => {
    loadFragment(location.href, true).catch(() => location.reload());
  });
}

setupTheme();
relabel(document);
setupNavigation();
if (main) {
  connect();
  window.setInterval(checkStale, 1000);
} else {
  status("", "");
}
