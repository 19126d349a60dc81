//! Objectives exported as Prometheus rules (issue 21): `zai-dash rules --prometheus` with a
//! rules file holding `slos:` passes `promtool check rules`, and `promtool test rules` over
//! synthetic `zai_proxy_*` series fires exactly the burn-rate alerts that zai-dash's own
//! evaluation (`budget::slo::evaluate`) fires on the same traffic.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;
use zai_dash::alerts::rules::parse_rules_file;
use zai_dash::budget::slo::{Indicator, SloCounts, evaluate};

const RULES: &str = r#"rules:
  - name: HighErrorRate
    expr: error_rate_pct
    threshold: 5
slos:
  - name: Avail
    indicator: availability
    objective: 99.5
  - name: Fast
    variant: "*"
    indicator: latency
    threshold: 1
    objective: 99
  - name: CanaryFirstToken
    variant: canary
    indicator: ttft
    threshold: 2
    objective: 95
    period: 7d
"#;

/// Minutes of synthetic traffic; the alerts are evaluated at the last one.
const MINUTES: usize = 150;

/// One variant's traffic: per minute (1..=MINUTES), `(requests, 5xx, within 1 s)`, and how the
/// duration histogram spells its `le="1"` bound (Prometheus 3 stores `1.0`).
struct Traffic {
    variant: &'static str,
    le: &'static str,
    minute: fn(usize) -> (f64, f64, f64),
}

const TRAFFIC: [Traffic; 5] = [
    // 10 % 5xx (burn 20 at 99.5 %), 99.5 % fast (burn 0.5 at 99 %).
    Traffic { variant: "production", le: "1", minute: |_| (1000.0, 100.0, 995.0) },
    // 2 % 5xx (burn 4: a ticket, no page); 80 % fast (burn 20: page and ticket).
    Traffic { variant: "test", le: "1.0", minute: |_| (500.0, 10.0, 400.0) },
    // 20 % 5xx for two hours, then none: the page resets, the ticket stays.
    Traffic { variant: "stable", le: "1", minute: |m| (100.0, if m <= 120 { 20.0 } else { 0.0 }, 100.0) },
    // 0.25 % 5xx (burn 0.5); 98.5 % fast (burn 1.5: a ticket over 3 d and 6 h).
    Traffic { variant: "canary", le: "1", minute: |_| (4000.0, 10.0, 3940.0) },
    // Never a 5xx, so no 5xx series at all: its error ratio is 0, not missing.
    Traffic { variant: "clean", le: "1", minute: |_| (50.0, 0.0, 50.0) },
];

fn promtool() -> PathBuf {
    for c in [PathBuf::from("/usr/bin/promtool"), PathBuf::from("promtool")] {
        if Command::new(&c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c;
        }
    }
    panic!("`promtool` is not installed: run scripts/test, which installs Debian's `prometheus` package.");
}

/// `zai-dash rules --prometheus` with [`RULES`], checked by `promtool check rules`.
fn export_and_check(dir: &Path) -> String {
    std::fs::write(dir.join("zai-rules.yaml"), RULES).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zai-dash"))
        .args(["rules", "--prometheus"])
        .env("ALERT_RULES", dir.join("zai-rules.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "nothing left out: {}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    std::fs::write(dir.join("prom-rules.yml"), &yaml).unwrap();
    let check = Command::new(promtool()).arg("check").arg("rules").arg(dir.join("prom-rules.yml")).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "promtool: {report}\n{yaml}");
    assert!(report.contains("SUCCESS: 37 rules found"), "1 rule + 3 objectives x 12: {report}");
    yaml
}

#[test]
fn exported_objectives_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = export_and_check(dir.path());
    let doc: Value = serde_norway::from_str(&yaml).unwrap();
    let groups: Vec<&str> = doc["groups"].as_sequence().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(groups, ["zai-dash", "zai-dash-slo-Avail", "zai-dash-slo-Fast", "zai-dash-slo-CanaryFirstToken"]);
    assert!(yaml.contains("record: slo:sli_error:ratio_rate7d"), "the 7d period is recorded");
    assert!(
        yaml.contains("zai_proxy_time_to_first_token_seconds_bucket{le=~\"2|2\\\\.0\",variant=\"canary\"}"),
        "{yaml}"
    );
}

/// Cumulative values of one series, one per minute from 0.
fn values(per_minute: impl Fn(usize) -> f64) -> String {
    let mut total = 0.0;
    let mut out = vec!["0".to_owned()];
    for m in 1..=MINUTES {
        total += per_minute(m);
        out.push(format!("{total}"));
    }
    out.join(" ")
}

/// The input series of every variant.
fn input_series() -> Vec<Value> {
    let mut out = Vec::new();
    let mut series = |name: String, v: String| {
        let mut m = serde_norway::Mapping::new();
        m.insert("series".into(), name.into());
        m.insert("values".into(), v.into());
        out.push(Value::Mapping(m));
    };
    for t in &TRAFFIC {
        let (v, f) = (t.variant, t.minute);
        series(format!("zai_proxy_requests_total{{variant=\"{v}\",status_code=\"200\"}}"), values(|m| f(m).0 - f(m).1));
        if (1..=MINUTES).any(|m| f(m).1 > 0.0) {
            series(format!("zai_proxy_requests_total{{variant=\"{v}\",status_code=\"503\"}}"), values(|m| f(m).1));
        }
        let hist = "zai_proxy_request_duration_seconds";
        series(format!("{hist}_bucket{{variant=\"{v}\",le=\"{}\"}}", t.le), values(|m| f(m).2));
        series(format!("{hist}_count{{variant=\"{v}\"}}"), values(|m| f(m).0));
    }
    out
}

