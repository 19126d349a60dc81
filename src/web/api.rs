//! JSON endpoints, in the Go dashboard's shapes (docs/decisions.md, API shapes).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::clock::{bucket_end, checked_bucket_end, rfc3339_ms};
use crate::health::TargetHealth;
use crate::point::Quota;
use crate::ports::json_array::Frames;
use crate::ports::read::PointQuery;
use crate::setting::duration_ms;
use crate::variant::is_valid_variant;

/// Longest accepted window.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// Default and bounds of `max_points`.
const DEFAULT_MAX_POINTS: i64 = 1500;
const MAX_MAX_POINTS: i64 = 10_000;

/// Status of one variant: the latest complete 5 s point plus target health.
#[allow(missing_docs)] // field names are the Go dashboard's `/api/status` (docs/decisions.md, API shapes)
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VariantStatus {
    pub healthy: bool,
    pub last_scrape: Option<String>,
    pub req_rate: f64,
    pub error_rate_pct: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub concurrent: f64,
    pub worker_utilization: f64,
    pub rate_limit_rps: f64,
    pub token_rate_in: f64,
    pub token_rate_out: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    pub version: Option<String>,
    pub targets: Vec<TargetStatus>,
}

/// One target inside a variant's status.
#[allow(missing_docs)] // field names of docs/decisions.md, API shapes
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetStatus {
    pub url: String,
    pub up: bool,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub scrape_duration_ms: f64,
    pub samples: usize,
}

impl From<&TargetHealth> for TargetStatus {
    fn from(h: &TargetHealth) -> Self {
        Self {
            url: h.url.clone(),
            up: h.up,
            last_success: h.last_success(),
            last_error: h.last_error.clone(),
            scrape_duration_ms: h.scrape_duration_ms,
            samples: h.samples,
        }
    }
}

/// Every variant of a target's latest scrape (the URL rule's guess before its first one) or
/// of stored history, sorted. A guess disappears once the target's own label named it, so
/// `/api/status`, `/api/config`, the `connected` event and compare's default candidate never
/// show a variant nothing belongs to.
pub(crate) async fn known_variants(state: &AppState) -> Result<BTreeSet<String>, ApiError> {
    let mut names: BTreeSet<String> = state.health.snapshot().into_iter().map(|h| h.variant).collect();
    names.extend(state.hub.latest().into_keys());
    names.extend(state.source.variants().await?);
    Ok(names)
}

/// Builds the status of every known variant. In source mode a failing engine is an error
/// here, not a status built from the last health it reported.
pub(crate) async fn collect_status(state: &AppState) -> Result<BTreeMap<String, VariantStatus>, ApiError> {
    state.source.status()?;
    let now = state.clock.now_ms();
    let fresh_window = fresh_window_ms(&state.settings);
    let health = state.health.snapshot();
    let latest = state.hub.latest();
    let mut out = BTreeMap::new();
    for variant in known_variants(state).await? {
        let targets: Vec<&TargetHealth> = health.iter().filter(|h| h.variant == variant).collect();
        let p = latest.get(&variant);
        let versions: BTreeSet<&str> = targets.iter().filter_map(|h| h.version.as_deref()).collect();
        out.insert(
            variant.clone(),
            VariantStatus {
                healthy: targets.iter().any(|h| h.fresh(now, fresh_window)),
                last_scrape: targets.iter().filter_map(|h| h.last_success_ms).max().map(rfc3339_ms),
                req_rate: p.map_or(0.0, |p| p.req_rate),
                error_rate_pct: p.and_then(|p| p.error_rate_pct),
                latency_p50_ms: p.and_then(|p| p.latency_p50),
                latency_p95_ms: p.and_then(|p| p.latency_p95),
                latency_p99_ms: p.and_then(|p| p.latency_p99),
                concurrent: p.map_or(0.0, |p| p.concurrent_requests),
                worker_utilization: p.map_or(0.0, |p| p.worker_utilization),
                rate_limit_rps: p.map_or(0.0, |p| p.rate_limit_rps),
                token_rate_in: p.map_or(0.0, |p| p.token_rate_in),
                token_rate_out: p.map_or(0.0, |p| p.token_rate_out),
                quota: p.and_then(|p| p.quota.clone()),
                version: (!versions.is_empty()).then(|| versions.into_iter().collect::<Vec<_>>().join(",")),
                targets: targets.into_iter().map(TargetStatus::from).collect(),
            },
        );
    }
    Ok(out)
}

