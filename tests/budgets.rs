//! Budgets and objectives end to end (issue 21): zai-dash scraping fake zai-proxies on
//! loopback into a real SQLite file, whose quota usage grows at a known pace (read against the
//! injected clock, which the test drives 4 times faster than real time) and whose errors burn
//! an objective at a known rate, with the alerts delivered to a real Alertmanager (the alerts
//! suite's harness).
//!
//! The clock runs only 4 times faster: the scraper measures each scrape's elapsed time on
//! tokio's clock, and much faster injected time makes rows cover a sliver of their bucket.

mod common;
// The alerts suite's harness; this suite uses its Alertmanager only.
#[allow(dead_code)]
#[path = "alerts/mod.rs"]
mod harness;
mod self_metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::*;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::alerts::AlertSettings;
use zai_dash::alerts::rules::parse_rules_file;
use zai_dash::clock::{Clock, ManualClock};

const HOUR_MS: i64 = 3_600_000;
/// Clock milliseconds per real 100 ms.
const SPEED_MS: i64 = 400;
/// The fake proxy polls its provider this often (clock time).
const POLL_MS: i64 = 10_000;

/// A provider window as the fake proxy's poller sees it: used `start + pace * hours since t0`,
/// reported in tenths of a percent, polled every [`POLL_MS`].
#[derive(Clone, Copy)]
struct Window {
    name: &'static str,
    start: f64,
    pace_per_hour: f64,
    reset_after_ms: i64,
}

impl Window {
    fn used_at(&self, t0_ms: i64, at_ms: i64) -> f64 {
        let exact = self.start + self.pace_per_hour * (at_ms - t0_ms) as f64 / HOUR_MS as f64;
        ((exact * 1000.0).floor() / 1000.0).clamp(0.0, 1.0)
    }

    /// When the exact line reaches 1.
    fn exhausted_at(&self, t0_ms: i64) -> i64 {
        t0_ms + ((1.0 - self.start) / self.pace_per_hour * HOUR_MS as f64).round() as i64
    }
}

/// A fake zai-proxy with a quota poller: a [`Sim`] for traffic plus the quota gauges.
struct QuotaProxy {
    sim: Sim,
    clock: Arc<ManualClock>,
    t0_ms: i64,
    windows: Vec<Window>,
    /// The poller has failed for 20 minutes: its last good sample is that old.
    failing: bool,
}

impl QuotaProxy {
    fn render(&self) -> String {
        let now = self.clock.now_ms();
        let last_poll = now - now.rem_euclid(POLL_MS);
        let v = &self.sim.variant;
        let mut s = self.sim.render();
        s += "# TYPE zai_proxy_quota_usage_ratio gauge\n";
        for w in &self.windows {
            s += &format!(
                "zai_proxy_quota_usage_ratio{{limit_type=\"credit_limit\",variant=\"{v}\",window=\"{}\"}} {}\n",
                w.name,
                w.used_at(self.t0_ms, last_poll)
            );
        }
        s += "# TYPE zai_proxy_quota_reset_time_seconds gauge\n";
        for w in &self.windows {
            s += &format!(
                "zai_proxy_quota_reset_time_seconds{{limit_type=\"credit_limit\",variant=\"{v}\",window=\"{}\"}} {}\n",
                w.name,
                (self.t0_ms + w.reset_after_ms) / 1000
            );
        }
        s += "# TYPE zai_proxy_quota_sample_age_seconds gauge\n";
        let age_s = if self.failing { 20.0 * 60.0 } else { (now - last_poll) as f64 / 1000.0 };
        s += &format!("zai_proxy_quota_sample_age_seconds{{variant=\"{v}\"}} {age_s}\n");
        s
    }
}

struct FakeProxy {
    url: String,
    model: Arc<Mutex<QuotaProxy>>,
    cancel: CancellationToken,
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn exposition(State(model): State<Arc<Mutex<QuotaProxy>>>) -> String {
    model.lock().unwrap().render()
}

async fn start_proxy(model: QuotaProxy) -> FakeProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let model = Arc::new(Mutex::new(model));
    let app = Router::new().route("/metrics", get(exposition)).with_state(model.clone());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await.unwrap() });
    FakeProxy { url, model, cancel }
}

