//! Alerts end to end (issue 12; docs/decisions.md, Alerts), with real components on loopback:
//! zai-dash scraping fake zai-proxy targets, a real Alertmanager (Debian's binary), a local
//! webhook receiver, `promtool`, and a real Prometheus evaluating the exported rules over the
//! same fake targets. Rules use windows and `for` of a few seconds so the suite stays short.
//!
//! A check that something does *not* happen first waits until it could have happened, as
//! counted by the servers themselves (zai-dash's `zai_dash_alert_evaluations_total`,
//! Prometheus' rule group iterations), never for a fixed time.

mod common;
#[path = "alerts/mod.rs"]
mod harness;
mod self_metrics;

use std::time::{Duration, Instant};

use common::*;
use harness::alertmanager::Alertmanager;
use harness::prometheus::Prometheus;
use harness::receiver::{Hanging, Receiver};
use serde_json::Value;
use zai_dash::alerts::AlertSettings;
use zai_dash::alerts::rules::parse_rules;

/// Alert settings for tests: `rules`, fast resends and retries.
fn alert_settings(rules: &str) -> AlertSettings {
    AlertSettings {
        rules: parse_rules(rules, "test rules").unwrap(),
        resend_interval: Duration::from_secs(1),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        ..AlertSettings::default()
    }
}

/// Polls `probe` until it returns something, or panics naming `what`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

async fn text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Alert evaluations zai-dash has made since it started.
async fn evaluations(app: &TestApp) -> u64 {
    self_metrics::read_one(&app.base, "zai_dash_alert_evaluations_total").await as u64
}

/// Returns once an evaluation has begun after this call: the count is read, then two more
/// are awaited (the first of them may have been under way when the count was read).
async fn an_evaluation_after_now(app: &TestApp) {
    let seen = evaluations(app).await;
    wait_for("two more alert evaluations", Duration::from_secs(30), || async { evaluations(app).await >= seen + 2 })
        .await;
}

/// The longest `for` of a rule file.
fn longest_for(rules: &str) -> Duration {
    let rules = parse_rules(rules, "test rules").unwrap();
    rules.iter().map(|r| Duration::from_millis(r.for_ms.unsigned_abs())).max().unwrap_or_default()
}

/// For a check that an alert does *not* fire: returns once every rule of `rules` whose
/// condition holds from now on has had its chance. The first evaluation that begins after now
/// sees such a condition (the rule turns pending, or fires at once without `for`); the first
/// one that begins the longest `for` after that fires it. Both are counted by zai-dash, so a
/// starved machine that evaluates late makes this wait longer instead of letting the check
/// pass before any evaluation happened.
async fn until_every_rule_had_its_chance(app: &TestApp, rules: &str) {
    an_evaluation_after_now(app).await;
    // Deliberate: the longest `for` has to pass in zai-dash before a pending rule may fire.
    tokio::time::sleep(longest_for(rules)).await;
    an_evaluation_after_now(app).await;
}

/// `(alertname, variant, state)` of every alert `/api/alerts` lists (pending and firing).
async fn pending_and_firing(app: &TestApp) -> Vec<(String, String, String)> {
    let body = app.json("/api/alerts").await;
    let mut out: Vec<(String, String, String)> = body["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (s(&a["labels"]["alertname"]), s(&a["labels"]["variant"]), s(&a["state"]))
        })
        .collect();
    out.sort();
    out
}

/// The receivers' line of the `/alerts` page shows an empty mailbox for every receiver.
async fn nothing_waits_for_a_receiver(app: &TestApp) -> bool {
    let page = text(&app.url("/alerts")).await;
    let lines: Vec<&str> = page.lines().filter(|l| l.contains(" waiting")).collect();
    !lines.is_empty() && lines.iter().all(|l| l.contains(", 0 waiting"))
}

/// Reads the live stream from the start of its ring until a line contains `needle`.
async fn sse_line_with(app: &TestApp, needle: &str) -> Option<String> {
    let client = reqwest::Client::new();
    let mut resp = client.get(app.url("/api/events")).header("last-event-id", "0").send().await.ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await;
        if let Ok(Ok(Some(bytes))) = chunk {
            seen.push_str(&String::from_utf8_lossy(&bytes));
            if let Some(line) = seen.lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
        }
    }
    None
}

