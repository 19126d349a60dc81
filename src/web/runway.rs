//! Quota runway: `GET /api/quota` and the overview's quota card and panel, both from the alert
//! engine's last evaluation (one computation per tick serves the alert `quota_runway_seconds`,
//! the API and every open page, so they agree).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::budget::quota::{QuotaReport, QuotaState, QuotaView, WindowRunway};
use crate::clock::rfc3339_ms;

/// `GET /api/quota`: `{VARIANT: {state, sample_age_seconds, windows: [...]}}` (README, "Quota
/// runway"). 503 before the first evaluation has read the quota.
pub async fn api(State(state): State<AppState>) -> Response {
    match state.alerts.snapshot().quota {
        Some(report) => Json(report).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "Quota has not been read yet; it is read at every live tick." })),
        )
            .into_response(),
    }
}

/// One window of one variant as the overview's panel shows it.
#[derive(Debug, Clone)]
pub struct QuotaRow {
    /// Variant.
    pub variant: String,
    /// Colour slot of the variant.
    pub color: usize,
    /// `fresh`, `stale` or `unavailable`.
    pub state: &'static str,
    /// `5h`, `week`, or the provider's name of the window.
    pub window: String,
    /// `42 %`, or `–`.
    pub used: String,
    /// Used share, 0..=100, for the bar (0 without a value: the text says `–`).
    pub used_pct: f64,
    /// `6.1 %/h`, or `–`.
    pub burn: String,
    /// When it runs out (RFC 3339, empty when not rising).
    pub exhausted_at: String,
    /// When it resets (RFC 3339, empty without a reset).
    pub reset_at: String,
    /// One sentence: runs out N before the reset, lasts to the reset, ...
    pub verdict: String,
    /// `danger` when it runs out before the reset, else empty.
    pub class: &'static str,
}

/// The overview's quota rows for `variants` (`all` or one), in variant then window order; a
/// variant without quota gets one row saying so, unless no variant has any (then no panel).
pub fn rows(
    report: Option<&QuotaReport>,
    colors: &std::collections::HashMap<String, usize>,
    variant: &str,
) -> Vec<QuotaRow> {
    let Some(report) = report else { return Vec::new() };
    if report.values().all(|v| v.state == QuotaState::Unavailable) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, view) in report.iter().filter(|(name, _)| variant == "all" || *name == variant) {
        let color = colors.get(name).copied().unwrap_or(0);
        if view.windows.is_empty() {
            out.push(unavailable_row(name, color, view));
        }
        for w in &view.windows {
            out.push(window_row(name, color, view, w));
        }
    }
    out
}

fn state_name(s: QuotaState) -> &'static str {
    match s {
        QuotaState::Fresh => "fresh",
        QuotaState::Stale => "stale",
        QuotaState::Unavailable => "unavailable",
    }
}

fn unavailable_row(name: &str, color: usize, view: &QuotaView) -> QuotaRow {
    QuotaRow {
        variant: name.to_owned(),
        color,
        state: state_name(view.state),
        window: "–".into(),
        used: "–".into(),
        used_pct: 0.0,
        burn: "–".into(),
        exhausted_at: String::new(),
        reset_at: String::new(),
        verdict: "No quota reported (the proxy does not poll its quota).".into(),
        class: "",
    }
}

fn window_row(name: &str, color: usize, view: &QuotaView, w: &WindowRunway) -> QuotaRow {
    let used = w.used_ratio.map(|r| r * 100.0);
    QuotaRow {
        variant: name.to_owned(),
        color,
        state: state_name(view.state),
        window: window_label(&w.window),
        used: used.map_or_else(|| "–".to_owned(), |u| format!("{u:.0} %")),
        used_pct: used.unwrap_or(0.0).clamp(0.0, 100.0),
        burn: w.burn_per_hour.map_or_else(|| "–".to_owned(), |b| format!("{:.1} %/h", b * 100.0)),
        exhausted_at: w.exhausted_at.map(rfc3339_ms).unwrap_or_default(),
        reset_at: w.reset_at.map(rfc3339_ms).unwrap_or_default(),
        verdict: verdict(view, w),
        class: if w.runs_out_before_reset == Some(true) { "danger" } else { "" },
    }
}