/// Moves the clock [`SPEED_MS`] every real 100 ms until aborted.
fn drive(clock: Arc<ManualClock>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.advance_ms(SPEED_MS);
        }
    })
}

fn alert_settings(file: &str) -> AlertSettings {
    let parsed = parse_rules_file(file, "test rules").unwrap();
    AlertSettings {
        rules: parsed.rules,
        slos: parsed.slos,
        resend_interval: Duration::from_secs(1),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        ..AlertSettings::default()
    }
}

fn five_hour() -> Window {
    // 10 % used, 30 % an hour: full 3 h after t0, while the window resets 4 h after t0.
    Window { name: "five_hour", start: 0.10, pace_per_hour: 0.30, reset_after_ms: 4 * HOUR_MS }
}

fn weekly_window() -> Window {
    // 40 % used, 2 % an hour: full 30 h after t0, after its reset 1 d after t0. (Three minutes
    // of it are a step or two of 0.1 %: its pace is rough, its verdict is not.)
    Window { name: "weekly", start: 0.40, pace_per_hour: 0.02, reset_after_ms: 24 * HOUR_MS }
}

/// The window `name` of `variant` in a quota report (null when absent).
fn window(quota: &Value, variant: &str, name: &str) -> Value {
    let windows = quota[variant]["windows"].as_array().cloned().unwrap_or_default();
    windows.into_iter().find(|w| w["window"] == name).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_runway_projects_exhaustion_and_alerts_before_the_reset() {
    let t0 = chrono::Utc::now().timestamp_millis();
    let clock = Arc::new(ManualClock::new(t0));
    let proxy = start_proxy(QuotaProxy {
        sim: Sim::new("production", 20.0),
        clock: clock.clone(),
        t0_ms: t0,
        windows: vec![five_hour(), weekly_window()],
        failing: false,
    })
    .await;
    let plain = FakeTarget::start(Sim::new("canary", 5.0), Behaviour::Healthy).await;
    let am = harness::alertmanager::Alertmanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&proxy.url, &plain.url]));
    s.alerts = alert_settings(
        "rules:\n  - {name: QuotaRunsOut, expr: quota_runway_seconds, op: '<', threshold: 0, severity: critical}\n",
    );
    s.alerts.alertmanager_url = Some(url::Url::parse(&am.server.base).unwrap());
    let app = TestApp::start_with_clock(s, clock.clone()).await;
    let ticking = drive(clock.clone());

    // Three clock minutes of samples (the burn needs one).
    wait_for("3 minutes of quota samples", Duration::from_secs(90), || async { clock.now_ms() - t0 > 3 * 60_000 })
        .await;
    let quota = wait_for_quota(&app, |q| window(q, "production", "five_hour")["exhausted_at"].is_i64()).await;
    let now = clock.now_ms();
    let w5 = window(&quota, "production", "five_hour");
    let truth = five_hour().exhausted_at(t0);
    let projected = w5["exhausted_at"].as_i64().unwrap();
    let error = (projected - truth).abs() as f64 / (truth - now) as f64;
    assert!(error <= 0.05, "projected {projected}, true {truth}: {:.1} % off", error * 100.0);
    let burn = w5["burn_per_hour"].as_f64().unwrap();
    assert!((burn - 0.30).abs() <= 0.015, "burn {burn}/h, true 0.30/h");
    assert_eq!(w5["runs_out_before_reset"], true);
    assert_eq!(w5["reset_at"], (t0 + 4 * HOUR_MS) / 1000 * 1000);
    assert_eq!(quota["production"]["state"], "fresh");
    let weekly = window(&quota, "production", "weekly");
    assert_eq!(weekly["runs_out_before_reset"], false, "{weekly}");
    assert_eq!(quota["canary"]["state"], "unavailable");
    assert!(quota["canary"]["sample_age_seconds"].is_null(), "unknown, not 0: {}", quota["canary"]);
    assert_eq!(quota["canary"]["windows"], serde_json::json!([]));

    // Runs out about an hour before the reset: the alert fires and reaches Alertmanager.
    let fired =
        wait_for_value("QuotaRunsOut in Alertmanager", || async { am.alert("QuotaRunsOut", "production").await }).await;
    let value: f64 = fired["annotations"]["value"].as_str().unwrap().parse().unwrap();
    // An hour early, give or take 5 % of the three hours the projection spans.
    assert!((value + 3_600.0).abs() <= 0.05 * 3.0 * 3_600.0, "about -1 h: {value}");
    assert!(am.alert("QuotaRunsOut", "canary").await.is_none(), "no quota is no alert");

    // The overview shows the card and the panel, server-rendered.
    let page = reqwest::get(app.url("/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"quota-card\"") && page.contains("id=\"panel-quota\""), "{page}");
    assert!(page.contains("before the reset"), "the verdict is shown");

    // The provider has stopped answering for 20 minutes: the sample is stale, the pace unknown.
    proxy.model.lock().unwrap().failing = true;
    let quota = wait_for_quota(&app, |q| q["production"]["state"] == "stale").await;
    let w5 = window(&quota, "production", "five_hour");
    assert!(w5["burn_per_hour"].is_null() && w5["exhausted_at"].is_null(), "{w5}");
    assert!(w5["used_ratio"].as_f64().unwrap() > 0.1, "the last known ratio stays: {w5}");
    assert!(quota["production"]["sample_age_seconds"].as_f64().unwrap() > 15.0 * 60.0);

    ticking.abort();
    app.stop().await;
}