/// How old a target's last scrape may be for it to count as healthy: three scrape intervals;
/// in source mode also one poll of the engine (a point width) and the engine's own delay, or
/// a target the engine scrapes every time would flicker unhealthy between two polls.
pub(crate) fn fresh_window_ms(s: &super::WebSettings) -> i64 {
    let scrapes = 3 * duration_ms(s.scrape_interval);
    match s.engine {
        None => scrapes,
        Some(_) => scrapes + s.point_ms() + crate::promsource::ENGINE_DELAY_MS,
    }
}

/// `GET /api/status`.
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<BTreeMap<String, VariantStatus>>, ApiError> {
    Ok(Json(collect_status(&state).await?))
}

/// `GET /api/metrics?range=&variant=&start=&end=&step=&max_points=&target=`.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let now = state.clock.now_ms();
    let q = metrics_query(&state, &params, now)?;
    let array = state.source.points_json(q, now).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], axum::body::Body::new(ArrayBody(array.frames()))))
}

/// A JSON array as a response body, frame by frame
/// ([`JsonArray::frames`](crate::ports::json_array::JsonArray::frames): the cached pieces
/// themselves, a frame per run of them in one shared buffer): the 2 MB of an hour's points are
/// never one allocation, nor copied
/// (`ports::json_array` says why). Its exact size is known, so the answer keeps its
/// `Content-Length` (not chunked), as when it was one `String`.
struct ArrayBody(Frames);

impl http_body::Body for ArrayBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.get_mut().0.next().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.remaining() == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.remaining() as u64)
    }
}

/// `GET /api/targets`. In source mode the engine does not count failures in a row:
/// `consecutive_failures` is `null`.
pub(crate) async fn targets(State(state): State<AppState>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    state.source.status()?;
    let counted = state.settings.engine.is_none();
    let list = state
        .health
        .snapshot()
        .iter()
        .map(|h| {
            serde_json::json!({
                "url": h.url,
                "variant": h.variant,
                "up": h.up,
                "last_success": h.last_success(),
                "last_error": h.last_error,
                "scrape_duration_ms": h.scrape_duration_ms,
                "samples": h.samples,
                "consecutive_failures": counted.then_some(h.consecutive_failures),
                "version": h.version,
            })
        })
        .collect();
    Ok(Json(list))
}

/// `GET /api/config`. `source` says where the numbers come from (`sqlite`, or `prometheus`
/// with `prometheus_url`); in source mode the settings of scraping and storage have no value
/// (`null`) and `targets` lists the engine's instances.
pub(crate) async fn config(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let s = &state.settings;
    let human = |d| humantime::format_duration(d).to_string();
    let local = |d| s.engine.is_none().then(|| human(d));
    let variants: Vec<String> = known_variants(&state).await?.into_iter().collect();
    let targets: Vec<String> = match s.engine {
        None => s.targets.iter().map(|t| t.url.clone()).collect(),
        Some(_) => state.health.snapshot().into_iter().map(|h| h.url).collect(),
    };
    Ok(Json(serde_json::json!({
        "scrape_interval": s.scrape_interval.as_secs_f64(),
        "scrape_timeout": local(s.scrape_timeout),
        "targets": targets,
        "variants": variants,
        "retention_5s": local(s.retention_5s),
        "retention_1m": local(s.retention_1m),
        "downsample_interval": local(s.downsample_interval),
        "version": crate::VERSION,
        "source": if s.engine.is_some() { "prometheus" } else { "sqlite" },
        "prometheus_url": s.engine,
    })))
}

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

/// Validates `/api/metrics` parameters at `now_ms`, on the grid the state's source answers
/// the window on.
pub(crate) fn metrics_query(
    state: &AppState,
    params: &HashMap<String, String>,
    now_ms: i64,
) -> Result<PointQuery, ApiError> {
    parse_metrics_query(params, now_ms, |window, min_step| state.source.grid_ms(window, min_step, now_ms))
}