const ERROR_RULES: &str = r#"rules:
  - name: HighErrorRate
    variant: "*"
    expr: error_rate_pct
    op: ">"
    threshold: 5
    window: 2s
    for: 1s
    min_requests: 10
    severity: critical
    summary: "5xx share of {{ variant }} is {{ value }} %"
  - name: ImpossibleTraffic
    expr: req_rate
    threshold: 1000000
    window: 2s
    severity: warning
"#;

/// A rule crossing its threshold reaches Alertmanager with its labels and annotations, is
/// listed by `/api/alerts`, the `/alerts` page, the strip, the live stream and self-metrics,
/// and is shaded on the error chart; a rule that cannot fire and a healthy variant stay silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossed_threshold_reaches_alertmanager_and_every_view() {
    let am = Alertmanager::start().await;
    let production = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let mut bad = Sim::new("canary", 20.0);
    bad.err_rate = 20.0;
    let canary = FakeTarget::start(bad, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&production.url, &canary.url]));
    s.alerts = AlertSettings { alertmanager_url: Some(am.server.base.parse().unwrap()), ..alert_settings(ERROR_RULES) };
    let app = TestApp::start(s).await;

    let alert =
        eventually("HighErrorRate in Alertmanager", Duration::from_secs(30), || am.alert("HighErrorRate", "canary"))
            .await;
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"].as_object().unwrap().len(), 3, "alertname, variant, severity: {alert}");
    assert_eq!(alert["annotations"]["threshold"], "> 5");
    // The canary's 2xx and 5xx counters are both floor(20 t) of the same t in each exposition,
    // so every scrape adds as many of one as of the other: the share is 50 % exactly, whatever
    // the window holds. The annotation has three decimals.
    let value: f64 = alert["annotations"]["value"].as_str().unwrap().parse().unwrap();
    assert!((value - 50.0).abs() < 1e-3, "modelled 50 %: {alert}");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("5xx share of canary is "), "{summary}");
    assert!(alert["annotations"]["description"].as_str().unwrap().contains("error_rate_pct > 5 over 2s on canary"));

    let listed = app.json("/api/alerts").await;
    assert_eq!(listed["status"], "success");
    let mine = listed["data"]["alerts"].as_array().unwrap();
    let firing: Vec<&Value> = mine.iter().filter(|a| a["state"] == "firing").collect();
    assert_eq!(firing.len(), 1, "{listed}");
    assert_eq!(firing[0]["labels"]["variant"], "canary");
    assert!(firing[0]["value"].as_str().unwrap().contains("e+01"), "Prometheus' value format: {listed}");

    let page = text(&app.url("/alerts")).await;
    assert!(page.contains("HighErrorRate") && page.contains("badge firing") && page.contains("ImpossibleTraffic"));
    assert!(page.contains("alertmanager"), "the receiver and its last delivery");
    assert!(
        text(&app.url("/targets")).await.contains("<strong>HighErrorRate</strong> (canary, critical)"),
        "the strip"
    );
    let event = sse_line_with(&app, "\"type\":\"alert\"").await.expect("an alert event on the live stream");
    assert!(event.contains("\"alertname\":\"HighErrorRate\""), "{event}");
    let [firing_now, delivered] = self_metrics::read(
        &app.base,
        ["zai_dash_alerts{state=\"firing\"}", "zai_dash_alert_deliveries_total{receiver=\"alertmanager\"}"],
    )
    .await;
    assert_eq!(firing_now, 1.0);
    assert!(delivered > 0.0);
    let overview = eventually("a shaded firing period", Duration::from_secs(30), || async {
        let html = text(&app.url("/?range=5m")).await;
        html.contains("<rect class=\"mark alert\"").then_some(html)
    })
    .await;
    assert!(overview.contains("HighErrorRate (canary, critical) firing from"));

    // Alertmanager hears the alert again every second (each resend is a delivery), and it
    // stays active there.
    wait_for("two more deliveries to Alertmanager", Duration::from_secs(30), || async {
        let now = self_metrics::read_one(&app.base, "zai_dash_alert_deliveries_total{receiver=\"alertmanager\"}").await;
        now >= delivered + 2.0
    })
    .await;
    // Nothing else fires: not the impossible rule, not the healthy production variant.
    until_every_rule_had_its_chance(&app, ERROR_RULES).await;
    let want = [("HighErrorRate".to_owned(), "canary".to_owned(), "firing".to_owned())];
    assert_eq!(pending_and_firing(&app).await, want);
    let active = am.alerts().await;
    let names: Vec<(String, String)> = active
        .iter()
        .map(|a| (a["labels"]["alertname"].as_str().unwrap().into(), a["labels"]["variant"].as_str().unwrap().into()))
        .collect();
    assert_eq!(names, [("HighErrorRate".to_owned(), "canary".to_owned())]);
    app.stop().await;
}

