//! Reading the provider's quota answer (pure): `{code, msg, success, data: {level, limits:
//! [{type, unit, usage, currentValue, remaining, percentage, nextResetTime}]}}` into at most one
//! sample per window.
//!
//! `unit` tells the window (3 five-hour, 6 weekly; the others are tool quotas this does not
//! model). `type` tells the schema: `CREDIT_LIMIT` carries absolute credits (`usage` is the
//! allowance, `currentValue` what was used), the legacy `TOKENS_LIMIT` only a used percentage.
//! When a window comes in both schemas the credit entry wins, whatever the order: it is the
//! current schema and exact, where the percentage is rounded to whole points. Other types are
//! dropped. Used ratios are clamped to [0, 1], so an overdrawn window reads exactly 1.
//!
//! Nothing read here is ever echoed: the provider's `msg` can carry account details, so errors
//! name only the provider's numeric code.

use serde_json::Value;

use super::QuotaError;

/// A quota window the poller models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Window {
    /// The rolling five-hour window (`unit` 3).
    FiveHour,
    /// The weekly window (`unit` 6).
    Weekly,
}

impl Window {
    /// The `window` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Window::FiveHour => "five_hour",
            Window::Weekly => "weekly",
        }
    }

    fn from_unit(unit: i64) -> Option<Self> {
        match unit {
            3 => Some(Window::FiveHour),
            6 => Some(Window::Weekly),
            _ => None,
        }
    }
}

/// The provider schema a window was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitType {
    /// `CREDIT_LIMIT`: absolute credits.
    Credit,
    /// `TOKENS_LIMIT`: a used percentage only.
    Tokens,
}

impl LimitType {
    /// The `limit_type` label value (lower case, as zai-proxy exports it).
    pub(crate) fn label(self) -> &'static str {
        match self {
            LimitType::Credit => "credit_limit",
            LimitType::Tokens => "tokens_limit",
        }
    }

    /// The provider's own spelling, as `/health` shows it.
    pub(crate) fn wire(self) -> &'static str {
        match self {
            LimitType::Credit => "CREDIT_LIMIT",
            LimitType::Tokens => "TOKENS_LIMIT",
        }
    }

    fn from_wire(t: &str) -> Option<Self> {
        if t.eq_ignore_ascii_case("CREDIT_LIMIT") {
            Some(LimitType::Credit)
        } else if t.eq_ignore_ascii_case("TOKENS_LIMIT") {
            Some(LimitType::Tokens)
        } else {
            None
        }
    }
}

/// One window of a good answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowSample {
    /// Which window.
    pub window: Window,
    /// Which schema it came in.
    pub limit_type: LimitType,
    /// Used fraction of the allowance, in [0, 1].
    pub used_ratio: f64,
    /// Next reset, Unix milliseconds, when the provider advertised one.
    pub reset_ms: Option<i64>,
}

/// A good answer: the plan tier and the windows, five-hour first.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// The provider's plan `level` (`lite`, `pro`, `max`), bounded like a label.
    pub plan_tier: Option<String>,
    /// At most one sample per window, in [`Window`] order.
    pub windows: Vec<WindowSample>,
}

/// Reads one answer body.
pub(crate) fn normalise(body: &[u8]) -> Result<Snapshot, QuotaError> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| QuotaError::NotJson)?;
    let code = answer.get("code").and_then(Value::as_i64).unwrap_or(0);
    match answer.get("success").and_then(Value::as_bool) {
        Some(false) => return Err(QuotaError::Provider(code)),
        None if code != 0 && code != 200 => return Err(QuotaError::Provider(code)),
        _ => {}
    }
    let limits = answer.pointer("/data/limits").and_then(Value::as_array).ok_or(QuotaError::NoLimits)?;
    let mut windows: Vec<WindowSample> = Vec::with_capacity(2);
    for sample in limits.iter().filter_map(window_sample) {
        match windows.iter_mut().find(|w| w.window == sample.window) {
            None => windows.push(sample),
            Some(kept) if kept.limit_type == LimitType::Tokens && sample.limit_type == LimitType::Credit => {
                *kept = sample;
            }
            Some(_) => {}
        }
    }
    windows.sort_by_key(|w| w.window);
    let plan_tier = answer.pointer("/data/level").and_then(Value::as_str).filter(|l| !l.trim().is_empty());
    Ok(Snapshot { plan_tier: plan_tier.map(label_value), windows })
}

/// One `limits[]` entry, or `None` when it is not a modelled window or carries no usable ratio.
fn window_sample(entry: &Value) -> Option<WindowSample> {
    let limit_type = LimitType::from_wire(entry.get("type")?.as_str()?)?;
    let window = Window::from_unit(entry.get("unit")?.as_i64()?)?;
    let number = |field: &str| entry.get(field).and_then(Value::as_f64).filter(|v| v.is_finite());
    let from_percentage = number("percentage").map(|p| p / 100.0);
    let used = match limit_type {
        LimitType::Credit => match (number("usage"), number("currentValue")) {
            (Some(allowance), Some(used)) if allowance > 0.0 => Some(used / allowance),
            _ => from_percentage,
        },
        LimitType::Tokens => from_percentage,
    };
    let used_ratio = clamp_ratio(used?)?;
    let reset_ms = entry.get("nextResetTime").and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
    Some(WindowSample { window, limit_type, used_ratio, reset_ms: reset_ms.filter(|ms| *ms > 0) })
}