/// zai-dash's counts of the same traffic over `(end - window, end]` (end = the last minute).
fn counts(indicator: &Indicator, variant: &str, window_ms: i64, end_ms: i64) -> Option<SloCounts> {
    assert_eq!(end_ms, MINUTES as i64 * 60_000);
    let t = TRAFFIC.iter().find(|t| t.variant == variant)?;
    let first = MINUTES.saturating_sub((window_ms / 60_000) as usize) + 1;
    let (mut good, mut total) = (0.0, 0.0);
    for m in first..=MINUTES {
        let (requests, errors, fast) = (t.minute)(m);
        let (g, n) = match indicator {
            Indicator::Availability => (requests - errors, requests),
            Indicator::Latency { .. } => (fast, requests),
            Indicator::Ttft { .. } => return None,
        };
        good += g;
        total += n;
    }
    Some(SloCounts { good, total })
}

/// The annotations Prometheus fills in for `variant`, from the exported templates.
fn annotations_for(doc: &Value, alert: &str, variant: &str) -> Value {
    let rule = doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .find(|r| r["alert"].as_str() == Some(alert))
        .unwrap();
    let mut out = serde_norway::Mapping::new();
    for (k, v) in rule["annotations"].as_mapping().unwrap() {
        out.insert(k.clone(), v.as_str().unwrap().replace("{{ $labels.variant }}", variant).into());
    }
    Value::Mapping(out)
}

#[test]
fn prometheus_fires_the_burn_rate_alerts_zai_dash_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = export_and_check(dir.path());
    let doc: Value = serde_norway::from_str(&yaml).unwrap();
    let slos = parse_rules_file(RULES, "test").unwrap().slos;
    let now_ms = MINUTES as i64 * 60_000;

    // What zai-dash fires, per alert name: the labels of each firing variant.
    let mut tests = Vec::new();
    let mut firing = Vec::new();
    for slo in slos.iter().filter(|s| s.indicator != Indicator::Ttft { threshold_s: 2.0 }) {
        let statuses: Vec<_> = TRAFFIC.iter().map(|t| evaluate(slo, t.variant, &counts, now_ms)).collect();
        for (i, alert) in statuses[0].alerts.iter().enumerate() {
            let mut exp = Vec::new();
            for s in statuses.iter().filter(|s| s.alerts[i].state.as_str() == "firing") {
                firing.push(format!("{} {}", s.alerts[i].alert, s.variant));
                let labels = format!("{{severity: {}, slo: {}, variant: {}}}", alert.severity, slo.name, s.variant);
                let mut e = serde_norway::Mapping::new();
                e.insert("exp_labels".into(), serde_norway::from_str::<Value>(&labels).unwrap());
                e.insert("exp_annotations".into(), annotations_for(&doc, &alert.alert, &s.variant));
                exp.push(Value::Mapping(e));
            }
            let mut t = serde_norway::Mapping::new();
            t.insert("eval_time".into(), format!("{MINUTES}m").into());
            t.insert("alertname".into(), alert.alert.clone().into());
            t.insert("exp_alerts".into(), Value::Sequence(exp));
            tests.push(Value::Mapping(t));
        }
    }
    firing.sort();
    assert_eq!(
        firing,
        [
            "AvailBurnRatePage production",
            "AvailBurnRateTicket production",
            "AvailBurnRateTicket stable",
            "AvailBurnRateTicket test",
            "FastBurnRatePage test",
            "FastBurnRateTicket canary",
            "FastBurnRateTicket test",
        ],
        "the traffic covers every combination the test means to"
    );

    // The recorded budget left matches the evaluation too: canary's 0.25 % of 0.5 % is half,
    // and a variant without any 5xx has all of it.
    let untouched = evaluate(&slos[0], "clean", &counts, now_ms).error_budget_remaining;
    assert_eq!(untouched, Some(1.0));
    let remaining = evaluate(&slos[0], "canary", &counts, now_ms).error_budget_remaining.unwrap();
    assert!((remaining - 0.5).abs() < 1e-9);
    let near_half = "slo:error_budget_remaining:ratio{slo=\"Avail\",variant=\"canary\"}";
    let check = format!("({near_half} > bool 0.499) * ({near_half} < bool 0.501)");
    let unit = serde_norway::to_string(&serde_json::json!({
        "rule_files": ["prom-rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series(),
            "alert_rule_test": tests,
            "promql_expr_test": [{
                "expr": check,
                "eval_time": format!("{MINUTES}m"),
                "exp_samples": [{"labels": "{slo=\"Avail\",variant=\"canary\"}", "value": 1}]
            }, {
                "expr": "slo:error_budget_remaining:ratio{slo=\"Avail\",variant=\"clean\"}",
                "eval_time": format!("{MINUTES}m"),
                "exp_samples": [{"labels": "slo:error_budget_remaining:ratio{slo=\"Avail\",variant=\"clean\"}", "value": 1}]
            }]
        }]
    }))
    .unwrap();
    std::fs::write(dir.path().join("unit.yml"), &unit).unwrap();
    let run = Command::new(promtool()).args(["test", "rules", "unit.yml"]).current_dir(dir.path()).output().unwrap();
    assert!(
        run.status.success(),
        "promtool test rules:\n{}{}\n{unit}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