/// Validates `/api/metrics` parameters into a query. Every error names its parameter.
///
/// `grid` gives the width the source answers a window on, given the smallest step asked for
/// ([`crate::ports::read::DataSource::grid_ms`]); the step is a multiple of it. The step is
/// bounded by the window (see [`longest_step`]), so whatever the parameters, a read starts at
/// most one step before the window and no point is stamped after now rounded up to its bucket;
/// all time arithmetic on parameters is checked, so no value can overflow it.
pub(crate) fn parse_metrics_query(
    params: &HashMap<String, String>,
    now_ms: i64,
    grid: impl Fn((i64, i64), i64) -> i64,
) -> Result<PointQuery, ApiError> {
    let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let (start_ms, end_ms) = parse_window(get("range"), get("start"), get("end"), now_ms)?;
    let variant = parse_variant_filter(get("variant"))?;
    let max_points = parse_max_points(get("max_points"))?;
    let asked_step = parse_step(get("step"))?;
    let resolution = grid((start_ms, end_ms), asked_step);
    let longest = longest_step(start_ms, end_ms, resolution)?;
    if asked_step > longest {
        return Err(step_too_long(get("step").unwrap_or_default(), longest));
    }
    let step_ms = step_within((start_ms, end_ms), asked_step.max(resolution), resolution, max_points, longest)
        .ok_or_else(|| too_few_points(max_points))?;
    Ok(PointQuery { start_ms, end_ms, step_ms, variant, target_url: get("target").map(str::to_owned) })
}

/// `(start, end]` from `range` (default 1 h) ending at `end` (default now), or `start`/`end`.
/// Nothing is stored after now, so a window is read up to now at most: a point is never
/// stamped after now rounded up to its bucket, and a window's rates never divide by time that
/// has not happened yet.
pub(crate) fn parse_window(
    range: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    now_ms: i64,
) -> Result<(i64, i64), ApiError> {
    let range_ms = match range {
        None => 3_600_000,
        Some(r) => parse_positive_duration_ms(r).filter(|&ms| ms <= MAX_RANGE_MS).ok_or_else(|| {
            bad(format!("invalid range parameter {r:?}: use 5m, 15m, 1h, 6h, 24h, 7d or a duration up to 400d"))
        })?,
    };
    let time = |name: &str, v: &str| {
        parse_time_ms(v).ok_or_else(|| bad(format!("invalid {name} parameter {v:?}: use RFC 3339 or Unix seconds")))
    };
    let end_ms = end.map_or(Ok(now_ms), |v| time("end", v))?;
    let start_ms = match start {
        Some(v) => time("start", v)?,
        None => end_ms.checked_sub(range_ms).ok_or_else(|| bad("invalid end parameter: too far in the past".into()))?,
    };
    if start_ms >= end_ms {
        return Err(bad("invalid start parameter: start must be before end".into()));
    }
    if end_ms.checked_sub(start_ms).is_none_or(|len| len > MAX_RANGE_MS) {
        return Err(bad("invalid start parameter: the window is longer than 400d".into()));
    }
    let end_ms = end_ms.min(now_ms);
    if start_ms >= end_ms {
        return Err(bad("invalid start parameter: the window starts after now".into()));
    }
    Ok((start_ms, end_ms))
}

fn parse_variant_filter(v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some("all") => Ok(None),
        Some(v) if is_valid_variant(v) => Ok(Some(v.to_owned())),
        Some(v) => {
            Err(bad(format!("invalid variant parameter {v:?}: use all or a name of a-z 0-9 _ . - (at most 64)")))
        }
    }
}

fn parse_max_points(v: Option<&str>) -> Result<i64, ApiError> {
    match v {
        None => Ok(DEFAULT_MAX_POINTS),
        Some(v) => v.parse::<i64>().ok().filter(|n| (1..=MAX_MAX_POINTS).contains(n)).ok_or_else(|| {
            bad(format!("invalid max_points parameter {v:?}: use a whole number from 1 to {MAX_MAX_POINTS}"))
        }),
    }
}

/// The asked step in ms (0 when absent); its upper bound depends on the window.
fn parse_step(v: Option<&str>) -> Result<i64, ApiError> {
    match v {
        None => Ok(0),
        Some(v) => parse_positive_duration_ms(v)
            .filter(|&ms| ms >= 5_000)
            .ok_or_else(|| bad(format!("invalid step parameter {v:?}: use a duration of at least 5s"))),
    }
}

/// The longest step a window may have: its own length, rounded up to the table's resolution
/// (a window shorter than one row of the table it reads gets one row). A longer step would
/// read rows from before the window into its first point (a 400 d step over an hour read the
/// whole raw table) and stamp its last point far after now.
fn longest_step(start_ms: i64, end_ms: i64, resolution: i64) -> Result<i64, ApiError> {
    end_ms
        .checked_sub(start_ms)
        .and_then(|len| checked_bucket_end(len.max(resolution), resolution))
        .ok_or_else(|| bad("invalid start parameter: the window cannot be measured".into()))
}

fn step_too_long(asked: &str, longest_ms: i64) -> ApiError {
    let longest = humantime::format_duration(std::time::Duration::from_millis(longest_ms.unsigned_abs()));
    bad(format!("invalid step parameter {asked:?}: the step may be at most the window's length ({longest})"))
}