async fn wait_for_quota(app: &TestApp, ready: impl Fn(&Value) -> bool) -> Value {
    wait_for_value("the quota report", || async {
        let resp = reqwest::get(app.url("/api/quota")).await.ok()?;
        let body: Value = resp.json().await.ok()?;
        (body.get("production").is_some() && ready(&body)).then_some(body)
    })
    .await
}

/// Polls `probe` for up to a minute until it gives a value.
async fn wait_for_value<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn an_objective_longer_than_retention_refuses_to_start_naming_both_settings() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules: []\nslos:\n  - {name: Avail, indicator: availability, objective: 99.5, period: 28d}\n",
    )
    .unwrap();
    let run = |retention_10m: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zai-dash"));
        for var in ["LISTEN_ADDR", "RETENTION_5S", "RETENTION_1M", "SOURCE", "PROMETHEUS_URL", "DASHBOARD_TOKEN"] {
            cmd.env_remove(var);
        }
        cmd.arg("serve")
            .env("SCRAPE_TARGETS", "http://127.0.0.1:9/metrics")
            .env("DB_PATH", dir.path().join("z.db"))
            .env("ALERT_RULES", &rules)
            .env("RETENTION_10M", retention_10m)
            .env("LISTEN_ADDR", "127.0.0.1:0");
        cmd
    };
    let out = common::process::output(&mut run("7d"), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("field `period`") && stderr.contains("RETENTION_10M"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
}

const OBJECTIVES: &str = "rules: []\nslos:\n  - {name: Avail, indicator: availability, objective: 99}\n";

/// The status of objective `Avail` for `variant` in `/api/slos`.
async fn slo(app: &TestApp, variant: &str) -> Option<Value> {
    let list = app.json("/api/slos").await;
    list.as_array()?.iter().find(|s| s["name"] == "Avail" && s["variant"] == variant).cloned()
}

/// Alert evaluations zai-dash has made since it started.
async fn evaluations(app: &TestApp) -> u64 {
    self_metrics::read_one(&app.base, "zai_dash_alert_evaluations_total").await as u64
}

/// `(alertname, variant)` of every pending or firing alert of `/api/alerts`.
async fn active(app: &TestApp) -> Vec<(String, String)> {
    let body = app.json("/api/alerts").await;
    let alerts = body["data"]["alerts"].as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    alerts.iter().map(|a| (s(&a["labels"]["alertname"]), s(&a["labels"]["variant"]))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_burn_pages_through_alertmanager_and_a_slow_one_never_does() {
    // Objective 99 %: a 1 % error budget. `hot` fails 20 % of requests (burn 20, above the
    // page's 14.4), `cool` 0.5 % (burn 0.5).
    let hot = FakeTarget::start(Sim { err_rate: 10.0, ..Sim::new("hot", 40.0) }, Behaviour::Healthy).await;
    let cool = FakeTarget::start(Sim { err_rate: 2.0, ..Sim::new("cool", 398.0) }, Behaviour::Healthy).await;
    let am = harness::alertmanager::Alertmanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&hot.url, &cool.url]));
    s.alerts = alert_settings(OBJECTIVES);
    s.alerts.alertmanager_url = Some(url::Url::parse(&am.server.base).unwrap());
    let app = TestApp::start(s).await;

    // Every poll of the alerts looks for a page of `cool`, from the first tick on.
    let seen_cool_page = AtomicBool::new(false);
    let look = || async {
        if active(&app).await.contains(&("AvailBurnRatePage".to_owned(), "cool".to_owned())) {
            seen_cool_page.store(true, Ordering::SeqCst);
        }
    };
    let page = wait_for_value("AvailBurnRatePage of hot in Alertmanager", || async {
        look().await;
        am.alert("AvailBurnRatePage", "hot").await
    })
    .await;
    assert_eq!(page["labels"]["severity"], "critical");
    assert!(page["annotations"]["summary"].as_str().unwrap().contains("14.4x over 1h and 5m"), "{page}");

    // Burn rates as known: 20 and 0.5 (every window holds the same traffic so far).
    let hot_slo = slo(&app, "hot").await.unwrap();
    let burn = hot_slo["burn_rates"]["5m"].as_f64().unwrap();
    assert!((burn - 20.0).abs() < 2.0, "hot burns at 20: {hot_slo}");
    assert!(hot_slo["error_budget_remaining"].as_f64().unwrap() < 0.0, "overspent: {hot_slo}");
    assert_eq!(hot_slo["alerts"][0]["state"], "firing");

    // The slow burn had every chance: evaluations after its burn settled, none pages.
    let settled = evaluations(&app).await;
    wait_for("ten more evaluations", Duration::from_secs(30), || async {
        look().await;
        evaluations(&app).await >= settled + 10
    })
    .await;
    let cool_slo = slo(&app, "cool").await.unwrap();
    let burn = cool_slo["burn_rates"]["5m"].as_f64().unwrap();
    assert!((burn - 0.5).abs() < 0.2, "cool burns at 0.5: {cool_slo}");
    assert_eq!(cool_slo["alerts"][0]["state"], "inactive", "{cool_slo}");
    assert!(!seen_cool_page.load(Ordering::SeqCst), "a 0.5x burn never pages");
    assert!(am.alert("AvailBurnRatePage", "cool").await.is_none());

    // The page shows both, with the budget left and the burn-rate charts.
    let html = reqwest::get(app.url("/slos")).await.unwrap().text().await.unwrap();
    assert!(html.contains("Avail · hot") && html.contains("Avail · cool"), "{html}");
    assert!(html.contains("Error budget left") && html.contains("Burn rate"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_is_projected_at_its_pace_and_a_spent_budget_alerts() {
    // 50 requests a second, each 100 input and 30 output tokens of glm-4.7: 1.26e-4 USD each.
    let sim = Sim { models: vec![("glm-4.7".into(), 1.0)], ..Sim::new("production", 50.0) };
    let target = FakeTarget::start(sim, Behaviour::Healthy).await;
    let am = harness::alertmanager::Alertmanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&target.url]));
    s.alerts = alert_settings("rules: []\n");
    s.alerts.budgets.daily_usd = Some(0.01);
    s.alerts.alertmanager_url = Some(url::Url::parse(&am.server.base).unwrap());
    let app = TestApp::start(s).await;
    let usd_per_second = 50.0 * (100.0 * 0.0006e-3 + 30.0 * 0.0022e-3);

    let fired = wait_for_value("DailySpend100 in Alertmanager", || am.alert("DailySpend100", "all")).await;
    assert_eq!(fired["labels"]["severity"], "critical");
    // The rate is measured from the start of the first 0.5 s bucket with data, whose first
    // scrape only sets the counters' baseline: 30 s of spend make that half second about 1 %.
    let report = wait_for_value("0.2 USD spent", || async {
        let r = app.json("/api/spend").await;
        (r["total"]["today_usd"].as_f64()? >= 0.2).then_some(r)
    })
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let model = &report["variants"]["production"]["models"]["glm-4.7"];
    let today = model["today_usd"].as_f64().unwrap();
    assert!(model["month_usd"].as_f64().unwrap() >= today, "{report}");
    let day_end = report["day_start"].as_i64().unwrap() + 86_400_000;
    let expected = today + usd_per_second * (day_end - now) as f64 / 1000.0;
    let projected = model["projected_day_usd"].as_f64().unwrap();
    eprintln!("projected day {projected}, at its pace {expected}, ratio {}", projected / expected);
    assert!((projected - expected).abs() <= 0.05 * expected, "projected {projected}, at its pace {expected}");
    let month = model["month_usd"].as_f64().unwrap();
    let month_end = month_end_ms(now);
    let expected_month = month + usd_per_second * (month_end - now) as f64 / 1000.0;
    let projected_month = model["projected_month_usd"].as_f64().unwrap();
    assert!(
        (projected_month - expected_month).abs() <= 0.05 * expected_month,
        "projected month {projected_month}, at its pace {expected_month}"
    );
    let daily = &report["budgets"]["daily"];
    assert_eq!(daily["budget_usd"], 0.01);
    assert_eq!(daily["actual_level"], "over_100");
    assert_eq!(daily["projected_level"], "over_100");
    assert!(report["budgets"]["monthly"].is_null(), "no monthly budget set: {report}");
    // The overview's spend card, server-rendered (no script needed to read it).
    let html = reqwest::get(app.url("/")).await.unwrap().text().await.unwrap();
    let card = html.split("id=\"spend-card\"").nth(1).and_then(|c| c.split("</article>").next()).unwrap_or("");
    assert!(card.contains("Day at this pace") && card.contains("This month"), "{html}");
    assert!(card.contains("Daily budget $0.01") && card.contains("class=\"danger\""), "{card}");
    wait_for_value("DailySpendProjected100 in Alertmanager", || am.alert("DailySpendProjected100", "all")).await;
    assert!(am.alert("MonthlySpend80", "all").await.is_none(), "no monthly budget, no monthly alert");
    app.stop().await;
}