/// `five_hour` is `5h`, `weekly` is `week`; other names as the provider gave them.
fn window_label(w: &str) -> String {
    match w {
        "five_hour" => "5h".into(),
        "weekly" => "week".into(),
        other => other.into(),
    }
}

fn verdict(view: &QuotaView, w: &WindowRunway) -> String {
    if view.state == QuotaState::Stale {
        let age = view.sample_age_seconds.map_or_else(String::new, |a| format!(" ({} old)", span(a)));
        return format!("Stale sample{age}: last known values, no pace.");
    }
    match (w.runs_out_before_reset, w.runway_margin_seconds()) {
        (Some(true), Some(margin)) if w.used_ratio.is_some_and(|u| u >= 1.0) => {
            format!("Exhausted; resets in {}.", span(-margin))
        }
        (Some(true), Some(margin)) => format!("Runs out {} before the reset.", span(-margin)),
        (Some(true), None) => "Exhausted.".into(),
        (Some(false), _) if w.exhausted_at.is_some() => "Lasts to the reset at this pace.".into(),
        (Some(false), _) => "Not filling up; lasts to the reset.".into(),
        (None, _) if w.burn_per_hour.is_none() => "Pace not known yet (needs a minute of samples).".into(),
        (None, _) => "No reset time reported.".into(),
    }
}

/// A duration in words: `42 min`, `3 h 5 min`, `2 d 4 h`.
pub fn span(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    match (d, h) {
        (0, 0) if m == 0 => format!("{s} s"),
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(used: f64, burn: Option<f64>, exhausted_at: Option<i64>, reset_at: i64) -> WindowRunway {
        WindowRunway {
            window: "five_hour".into(),
            limit_type: Some("credit_limit".into()),
            used_ratio: Some(used),
            reset_at: Some(reset_at),
            burn_per_hour: burn,
            exhausted_at,
            runway_seconds: exhausted_at.map(|_| 0.0),
            runs_out_before_reset: exhausted_at.map(|e| e < reset_at),
        }
    }

    #[test]
    fn a_window_that_runs_out_first_says_by_how_much() {
        let view = QuotaView {
            state: QuotaState::Fresh,
            sample_age_seconds: Some(10.0),
            windows: vec![window(0.5, Some(0.25), Some(3_600_000), 3_600_000 + 42 * 60_000)],
        };
        let r = window_row("p", 0, &view, &view.windows[0]);
        assert_eq!((r.window.as_str(), r.used.as_str(), r.burn.as_str()), ("5h", "50 %", "25.0 %/h"));
        assert_eq!(r.verdict, "Runs out 42 min before the reset.");
        assert_eq!(r.class, "danger");
    }

    #[test]
    fn unknowns_are_dashes_and_sentences_never_zeros() {
        let view = QuotaView {
            state: QuotaState::Fresh,
            sample_age_seconds: Some(10.0),
            windows: vec![window(0.2, None, None, 3_600_000)],
        };
        let r = window_row("p", 0, &view, &view.windows[0]);
        assert_eq!(r.burn, "–");
        assert!(r.exhausted_at.is_empty());
        assert!(r.verdict.starts_with("Pace not known"), "{}", r.verdict);
        let none = QuotaReport::from([("p".to_owned(), crate::budget::quota::runway(&[], 0, 1))]);
        assert!(rows(Some(&none), &Default::default(), "all").is_empty(), "no panel when nobody reports quota");
    }

    #[test]
    fn spans_read_as_words() {
        assert_eq!(span(42.0 * 60.0), "42 min");
        assert_eq!(span(3.0 * 3600.0 + 300.0), "3 h 5 min");
        assert_eq!(span(2.0 * 86_400.0 + 4.0 * 3600.0), "2 d 4 h");
        assert_eq!(span(12.0), "12 s");
    }
}