fn too_few_points(max_points: i64) -> ApiError {
    bad(format!(
        "invalid max_points parameter \"{max_points}\": this window does not start on a bucket edge, so it needs \
         at least 2 points with a step no longer than the window"
    ))
}

/// The smallest step, a multiple of `resolution`, at least `min_step` and at most `longest`,
/// whose epoch-aligned buckets cover `(start, end]` in at most `max_points` points (`None`: no
/// such step). A window that does not start on a bucket edge touches one bucket more than its
/// length divided by the step; that one counts.
fn step_within(
    (start_ms, end_ms): (i64, i64),
    min_step: i64,
    resolution: i64,
    max_points: i64,
    longest: i64,
) -> Option<i64> {
    let buckets = |step: i64| (bucket_end(end_ms, step) - bucket_end(start_ms + 1, step)) / step + 1;
    let span = end_ms - start_ms;
    let mut step = bucket_end(min_step.max((span + max_points - 1) / max_points), resolution).min(longest);
    while buckets(step) > max_points {
        if step >= longest {
            return None;
        }
        step = bucket_end(step + (step / 16).max(resolution), resolution).min(longest);
    }
    Some(step)
}

fn parse_positive_duration_ms(v: &str) -> Option<i64> {
    let d = humantime::parse_duration(v).ok()?;
    let ms = duration_ms(d);
    (ms > 0).then_some(ms)
}