const DOWN_RULES: &str = r#"rules:
  - name: TargetDown
    expr: target_down
    threshold: 0
    for: 1s
    severity: critical
"#;

/// A dying target fires in Alertmanager; when it returns the alert resolves there (ends, so
/// Alertmanager no longer lists it as active).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_target_fires_and_resolves_in_alertmanager() {
    let am = Alertmanager::start().await;
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&target.url]));
    s.alerts = AlertSettings { alertmanager_url: Some(am.server.base.parse().unwrap()), ..alert_settings(DOWN_RULES) };
    let app = TestApp::start(s).await;
    wait_for("a first scrape", Duration::from_secs(30), || async { target.scrapes() > 2 }).await;
    until_every_rule_had_its_chance(&app, DOWN_RULES).await;
    assert_eq!(pending_and_firing(&app).await, [], "nothing is pending or fires while the target is up");
    assert!(am.alerts().await.is_empty(), "nothing reached Alertmanager");

    *target.behaviour.lock().unwrap() = Behaviour::Down;
    let alert = eventually("TargetDown firing", Duration::from_secs(30), || am.alert("TargetDown", "production")).await;
    assert_eq!(alert["annotations"]["value"], "1");
    assert_eq!(alert["status"]["state"], "active");

    *target.behaviour.lock().unwrap() = Behaviour::Healthy;
    eventually("TargetDown resolved", Duration::from_secs(30), || async {
        am.alert("TargetDown", "production").await.is_none().then_some(())
    })
    .await;
    let listed = app.json("/api/alerts").await;
    assert!(listed["data"]["alerts"].as_array().unwrap().is_empty(), "{listed}");
    app.stop().await;
}

/// The webhook gets Alertmanager's webhook JSON once when an alert fires and once when it
/// resolves; restarting zai-dash (same database) sends neither again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_messages_are_sent_once_across_restarts() {
    let hook = Receiver::start().await;
    let mut bad = Sim::new("canary", 20.0);
    bad.err_rate = 20.0;
    let canary = FakeTarget::start(bad, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&canary.url]));
    s.alerts = AlertSettings { webhook_url: Some(hook.url.parse().unwrap()), ..alert_settings(ERROR_RULES) };

    let app = TestApp::start(s.clone()).await;
    let fired =
        eventually("a firing message", Duration::from_secs(30), || async { hook.bodies().first().cloned() }).await;
    assert_eq!((fired["version"].as_str(), fired["status"].as_str()), (Some("4"), Some("firing")), "{fired}");
    assert_eq!(fired["commonLabels"]["alertname"], "HighErrorRate");
    assert_eq!(fired["alerts"][0]["labels"]["variant"], "canary");
    assert_eq!(fired["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(fired["alerts"][0]["fingerprint"].as_str().map(str::len), Some(16));
    app.stop().await;

    // What a restart would send again, it posts before its first evaluation. The receiver sends
    // one message at a time, in order: once that post has left the mailbox, the next message
    // the test causes arrives after it. So each restart is followed by a message the test
    // expects, and nothing may come before it.
    let app = TestApp::start(s.clone()).await;
    an_evaluation_after_now(&app).await;
    wait_for("an empty mailbox", Duration::from_secs(30), || nothing_waits_for_a_receiver(&app)).await;
    canary.sim.lock().unwrap().err_rate = 0.0;
    let resolved =
        eventually("a resolved message", Duration::from_secs(30), || async { hook.bodies().get(1).cloned() }).await;
    assert_eq!(resolved["status"], "resolved", "a restart does not re-notify a firing alert: {:?}", hook.bodies());
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    app.stop().await;

    let app = TestApp::start(s).await;
    an_evaluation_after_now(&app).await;
    wait_for("an empty mailbox", Duration::from_secs(30), || nothing_waits_for_a_receiver(&app)).await;
    let page = text(&app.url("/alerts")).await;
    assert!(page.contains("badge resolved"), "the page remembers the episode");
    assert!(!page.contains("secret-token"), "a webhook URL's path is never shown");
    canary.sim.lock().unwrap().err_rate = 20.0;
    let again =
        eventually("a new episode's message", Duration::from_secs(30), || async { hook.bodies().get(2).cloned() })
            .await;
    assert_eq!(again["status"], "firing", "a restart does not re-send a resolved alert: {:?}", hook.bodies());
    app.stop().await;
}

/// `ALERT_WEBHOOK_FORMAT=slack`: one `{"text": ...}` line saying what, where and how bad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_are_one_line_of_text() {
    let hook = Receiver::start().await;
    let mut bad = Sim::new("canary", 20.0);
    bad.err_rate = 20.0;
    let canary = FakeTarget::start(bad, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&canary.url]));
    s.alerts = AlertSettings {
        webhook_url: Some(hook.url.parse().unwrap()),
        webhook_format: zai_dash::alerts::Format::Slack,
        ..alert_settings(ERROR_RULES)
    };
    let app = TestApp::start(s).await;
    let msg = eventually("a Slack message", Duration::from_secs(30), || async { hook.bodies().first().cloned() }).await;
    let body = msg.as_object().unwrap();
    assert_eq!(body.keys().collect::<Vec<_>>(), ["text"], "{msg}");
    let line = body["text"].as_str().unwrap();
    assert!(line.starts_with("[FIRING:critical] HighErrorRate (canary): 5xx share of canary is "), "{line}");
    assert!(line.ends_with("threshold &gt; 5)"), "Slack shows &gt; as >: {line}");
    app.stop().await;
}

