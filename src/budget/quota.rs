//! Quota runway: from a variant's series of quota samples (the proxy's
//! `zai_proxy_quota_usage_ratio`, `..._reset_time_seconds` and `..._sample_age_seconds`, as each
//! scrape stored them), how much of each window is used, how fast it fills, when it runs out at
//! that pace and whether that comes before the window resets.
//!
//! **Burn** is the least-squares slope of the used ratio over the samples of the last
//! [`BURN_WINDOW_MS`] (what Prometheus' `deriv` computes, and `predict_linear` extrapolates),
//! in fractions of the window per hour. It needs at least two samples spanning
//! [`MIN_BURN_SPAN_MS`]; fewer give no burn (`null`), not a zero. A slope is robust to the
//! staircase the series really is (the proxy polls every minute or so and the provider reports
//! whole percents, while zai-dash scrapes every 5 s), where the difference of two samples would
//! jump between 0 and a step.
//!
//! **A reset** (the advertised reset time moving forward, or the ratio dropping) starts the
//! burn over: only samples after the latest reset count, so a window that just started empty
//! is not read as a negative pace.
//!
//! **Exhaustion** is where the line from the latest ratio at the burn's slope reaches 1;
//! `exhausted_at` and `runway_seconds` are `null` when the ratio is not rising. A window that
//! reads 1 already is exhausted since its first sample at 1, with no runway left.
//!
//! **Freshness**: the proxy writes its sample age only when it polls, so the age now is at
//! least that gauge plus the time since the scrape that read it. Past `stale_after` the values
//! are the last known ones and say nothing about the pace: burn, exhaustion and runway are
//! `null` and the state says `stale`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::point::Quota;

/// Samples older than this (by the proxy's sample age) make a variant `stale` by default.
pub const DEFAULT_STALE_AFTER_MS: i64 = 15 * 60_000;
/// The burn is the slope over the samples of this window before now.
pub const BURN_WINDOW_MS: i64 = 15 * 60_000;
/// The burn's samples must span at least this long: two scrapes 5 s apart say nothing.
pub const MIN_BURN_SPAN_MS: i64 = 60_000;
/// A reset time moving forward by less than this is the provider re-rounding it, not a reset.
const RESET_JITTER_MS: i64 = 60_000;
/// A projection further out than this is no projection (a pace of nearly nothing); no window
/// is that long.
const MAX_PROJECTION_MS: f64 = 400.0 * 86_400_000.0;
const HOUR_MS: f64 = 3_600_000.0;

/// One scrape's quota block of a variant (the freshest pod's, as points keep it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaSample {
    /// When the block was scraped, Unix ms.
    pub at_ms: i64,
    /// The proxy's `zai_proxy_quota_sample_age_seconds` in that scrape: the age of its last
    /// good poll when it polled (the proxy does not refresh it between polls).
    pub sample_age_seconds: Option<f64>,
    /// Each window the proxy reported.
    pub windows: Vec<WindowReading>,
}

/// One quota window in one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowReading {
    /// `five_hour`, `weekly`, ...
    pub window: String,
    /// The provider's limit schema (`credit_limit`, `tokens_limit`).
    pub limit_type: Option<String>,
    /// Used fraction, 0..=1.
    pub used_ratio: Option<f64>,
    /// Next reset, Unix ms, when the provider advertises one.
    pub reset_at_ms: Option<i64>,
}

impl QuotaSample {
    /// A sample from a stored quota block (`point::Quota`), scraped at `at_ms`. A window
    /// without a usage ratio takes `1 - remaining` when the proxy exported only that.
    pub fn from_block(at_ms: i64, block: &Quota) -> Self {
        let windows = [("five_hour", &block.five_hour), ("weekly", &block.weekly)]
            .into_iter()
            .filter_map(|(name, w)| w.as_ref().map(|w| (name, w)))
            .map(|(name, w)| WindowReading {
                window: name.to_owned(),
                limit_type: w.limit_type.clone(),
                used_ratio: w.usage_ratio.or(w.remaining_ratio.map(|r| 1.0 - r)).filter(|r| r.is_finite()),
                reset_at_ms: w
                    .reset_time_unix
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(|s| (s * 1000.0).round() as i64),
            })
            .collect();
        Self { at_ms, sample_age_seconds: block.sample_age_seconds, windows }
    }
}