/// Midnight UTC of the first day of the month after the one holding `now_ms`.
fn month_end_ms(now_ms: i64) -> i64 {
    use chrono::{Datelike, TimeZone};
    let now = chrono::Utc.timestamp_millis_opt(now_ms).unwrap();
    let (y, m) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    chrono::Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap().timestamp_millis()
}

#[test]
fn a_bad_budget_refuses_to_start_in_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, value) in [("BUDGET_DAILY_USD", "-5"), ("BUDGET_MONTHLY_USD", "lots"), ("BUDGET_DAILY_USD", "NaN")] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zai-dash"));
        for var in
            ["LISTEN_ADDR", "SOURCE", "PROMETHEUS_URL", "DASHBOARD_TOKEN", "BUDGET_DAILY_USD", "BUDGET_MONTHLY_USD"]
        {
            cmd.env_remove(var);
        }
        cmd.arg("serve")
            .env("SCRAPE_TARGETS", "http://127.0.0.1:9/metrics")
            .env("DB_PATH", dir.path().join("z.db"))
            .env(setting, value)
            .env("LISTEN_ADDR", "127.0.0.1:0");
        let out = common::process::output(&mut cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{setting}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(setting) && stderr.contains(value), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    }
}

/// Callers of a fake proxy: bucket `source-NN` is admitted `NN + 1` times a second, each after
/// a wait between 50 and 100 ms (80 ms summed); `source-11` also has 2 capacity rejections a
/// second. The rest of the exposition is a [`Sim`]'s.
#[derive(Clone)]
struct Callers {
    sim: Sim,
    started: std::time::Instant,
    /// When the first scrape came.
    first_scrape: Arc<std::sync::OnceLock<std::time::Instant>>,
}