/// A receiver that is down is retried with backoff and counted, and one that hangs holds up
/// nothing: not scraping, not the pages, not the alert's own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_counted_and_delays_nothing() {
    let mut bad = Sim::new("canary", 20.0);
    bad.err_rate = 20.0;
    let canary = FakeTarget::start(bad, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&canary.url]));
    let dead = dead_url().await.replace("/metrics", "/hook");
    let hanging = Hanging::start().await;
    s.alerts = AlertSettings {
        webhook_url: Some(dead.parse().unwrap()),
        alertmanager_url: Some(hanging.url.parse().unwrap()),
        ..alert_settings(ERROR_RULES)
    };
    let app = TestApp::start(s).await;
    let failures = "zai_dash_alert_delivery_failures_total{receiver=\"webhook\"}";
    wait_for("failed deliveries counted", Duration::from_secs(30), || async {
        self_metrics::read_one(&app.base, failures).await >= 2.0
    })
    .await;
    wait_for("a delivery hanging", Duration::from_secs(30), || async { !hanging.open().is_empty() }).await;
    let hung = hanging.open();
    let before = canary.scrapes();
    let page = text(&app.url("/alerts")).await;
    // The page answered while a delivery it could have waited for was still hanging.
    assert!(hung.intersection(&hanging.open()).next().is_some(), "the page does not wait for a receiver");
    assert!(page.contains("connection failed"), "the last failure is shown");
    assert!(page.contains("badge firing"));
    wait_for("scrapes going on", Duration::from_secs(30), || async { canary.scrapes() > before + 5 }).await;
    app.stop().await;
}

const EXPORT_RULES: &str = r#"rules:
  - name: HighErrorRate
    expr: error_rate_pct
    threshold: 5
    window: 10s
    min_requests: 20
    severity: critical
    summary: "5xx share of {{ variant }} is {{ value }} %"
  - name: TargetDown
    expr: target_down
    threshold: 0
    severity: critical
  - name: CanaryFailing
    expr: canary_verdict
    op: "=="
    threshold: fail
    window: 10s
    severity: critical
  - name: SlowerThanUsual
    expr: latency_p95_ms / median_over_time(latency_p95_ms[1m])
    threshold: 2
    window: 10s
  - name: ImpossibleTraffic
    expr: req_rate
    threshold: 1000000
    window: 10s
"#;

/// Runs `zai-dash rules --prometheus` with `rules` (none: the built-in rules) and checks the
/// output with `promtool check rules`.
fn export_and_check(rules: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zai-dash"));
    cmd.args(["rules", "--prometheus"]).env_remove("ALERT_RULES");
    if let Some(r) = rules {
        std::fs::write(dir.path().join("zai-rules.yaml"), r).unwrap();
        cmd.env("ALERT_RULES", dir.path().join("zai-rules.yaml"));
    }
    let out = common::process::output(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "no rule left out: {}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    std::fs::write(dir.path().join("prom-rules.yml"), &yaml).unwrap();
    let promtool = harness::process::binary("promtool", "prometheus");
    let check = common::process::output(
        std::process::Command::new(promtool).arg("check").arg("rules").arg(dir.path().join("prom-rules.yml")),
        Duration::from_secs(60),
    );
    assert!(
        check.status.success(),
        "promtool: {}{}\n{yaml}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    yaml
}

fn firing_names(alerts: &[Value]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
            (label("alertname"), label("variant"))
        })
        .collect();
    names.sort();
    names
}