pub(crate) fn parse_time_ms(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<f64>() {
        return (0.0..1e11).contains(&secs).then(|| (secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ports::read::{Grid, Reach};

    const NOW: i64 = 1_800_000_000_000;
    const GRID: Grid = Grid { point_ms: 5_000, rollup_ms: 60_000 };

    fn parse(params: &HashMap<String, String>, reach: Reach) -> Result<PointQuery, ApiError> {
        parse_metrics_query(params, NOW, |window, min_step| GRID.width_for(window, min_step, reach))
    }

    fn q(pairs: &[(&str, &str)]) -> Result<PointQuery, String> {
        let params = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        parse(&params, Reach::ALL).map_err(|e| e.to_string())
    }

    #[test]
    fn short_ranges_read_raw_points_long_ones_rollups() {
        let one_hour = q(&[("range", "1h")]).unwrap();
        assert_eq!(one_hour.step_ms, 5_000);
        let week = q(&[("range", "7d")]).unwrap();
        assert_eq!(week.step_ms, 600_000); // 7 d / 1500 points, rounded up to 10 min rows
        assert!(7 * 86_400_000 / week.step_ms <= 1500);
        let day = q(&[("range", "24h")]).unwrap();
        assert_eq!(day.step_ms, 60_000, "a day reads 1 min rows");
        let fine = q(&[("range", "7d"), ("step", "5m")]).unwrap();
        assert_eq!(fine.step_ms, 420_000, "a finer step over a week reads 1 min rows");
    }

    #[test]
    fn step_and_max_points_are_honoured() {
        assert_eq!(q(&[("range", "1h"), ("step", "30s")]).unwrap().step_ms, 30_000);
        assert_eq!(q(&[("range", "1h"), ("max_points", "60")]).unwrap().step_ms, 60_000);
        assert_eq!(q(&[("range", "1h"), ("step", "7s")]).unwrap().step_ms, 10_000);
    }

    #[test]
    fn start_and_end_accept_rfc3339_and_unix_seconds() {
        let r = q(&[("start", "2026-01-01T00:00:00Z"), ("end", "1767225900")]).unwrap();
        assert_eq!(r.start_ms, 1_767_225_600_000);
        assert_eq!(r.end_ms, 1_767_225_900_000);
        assert_eq!(r.step_ms, 5_000);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(q(&[("range", "soon")]).unwrap_err().contains("range"));
        assert!(q(&[("range", "0s")]).unwrap_err().contains("range"));
        assert!(q(&[("variant", "<script>")]).unwrap_err().contains("variant"));
        assert!(q(&[("max_points", "0")]).unwrap_err().contains("max_points"));
        assert!(q(&[("max_points", "10001")]).unwrap_err().contains("max_points"));
        assert!(q(&[("step", "1s")]).unwrap_err().contains("step"));
        assert!(q(&[("start", "yesterday")]).unwrap_err().contains("start"));
        assert!(q(&[("end", "nope")]).unwrap_err().contains("end"));
        assert!(q(&[("start", "1767225900"), ("end", "1767225600")]).unwrap_err().contains("start"));
    }

    #[test]
    fn max_points_holds_for_windows_off_the_bucket_grid() {
        for (start, end, max) in
            [(NOW - 3_600_000 + 1_234, NOW + 1_234, 60), (NOW - 600_001, NOW, 7), (NOW - 5, NOW, 1)]
        {
            let (s, e) = ((start / 1000).to_string(), format!("{}.{:03}", end / 1000, end % 1000));
            let p = q(&[("start", &s), ("end", &e), ("max_points", &max.to_string())]).unwrap();
            let n = (bucket_end(p.end_ms, p.step_ms) - bucket_end(p.start_ms + 1, p.step_ms)) / p.step_ms + 1;
            assert!(n <= max, "{n} points > max_points {max} (step {})", p.step_ms);
        }
    }

    #[test]
    fn a_short_window_older_than_raw_retention_reads_rollups() {
        let params: HashMap<String, String> =
            [("start", "1799990000"), ("end", "1799990600")].iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let reach = Reach { raw_since_ms: NOW - 3_600_000, rollup_since_ms: i64::MIN };
        let p = parse(&params, reach).unwrap();
        assert!(p.step_ms >= 60_000, "raw rows of that window are gone");
        let recent: HashMap<String, String> =
            [("range", "10m")].iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        assert_eq!(parse(&recent, reach).unwrap().step_ms, 5_000);
    }

    #[test]
    fn a_step_is_at_most_the_window() {
        for step in ["400d", "12h", "61m", "300000000y"] {
            assert!(q(&[("range", "1h"), ("step", step)]).unwrap_err().contains("step parameter"), "{step}");
        }
        assert!(q(&[("range", "5m"), ("step", "6m")]).unwrap_err().contains("at most the window's length (5m)"));
        assert_eq!(q(&[("range", "1h"), ("step", "1h")]).unwrap().step_ms, 3_600_000);
        // A window shorter than a row of its table gets one row.
        assert_eq!(q(&[("range", "4s"), ("step", "5s")]).unwrap().step_ms, 5_000);
        assert_eq!(q(&[("range", "1s")]).unwrap().step_ms, 5_000);
    }

    #[test]
    fn max_points_never_widens_the_step_past_the_window() {
        let ranges = ["1s", "59s", "5m", "59m", "1h", "7h", "23h", "3d", "400d"];
        for (range, max) in ranges.iter().flat_map(|r| [1, 2, 3, 7, 240, 10_000].map(|m| (*r, m))) {
            let len = duration_ms(humantime::parse_duration(range).unwrap());
            let table = [(3_600_000, 5_000), (86_400_000, 60_000), (i64::MAX, 600_000)];
            let width = table.iter().find(|(up_to, _)| len <= *up_to).map_or(0, |t| t.1);
            match q(&[("range", range), ("max_points", &max.to_string())]) {
                Ok(p) => {
                    let n = (bucket_end(p.end_ms, p.step_ms) - bucket_end(p.start_ms + 1, p.step_ms)) / p.step_ms + 1;
                    assert!(n <= max, "{range}/{max}: {n} points");
                    assert!(p.step_ms <= bucket_end(len.max(width), width), "{range}/{max}: step {}", p.step_ms);
                }
                Err(e) => assert!(max == 1 && e.contains("max_points parameter"), "{range}/{max}: {e}"),
            }
        }
        let aligned = q(&[("start", "1799996400"), ("end", "1800000000"), ("max_points", "1")]).unwrap();
        assert_eq!(aligned.step_ms, 3_600_000);
    }

    #[test]
    fn windows_are_read_up_to_now_at_most() {
        let p = q(&[("range", "2h"), ("end", "1800003600")]).unwrap();
        assert_eq!((p.start_ms, p.end_ms), (NOW - 3_600_000, NOW));
        assert!(q(&[("start", "1800000060"), ("end", "1800003600")]).unwrap_err().contains("after now"));
        assert!(q(&[("range", "1h"), ("end", "99999999999")]).unwrap_err().contains("start parameter"));
        let ancient = q(&[("start", "0001-01-01T00:00:00Z"), ("end", "0001-01-02T00:00:00Z"), ("step", "1d")]);
        assert_eq!(ancient.unwrap().step_ms, 86_400_000);
    }

    #[test]
    fn variant_all_means_no_filter() {
        assert_eq!(q(&[("variant", "all")]).unwrap().variant, None);
        assert_eq!(q(&[("variant", "canary")]).unwrap().variant.as_deref(), Some("canary"));
    }
}