impl Callers {
    fn render(&self) -> String {
        self.first_scrape.get_or_init(std::time::Instant::now);
        let t = self.started.elapsed().as_secs_f64();
        let v = &self.sim.variant;
        let mut s = self.sim.render();
        s += "# TYPE zai_proxy_rate_limit_rejections_total counter\n";
        s += &format!(
            "zai_proxy_rate_limit_rejections_total{{client=\"source-11\",variant=\"{v}\"}} {}\n",
            (2.0 * t).floor()
        );
        s += "# TYPE zai_proxy_rate_limit_wait_seconds histogram\n";
        for i in 0..12 {
            let n = ((i as f64 + 1.0) * t).floor();
            let labels = format!("client=\"source-{i:02}\",variant=\"{v}\"");
            for (le, c) in [("0.05", 0.0), ("0.1", n), ("+Inf", n)] {
                s += &format!("zai_proxy_rate_limit_wait_seconds_bucket{{{labels},le=\"{le}\"}} {c}\n");
            }
            s += &format!("zai_proxy_rate_limit_wait_seconds_sum{{{labels}}} {}\n", n * 0.08);
            s += &format!("zai_proxy_rate_limit_wait_seconds_count{{{labels}}} {n}\n");
        }
        s
    }
}

async fn callers_exposition(State(c): State<Arc<Callers>>) -> String {
    c.render()
}