/// Whether a variant's quota numbers can be trusted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaState {
    /// The latest sample is younger than the staleness limit.
    Fresh,
    /// The latest sample is older: the values are the last known ones.
    Stale,
    /// No sample at all (the proxy does not poll its quota).
    Unavailable,
}

/// One variant's quota, as `GET /api/quota` shows it (`{VARIANT: QuotaView}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaView {
    /// `fresh`, `stale` or `unavailable`.
    pub state: QuotaState,
    /// Age of the latest sample now (at least; see the module docs), `null` without one.
    pub sample_age_seconds: Option<f64>,
    /// Each window of the latest sample.
    pub windows: Vec<WindowRunway>,
}

/// One window's runway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRunway {
    /// `five_hour`, `weekly`, ...
    pub window: String,
    /// The provider's limit schema.
    pub limit_type: Option<String>,
    /// Used fraction now (the latest sample's).
    pub used_ratio: Option<f64>,
    /// Next reset, Unix ms.
    pub reset_at: Option<i64>,
    /// Fractions of the window used per hour over the burn window (0.25: a quarter per hour).
    pub burn_per_hour: Option<f64>,
    /// When the window runs out at this pace, Unix ms; `null` when the ratio is not rising.
    pub exhausted_at: Option<i64>,
    /// Seconds from now until then (0 once exhausted); `null` when the ratio is not rising.
    pub runway_seconds: Option<f64>,
    /// Whether it runs out before the reset; `null` when that cannot be said.
    pub runs_out_before_reset: Option<bool>,
}

impl WindowRunway {
    /// Seconds of quota left at the current pace minus seconds to the reset: negative when the
    /// window runs out first. `null` when the ratio is not rising or no reset is known.
    pub fn runway_margin_seconds(&self) -> Option<f64> {
        Some((self.exhausted_at? - self.reset_at?) as f64 / 1000.0)
    }
}

impl QuotaView {
    /// The alert expression `quota_runway_seconds`: the smallest [`WindowRunway::runway_margin_seconds`]
    /// over the windows (the window that runs out soonest before its reset decides).
    pub fn quota_runway_seconds(&self) -> Option<f64> {
        self.windows.iter().filter_map(WindowRunway::runway_margin_seconds).reduce(f64::min)
    }
}

/// `GET /api/quota`: every variant's view.
pub type QuotaReport = BTreeMap<String, QuotaView>;

/// A variant's quota view at `now_ms` from its samples (any order; samples after `now_ms` are
/// ignored); a sample older than `stale_after_ms` makes it `stale`.
pub fn runway(samples: &[QuotaSample], now_ms: i64, stale_after_ms: i64) -> QuotaView {
    runway_of(&samples.iter().collect::<Vec<_>>(), now_ms, stale_after_ms)
}

/// [`runway`] over samples lent by their keeper (the alert engine's runway keeps them between
/// evaluations; copying them for each evaluation cost a few strings per sample).
pub fn runway_of(samples: &[&QuotaSample], now_ms: i64, stale_after_ms: i64) -> QuotaView {
    let mut seen: Vec<&QuotaSample> = samples.iter().copied().filter(|s| s.at_ms <= now_ms).collect();
    seen.sort_by_key(|s| s.at_ms);
    let Some(latest) = seen.last() else {
        return QuotaView { state: QuotaState::Unavailable, sample_age_seconds: None, windows: Vec::new() };
    };
    let age = age_at(latest, now_ms);
    let fresh = age * 1000.0 <= stale_after_ms as f64;
    let recent: Vec<&QuotaSample> =
        seen.iter().copied().filter(|s| age_at(s, s.at_ms) * 1000.0 <= stale_after_ms as f64).collect();
    let windows = latest
        .windows
        .iter()
        .map(|w| {
            let series = fresh.then(|| series_of(&recent, w));
            window_runway(w, series.as_deref(), now_ms)
        })
        .collect();
    QuotaView {
        state: if fresh { QuotaState::Fresh } else { QuotaState::Stale },
        sample_age_seconds: Some(age),
        windows,
    }
}