/// A used ratio clamped to [0, 1]; `None` when it is not a number at all.
pub(crate) fn clamp_ratio(r: f64) -> Option<f64> {
    r.is_finite().then(|| r.clamp(0.0, 1.0))
}

/// A value bounded the way zai-proxy bounds its quota labels: lower case, `[a-z0-9_-]` kept and
/// any other character replaced by `_`, at most 32 characters, `unknown` when empty.
pub(crate) fn label_value(v: &str) -> String {
    let kept: String = v
        .trim()
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' { c } else { '_' })
        .take(32)
        .collect();
    if kept.is_empty() { "unknown".into() } else { kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(limits: &str) -> Result<Snapshot, QuotaError> {
        normalise(
            format!(r#"{{"code":200,"msg":"ok","success":true,"data":{{"level":"pro","limits":{limits}}}}}"#)
                .as_bytes(),
        )
    }

    #[test]
    fn credit_beats_tokens_in_either_order_and_other_types_are_dropped() {
        let credit = r#"{"type":"CREDIT_LIMIT","unit":3,"usage":2000,"currentValue":740,"percentage":99,"nextResetTime":1788541838272}"#;
        let tokens = r#"{"type":"TOKENS_LIMIT","unit":3,"percentage":80}"#;
        let time = r#"{"type":"TIME_LIMIT","unit":5,"usage":100,"currentValue":12,"percentage":12}"#;
        let future = r#"{"type":"SOME_FUTURE_LIMIT","unit":6,"percentage":50}"#;
        for limits in [format!("[{tokens},{credit},{time},{future}]"), format!("[{credit},{tokens}]")] {
            let s = read(&limits).unwrap();
            assert_eq!(s.windows.len(), 1, "{limits}");
            let w = &s.windows[0];
            assert_eq!((w.window, w.limit_type, w.used_ratio), (Window::FiveHour, LimitType::Credit, 0.37));
            assert_eq!(w.reset_ms, Some(1_788_541_838_272));
            assert_eq!(s.plan_tier.as_deref(), Some("pro"));
        }
    }

    #[test]
    fn the_first_entry_of_a_schema_wins_and_windows_come_five_hour_first() {
        let s = read(
            r#"[{"type":"TOKENS_LIMIT","unit":6,"percentage":7},{"type":"TOKENS_LIMIT","unit":6,"percentage":9},
                {"type":"tokens_limit","unit":3,"percentage":13}]"#,
        )
        .unwrap();
        let got: Vec<_> = s.windows.iter().map(|w| (w.window, w.used_ratio)).collect();
        assert_eq!(got, [(Window::FiveHour, 0.13), (Window::Weekly, 0.07)]);
    }

    #[test]
    fn credits_fall_back_to_the_percentage_and_ratios_are_clamped() {
        let s = read(
            r#"[{"type":"CREDIT_LIMIT","unit":3,"usage":0,"currentValue":5,"percentage":150},
                {"type":"CREDIT_LIMIT","unit":6,"usage":100,"currentValue":-3}]"#,
        )
        .unwrap();
        assert_eq!(s.windows[0].used_ratio, 1.0);
        assert_eq!(s.windows[1].used_ratio, 0.0);
        let none = read(r#"[{"type":"TOKENS_LIMIT","unit":3},{"type":"CREDIT_LIMIT","unit":6}]"#).unwrap();
        assert!(none.windows.is_empty(), "entries with no ratio carry nothing");
    }

    #[test]
    fn provider_errors_and_malformed_answers_are_told_apart() {
        let provider = |b: &str| normalise(b.as_bytes()).unwrap_err();
        assert!(matches!(
            provider(r#"{"code":1001,"msg":"key sk-1 invalid","success":false}"#),
            QuotaError::Provider(1001)
        ));
        assert!(matches!(provider(r#"{"code":401,"msg":"no"}"#), QuotaError::Provider(401)));
        assert!(matches!(provider(r#"{"code":200,"data":{}}"#), QuotaError::NoLimits));
        assert!(matches!(provider(r#"{"success":true,"data":{"limits":null}}"#), QuotaError::NoLimits));
        assert!(matches!(provider(r#"{"success":true,"data":{"limits":[{"ty"#), QuotaError::NotJson));
        assert!(matches!(provider("[1,2]"), QuotaError::NoLimits));
        assert_eq!(normalise(br#"{"code":0,"data":{"limits":[]}}"#).unwrap(), Snapshot::default());
    }

    #[test]
    fn labels_are_bounded_like_zai_proxys() {
        assert_eq!(label_value("Production"), "production");
        assert_eq!(label_value("canary v2/é"), "canary_v2__");
        assert_eq!(label_value(""), "unknown");
        assert_eq!(label_value(&"x".repeat(40)).len(), 32);
    }
}