/// The cells of each row of the overview's "Who is waiting" table.
fn waiting_rows(html: &str) -> Vec<Vec<String>> {
    let Some(panel) = html.split("id=\"panel-waiting\"").nth(1).and_then(|p| p.split("</figure>").next()) else {
        return Vec::new();
    };
    let body = panel.split("<tbody>").nth(1).unwrap_or("");
    body.split("</tr>")
        .filter(|r| r.contains("<td"))
        .map(|r| r.split("<td").skip(1).map(|c| c.split_once('>').map_or("", |x| x.1).replace("</td>", "")).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_is_waiting_ranks_the_caller_buckets_and_folds_all_but_ten() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let first_scrape = Arc::new(std::sync::OnceLock::new());
    let callers = Arc::new(Callers {
        sim: Sim::new("production", 10.0),
        started: std::time::Instant::now(),
        first_scrape: first_scrape.clone(),
    });
    let cancel = CancellationToken::new();
    let app = Router::new().route("/metrics", get(callers_exposition)).with_state(callers);
    let c = cancel.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&url]))).await;

    // Until the slowest bucket has waited in the range (one admission a second), and the
    // scrapes span 3 s: bucket i's increase over a span d is (i + 1)·d within ±1, so
    // neighbours differ by d - 2 and their order is settled (after a few 200 ms scrapes two
    // neighbours can tie, and the test failed on a loaded machine).
    let rows = wait_for_value("every bucket in the waiting panel", || async {
        let settled = first_scrape.get().is_some_and(|f| f.elapsed() >= Duration::from_secs(3));
        let html = reqwest::get(app.url("/?range=5m")).await.ok()?.text().await.ok()?;
        let rows = waiting_rows(&html);
        (settled && rows.len() == 11 && rows[10][1] == "2 other buckets" && rows[10][2] != "0").then_some(rows)
    })
    .await;
    let callers: Vec<&str> = rows.iter().take(10).map(|r| r[1].as_str()).collect();
    let expected: Vec<String> = (2..12).rev().map(|i| format!("source-{i:02}")).collect();
    assert_eq!(callers, expected, "longest total wait first: {rows:?}");
    for r in &rows {
        // Every wait in (50 ms, 100 ms]: Prometheus' interpolation puts the p95 at 97.5 ms.
        assert_eq!(r[3], "97.5 ms", "{rows:?}");
    }
    assert_eq!(rows[0][0], "production");
    assert_ne!(rows[0][5], "0", "source-11 is rejected: {rows:?}");
    assert!(rows[1..].iter().all(|r| r[5] == "0"), "nobody else is: {rows:?}");
    app.stop().await;
    cancel.cancel();
}