/// Seconds since the proxy's last good poll, as known at `at_ms`.
fn age_at(s: &QuotaSample, at_ms: i64) -> f64 {
    let gauge = s.sample_age_seconds.filter(|a| a.is_finite() && *a >= 0.0).unwrap_or(0.0);
    gauge + (at_ms - s.at_ms).max(0) as f64 / 1000.0
}

/// One reading of a window: `(at_ms, used_ratio, reset_at_ms)`.
type Reading = (i64, f64, Option<i64>);

/// The readings of `w`'s window and limit type, oldest first, with a usage ratio.
fn series_of(samples: &[&QuotaSample], w: &WindowReading) -> Vec<Reading> {
    samples
        .iter()
        .filter_map(|s| {
            let r = s.windows.iter().find(|r| r.window == w.window && r.limit_type == w.limit_type)?;
            let used = r.used_ratio.filter(|u| u.is_finite())?;
            Some((s.at_ms, used, r.reset_at_ms))
        })
        .collect()
}

/// One window's view; `series` is `None` when stale (no pace is computed).
fn window_runway(w: &WindowReading, series: Option<&[Reading]>, now_ms: i64) -> WindowRunway {
    let mut view = WindowRunway {
        window: w.window.clone(),
        limit_type: w.limit_type.clone(),
        used_ratio: w.used_ratio.filter(|u| u.is_finite()),
        reset_at: w.reset_at_ms,
        burn_per_hour: None,
        exhausted_at: None,
        runway_seconds: None,
        runs_out_before_reset: None,
    };
    let (Some(series), Some(used)) = (series, view.used_ratio) else { return view };
    let Some(&(last_ms, ..)) = series.last() else { return view };
    let since_reset = &series[last_reset(series)..];
    view.burn_per_hour = burn_per_ms(since_reset, now_ms).map(|b| b.max(0.0) * HOUR_MS);
    let exhausted_at = if used >= 1.0 {
        since_reset.iter().find(|r| r.1 >= 1.0).map_or(last_ms, |r| r.0)
    } else {
        let Some(per_hour) = view.burn_per_hour else { return view };
        let to_full_ms = (1.0 - used) / per_hour * HOUR_MS;
        if per_hour <= 0.0 || to_full_ms > MAX_PROJECTION_MS {
            view.runs_out_before_reset = Some(false);
            return view;
        }
        last_ms.saturating_add(to_full_ms.round() as i64)
    };
    view.exhausted_at = Some(exhausted_at);
    view.runway_seconds = Some((exhausted_at - now_ms).max(0) as f64 / 1000.0);
    view.runs_out_before_reset = match view.reset_at {
        Some(reset) => Some(exhausted_at < reset),
        None => (used >= 1.0).then_some(true),
    };
    view
}

/// Index of the first reading after the latest reset (0 without one).
fn last_reset(series: &[Reading]) -> usize {
    (1..series.len())
        .rev()
        .find(|&i| {
            let (prev, cur) = (series[i - 1], series[i]);
            let reset_moved = matches!((prev.2, cur.2), (Some(a), Some(b)) if b - a >= RESET_JITTER_MS);
            reset_moved || cur.1 < prev.1
        })
        .unwrap_or(0)
}

/// Least-squares slope (ratio per ms) over the readings in `(now - BURN_WINDOW_MS, now]`, when
/// there are at least two spanning [`MIN_BURN_SPAN_MS`].
fn burn_per_ms(series: &[Reading], now_ms: i64) -> Option<f64> {
    let window: Vec<&Reading> = series.iter().filter(|r| r.0 > now_ms - BURN_WINDOW_MS).collect();
    let (first, last) = (window.first()?.0, window.last()?.0);
    if window.len() < 2 || last - first < MIN_BURN_SPAN_MS {
        return None;
    }
    // Times relative to the first reading keep the sums exact enough in f64.
    let n = window.len() as f64;
    let xs: Vec<f64> = window.iter().map(|r| (r.0 - first) as f64).collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = window.iter().map(|r| r.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, r) in xs.iter().zip(&window) {
        sxy += (x - mean_x) * (r.1 - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests;