/// The exported rules (built-in and a test set) pass `promtool check rules`, and a real
/// Prometheus evaluating them over the same fake targets (and zai-dash's own `/metrics`, where
/// the canary verdict is) fires what zai-dash fires: the error share, the canary verdict and a
/// dead target, while the impossible rule, the healthy
/// variant and the steady latency stay silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_rules_pass_promtool_and_fire_on_prometheus_like_zai_dash() {
    export_and_check(None);
    let yaml = export_and_check(Some(EXPORT_RULES));
    let production = FakeTarget::start(Sim::new("production", 30.0), Behaviour::Healthy).await;
    let mut bad = Sim::new("canary", 15.0);
    bad.err_rate = 15.0;
    let canary = FakeTarget::start(bad, Behaviour::Healthy).await;
    let dying = FakeTarget::start(Sim::new("stable", 5.0), Behaviour::Healthy).await;
    let urls = [&production.url, &canary.url, &dying.url];
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&urls));
    s.alerts = alert_settings(EXPORT_RULES);
    let app = TestApp::start(s).await;
    // Prometheus also scrapes zai-dash itself: the canary rule reads its verdict gauge.
    let mut instances: Vec<String> =
        urls.iter().map(|u| u.trim_start_matches("http://").trim_end_matches("/metrics").to_owned()).collect();
    instances.push(app.base.trim_start_matches("http://").to_owned());
    let prom = Prometheus::start(&instances, &yaml).await;
    eventually("Prometheus scraped the dying target", Duration::from_secs(30), || async {
        (!prom.query("zai_proxy_build_info{variant=\"stable\"}").await.is_empty()).then_some(())
    })
    .await;
    *dying.behaviour.lock().unwrap() = Behaviour::Down;

    let want: Vec<(String, String)> =
        [("CanaryFailing", "canary"), ("HighErrorRate", "canary"), ("TargetDown", "stable")]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
    let prom_firing = eventually("Prometheus firing the same alerts", Duration::from_secs(40), || async {
        let names = firing_names(&prom.alerts().await);
        (names == want).then_some(names)
    })
    .await;
    let dash_firing = eventually("zai-dash firing them", Duration::from_secs(30), || async {
        let names = firing_names(app.json("/api/alerts").await["data"]["alerts"].as_array().unwrap());
        (names == want).then_some(names)
    })
    .await;
    assert_eq!(prom_firing, dash_firing);
    // The rules that must stay silent have no `for`: once each server evaluated again, they
    // would be firing.
    until_every_rule_had_its_chance(&app, EXPORT_RULES).await;
    assert_eq!(firing_names(app.json("/api/alerts").await["data"]["alerts"].as_array().unwrap()), want);
    prom.an_evaluation_after_now().await;
    assert_eq!(firing_names(&prom.alerts().await), want);
    let all = prom.alerts().await;
    let high = all.iter().find(|a| a["labels"]["alertname"] == "HighErrorRate").unwrap();
    assert_eq!(high["labels"]["severity"], "critical");
    assert!(high["annotations"]["summary"].as_str().unwrap().starts_with("5xx share of canary is "), "{high}");
    app.stop().await;
}

/// `serve` with a bad rule refuses to start with one sentence naming the rule and the field.
#[test]
fn a_bad_rule_refuses_to_start_naming_the_rule_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: CanaryErrors\n    expr: error_rate_pct\n    op: '=>'\n    threshold: 2\n",
    )
    .unwrap();
    let out = common::process::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_zai-dash"))
            .arg("serve")
            .env("ALERT_RULES", &rules)
            .env("SCRAPE_TARGETS", "http://127.0.0.1:1/metrics")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DB_PATH", dir.path().join("db.db")),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "zai-dash: ALERT_RULES rule \"CanaryErrors\": field `op` is \"=>\"; use >, >=, <, <=, == or !=.",
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing listens");
}
