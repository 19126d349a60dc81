//! What every page carries around its content: the version and asset links, the live script's
//! interval, the notice, the strip of firing alerts and the storage banner. Pages build a
//! [`Chrome`] and the base template draws it; nothing here depends on a page.

use super::AppState;
use super::assets;
use crate::clock::rfc3339_ms;

/// Shared page chrome.
pub struct Chrome {
    /// zai-dash version.
    pub version: &'static str,
    /// Versioned stylesheet URL.
    pub css: String,
    /// Versioned script URL.
    pub js: String,
    /// Render time, RFC 3339 UTC.
    pub generated: String,
    /// Interval between two live points of a variant, in ms: the point width, or the scrape
    /// interval when that is longer (the live script's stale timer counts these).
    pub interval_ms: i64,
    /// Which page (for the navigation's `aria-current`).
    pub page: &'static str,
    /// A line shown under the header on every page, if the configuration has one.
    pub notice: Option<String>,
    /// Alerts firing now: the strip under the header.
    pub firing: Vec<StripAlert>,
    /// While the database refuses writes: the banner saying so.
    pub storage: Option<StorageBanner>,
}

/// What every page says while the database refuses writes: since when the numbers are not
/// saved, why, and that they are held in memory (the charts include them).
pub struct StorageBanner {
    /// The first failed write, RFC 3339.
    pub since: String,
    /// Why the last attempt failed, one sentence.
    pub reason: String,
    /// Batches (one per point) held in memory.
    pub batches: usize,
    /// End of the stored history, RFC 3339; empty when nothing was stored since the start.
    pub stored_until: String,
}

impl StorageBanner {
    fn of(f: crate::health::StorageFailure) -> Self {
        Self {
            since: rfc3339_ms(f.since_ms),
            reason: f.last_error,
            batches: f.batches_held,
            stored_until: f.stored_until_ms.map(rfc3339_ms).unwrap_or_default(),
        }
    }
}

impl Chrome {
    /// The chrome of `page` (`overview`, `compare`, `targets`, `alerts`).
    pub(crate) fn new(state: &AppState, page: &'static str) -> Self {
        Self {
            version: crate::VERSION,
            css: assets::url("app.css"),
            js: assets::url("app.js"),
            generated: rfc3339_ms(state.clock.now_ms()),
            interval_ms: state.settings.point_ms().max(crate::setting::duration_ms(state.settings.scrape_interval)),
            page,
            notice: state.settings.notice.clone(),
            firing: strip(state),
            storage: state.health.storage().map(StorageBanner::of),
        }
    }
}

/// A firing alert in the strip.
#[derive(Debug, Clone)]
pub struct StripAlert {
    /// Rule.
    pub rule: String,
    /// Variant.
    pub variant: String,
    /// Severity (a CSS class too: letters, digits, `_` and `-` only, validated).
    pub severity: String,
    /// Filled summary.
    pub summary: String,
    /// Since when its condition holds (Prometheus' `activeAt`, as `/api/alerts` says), RFC 3339.
    pub since: String,
}

/// The strip's lines: what fires now.
pub(crate) fn strip(state: &AppState) -> Vec<StripAlert> {
    state
        .alerts
        .firing()
        .into_iter()
        .map(|a| StripAlert {
            since: a.record.active_ms.or(a.record.fired_ms).map(rfc3339_ms).unwrap_or_default(),
            rule: a.record.rule,
            variant: a.record.variant,
            severity: a.record.severity,
            summary: a.summary,
        })
        .collect()
}
