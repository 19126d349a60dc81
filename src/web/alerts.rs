//! Alerts where people look: `GET /api/alerts` (Prometheus' `/api/v1/alerts` shape), the
//! `/alerts` page (rules, states, receivers), the strip every page shows while something fires,
//! and the firing periods shaded on the charts they concern.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::State;

use super::AppState;
use super::charts::Mark;
use super::chrome::Chrome;
use super::dashboard::View;
use crate::alerts::{AlertView, Scope};
use crate::clock::rfc3339_ms;
use crate::phase::AlertPhase;
use crate::ports::alert_state::AlertPeriod;

/// `GET /api/alerts`: pending and firing alerts, as Prometheus lists them.
pub(crate) async fn api(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.alerts.prometheus_json())
}

/// The panels a rule's metric is drawn on.
fn panels_of(metric: &str) -> &'static [&'static str] {
    match metric {
        "error_rate_pct" => &["errors"],
        "latency_p95_ms" => &["latency"],
        "ttft_p95_ms" => &["ttft"],
        "req_rate" | "target_down" => &["requests"],
        "rejection_rate" => &["ratelimit"],
        "worker_utilization" => &["utilization", "concurrency"],
        "canary_verdict" => &["errors", "latency"],
        _ => &[],
    }
}

/// A shaded period per firing episode of a shown variant, on the charts of its metric; one
/// still firing reaches `now_ms`.
pub(crate) fn alert_marks(periods: &[AlertPeriod], view: &View, now_ms: i64) -> Vec<Mark> {
    periods
        .iter()
        .filter(|p| view.variant == "all" || p.variant == view.variant)
        .map(|p| {
            let to = p.to_ms.unwrap_or(now_ms);
            let until = p.to_ms.map_or_else(|| "still firing".to_owned(), |t| format!("until {} UTC", rfc3339_ms(t)));
            Mark {
                from_ms: p.from_ms,
                to_ms: to.max(p.from_ms),
                label: format!(
                    "{} ({}, {}) firing from {} UTC {until}",
                    p.rule,
                    p.variant,
                    p.severity,
                    rfc3339_ms(p.from_ms)
                ),
                class: "alert",
                panels: panels_of(&p.metric),
            }
        })
        .collect()
}

/// A rule, formatted.
pub(crate) struct RuleLine {
    /// Name.
    pub name: String,
    /// `*` or a variant.
    pub variant: String,
    /// `expr op threshold`.
    pub condition: String,
    /// Window, or `-`.
    pub window: String,
    /// `for`.
    pub for_: String,
    /// Minimum requests.
    pub min_requests: String,
    /// Severity.
    pub severity: String,
}

/// An alert, formatted.
pub(crate) struct AlertLine {
    /// Rule.
    pub rule: String,
    /// Variant.
    pub variant: String,
    /// Phase (a CSS class too).
    pub state: &'static str,
    /// Since when it is in that phase, RFC 3339 (empty for inactive).
    pub since: String,
    /// Value.
    pub value: String,
    /// `> 5`.
    pub threshold: String,
    /// Severity.
    pub severity: String,
    /// Summary.
    pub summary: String,
    /// Last delivery per receiver (`alertmanager 2026-...Z`), or empty.
    pub delivered: String,
}

/// A receiver, formatted.
pub(crate) struct ReceiverLine {
    /// `alertmanager`, `webhook`.
    pub name: &'static str,
    /// `alertmanager`, `webhook`, `slack`.
    pub format: &'static str,
    /// Scheme, host and port.
    pub origin: String,
    /// Delivered, failed attempts, dropped, waiting.
    pub counts: String,
    /// Last success, RFC 3339, or `never`.
    pub last_success: String,
    /// Last failure and why, or empty.
    pub last_error: String,
}

/// `/alerts`.
#[derive(Template, WebTemplate)]
#[template(path = "alerts.html")]
pub(crate) struct AlertsPage {
    /// Chrome.
    pub chrome: Chrome,
    /// Rules.
    pub rules: Vec<RuleLine>,
    /// Alerts, firing first.
    pub alerts: Vec<AlertLine>,
    /// Receivers.
    pub receivers: Vec<ReceiverLine>,
    /// Time of the last evaluation, or `not yet`.
    pub evaluated: String,
    /// Why window statistics were missing, if they were.
    pub error: Option<String>,
}

/// `GET /alerts`.
pub(crate) async fn page(State(state): State<AppState>) -> AlertsPage {
    let snapshot = state.alerts.snapshot();
    let mut alerts: Vec<&AlertView> = snapshot.alerts.iter().collect();
    alerts.sort_by_key(|a| (phase_order(a.record.phase), a.record.rule.clone(), a.record.variant.clone()));
    AlertsPage {
        chrome: Chrome::new(&state, "alerts"),
        rules: state.alerts.rules().iter().map(rule_line).collect(),
        alerts: alerts.into_iter().map(alert_line).collect(),
        receivers: receiver_lines(&state),
        evaluated: snapshot.evaluated_ms.map_or_else(|| "not yet".to_owned(), rfc3339_ms),
        error: snapshot.error,
    }
}

fn phase_order(p: AlertPhase) -> u8 {
    match p {
        AlertPhase::Firing => 0,
        AlertPhase::Pending => 1,
        AlertPhase::Resolved => 2,
        AlertPhase::Inactive => 3,
    }
}

fn span(ms: i64) -> String {
    if ms > 0 { crate::promql::duration(ms) } else { "0s".to_owned() }
}

fn rule_line(r: &crate::alerts::Rule) -> RuleLine {
    RuleLine {
        name: r.name.clone(),
        variant: match &r.scope {
            Scope::One(v) => v.clone(),
            Scope::Each => "*".to_owned(),
        },
        condition: r.condition(),
        window: if r.window_ms > 0 { span(r.window_ms) } else { "-".to_owned() },
        for_: span(r.for_ms),
        min_requests: crate::alerts::rules::format_number(r.min_requests),
        severity: r.severity.clone(),
    }
}

fn alert_line(a: &AlertView) -> AlertLine {
    let r = &a.record;
    let since = match r.phase {
        AlertPhase::Pending => r.active_ms,
        AlertPhase::Firing => r.fired_ms,
        AlertPhase::Resolved => r.resolved_ms,
        AlertPhase::Inactive => None,
    };
    let delivered: Vec<String> = a.delivered.iter().map(|(name, ms)| format!("{name} {}", rfc3339_ms(*ms))).collect();
    AlertLine {
        rule: r.rule.clone(),
        variant: r.variant.clone(),
        state: r.phase.as_str(),
        since: since.map(rfc3339_ms).unwrap_or_default(),
        value: a.value.clone(),
        threshold: a.threshold.clone(),
        severity: r.severity.clone(),
        summary: a.summary.clone(),
        delivered: delivered.join(", "),
    }
}

fn receiver_lines(state: &AppState) -> Vec<ReceiverLine> {
    state
        .alerts
        .receivers()
        .into_iter()
        .map(|r| ReceiverLine {
            name: r.name,
            format: r.format,
            origin: r.origin,
            counts: format!(
                "{} sent, {} failed attempts, {} dropped, {} waiting",
                r.sent, r.failures, r.dropped, r.queued
            ),
            last_success: r.last_success_ms.map_or_else(|| "never".to_owned(), rfc3339_ms),
            last_error: r.last_error.map(|(t, e)| format!("{}: {e}", rfc3339_ms(t))).unwrap_or_default(),
        })
        .collect()
}
