//! zai-dash's own metrics (`zai_dash_*`), served at `GET /metrics` on the dashboard listener.
//!
//! The hot paths only touch atomics or counters under locks they already hold (the health
//! board's); everything else (database size and row counts, SSE clients, target health) is
//! read when `/metrics` is scraped. The built-in proxy's `zai_proxy_*` families live on the
//! proxy's own listener (`PROXY_LISTEN_ADDR` with `serve --proxy`), so the two never mix.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alerts::ReceiverView;
use crate::expo::{AtomicHistogram, Exposition};
use crate::health::TargetHealth;
use crate::net::ListenerTrips;
use crate::remote::StatusSnapshot;
use crate::store::{DbFigures, WriterStats};

/// Self-metrics that have no other home: updated by the downsampler, and in source mode by
/// the engine client.
#[derive(Debug)]
pub struct SelfMetrics {
    /// Durations of downsample runs.
    pub downsample: AtomicHistogram,
    /// Source mode: series left out of the engine's answers.
    pub engine: Option<std::sync::Arc<crate::promsource::EngineStats>>,
    /// Connections the dashboard listener closed on its own (header-read and idle timeouts):
    /// a scripted client whose keep-alive request is answered with a reset can tell from these
    /// whether the server cut the connection or something between them did.
    pub listener: std::sync::Arc<ListenerTrips>,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self { downsample: AtomicHistogram::downsample_seconds(), engine: None, listener: Default::default() }
    }
}

/// Everything one `/metrics` answer needs.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    /// Every target; retired (vanished) addresses are left out of the output, so series stay
    /// bounded by the live pods while pods come and go.
    pub targets: &'a [TargetHealth],
    /// Scrape durations.
    pub scrape_durations: &'a AtomicHistogram,
    /// Writer counters.
    pub writer: &'a WriterStats,
    /// Downsampler and other counters.
    pub own: &'a SelfMetrics,
    /// Connected SSE clients.
    pub sse_clients: usize,
    /// Heap SQLite holds (`None` in source mode, which opens no database).
    pub sqlite_heap_bytes: Option<i64>,
    /// Database jobs that waited for a pooled connection, and the seconds they waited (`None`
    /// in source mode).
    pub sqlite_pool_waits: Option<(u64, f64)>,
    /// Database figures; `None` when they could not be read.
    pub db: Option<&'a DbFigures>,
    /// Remote write, when configured.
    pub remote: Option<&'a StatusSnapshot>,
    /// Alert receivers' counters.
    pub receivers: &'a [ReceiverView],
    /// Alerts pending and firing now.
    pub alerts_pending_firing: (usize, usize),
    /// Evaluations of the alert rules since start.
    pub alert_evaluations: u64,
    /// False while the database refuses writes (always true in source mode, which has none).
    pub storage_healthy: bool,
    /// Each pair's latest minutely canary verdict (none in source mode).
    pub canary: &'a [crate::store::canary_log::VerdictEntry],
}

/// Renders the exposition; families in name order, as client_golang does.
pub(crate) fn render(i: &Inputs<'_>) -> String {
    let mut e = Exposition::new();
    write_alerts(&mut e, i);
    e.family("zai_dash_build_info", "Build information; the value is always 1.", "gauge");
    e.sample("zai_dash_build_info", &[("version", crate::VERSION)], 1.0);
    write_canary(&mut e, i.canary);
    if let Some(db) = i.db {
        e.family("zai_dash_db_rows", "Rows per table of the SQLite database.", "gauge");
        for (table, n) in &db.rows {
            e.sample("zai_dash_db_rows", &[("table", table)], *n as f64);
        }
        e.family("zai_dash_db_size_bytes", "Size of the SQLite database file plus its write-ahead log.", "gauge");
        e.sample("zai_dash_db_size_bytes", &[], db.bytes as f64);
    }
    i.own.downsample.write(&mut e, "zai_dash_downsample_duration_seconds", "Duration of rollup and retention runs.");
    write_listener(&mut e, &i.own.listener);
    write_cut(&mut e, i.targets);
    if let Some(engine) = &i.own.engine {
        e.family(
            "zai_dash_engine_series_dropped_total",
            "Series of the engine's answers left out: a variant label that is not a valid name, or a variant beyond the first 64 (source mode).",
            "counter",
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        e.sample(
            "zai_dash_engine_series_dropped_total",
            &[("reason", "invalid_variant")],
            load(&engine.invalid_variant),
        );
        e.sample(
            "zai_dash_engine_series_dropped_total",
            &[("reason", "too_many_variants")],
            load(&engine.too_many_variants),
        );
    }
    if let Some(r) = i.remote {
        write_remote(&mut e, r);
    }
    i.scrape_durations.write(
        &mut e,
        "zai_dash_scrape_duration_seconds",
        "Duration of target scrapes, failed ones included.",
    );
    write_dropped(&mut e, i.targets);
    write_scrapes(&mut e, i.targets);
    if let Some(bytes) = i.sqlite_heap_bytes {
        e.family(
            "zai_dash_sqlite_heap_bytes",
            "Heap memory SQLite holds in this process: page caches, statements and their working memory.",
            "gauge",
        );
        e.sample("zai_dash_sqlite_heap_bytes", &[], bytes as f64);
    }
    if let Some((waits, seconds)) = i.sqlite_pool_waits {
        e.family(
            "zai_dash_sqlite_pool_wait_seconds_total",
            "Time database jobs waited for a connection while all of the pool's were busy.",
            "counter",
        );
        e.sample("zai_dash_sqlite_pool_wait_seconds_total", &[], seconds);
        e.family(
            "zai_dash_sqlite_pool_waits_total",
            "Database jobs that found all of the pool's connections busy and waited for one.",
            "counter",
        );
        e.sample("zai_dash_sqlite_pool_waits_total", &[], waits as f64);
    }
    e.family("zai_dash_sse_clients", "Connected Server-Sent Events clients.", "gauge");
    e.sample("zai_dash_sse_clients", &[], i.sse_clients as f64);
    e.family("zai_dash_storage_healthy", "Whether the database takes writes (1) or refuses them (0).", "gauge");
    e.sample("zai_dash_storage_healthy", &[], f64::from(u8::from(i.storage_healthy)));
    e.family("zai_dash_target_up", "Whether the last scrape of a target succeeded (1) or not (0).", "gauge");
    for t in i.targets.iter().filter(|t| !t.retired) {
        e.sample("zai_dash_target_up", &[("target", &t.url), ("variant", &t.variant)], f64::from(u8::from(t.up)));
    }
    write_writer(&mut e, i.writer);
    e.finish()
}

/// The canary verdict of each pair judged in the last few minutes, for Prometheus rules to
/// read instead of repeating the analysis (`zai-dash rules --prometheus`).
fn write_canary(e: &mut Exposition, entries: &[crate::store::canary_log::VerdictEntry]) {
    let name = crate::promql::CANARY_VERDICT_GAUGE;
    if entries.is_empty() {
        return;
    }
    e.family(
        name,
        "Canary verdict of the candidate against the baseline since its rollout began, as /api/compare gives it: 0 pass, 1 warn, 2 fail, -1 insufficient data.",
        "gauge",
    );
    for v in entries {
        if let Some(value) = crate::promql::canary_gauge_value(&v.verdict) {
            e.sample(name, &[("baseline", &v.baseline), ("candidate", &v.candidate)], value);
        }
    }
}

fn write_remote(e: &mut Exposition, r: &StatusSnapshot) {
    let families: [(&str, &str, &str, f64); 6] = [
        (
            "zai_dash_remote_write_queue_age_seconds",
            "Seconds since the oldest sample waiting for the remote write receiver was scraped (0 when none waits).",
            "gauge",
            r.age_seconds,
        ),
        (
            "zai_dash_remote_write_queue_bytes",
            "Bytes of the samples waiting for the remote write receiver, as encoded (REMOTE_WRITE_MAX_BACKLOG_BYTES bounds them).",
            "gauge",
            r.queued_bytes as f64,
        ),
        (
            "zai_dash_remote_write_queue_samples",
            "Samples waiting for the remote write receiver.",
            "gauge",
            r.queued as f64,
        ),
        (
            "zai_dash_remote_write_samples_dropped_total",
            "Samples dropped before the receiver got them: older than REMOTE_WRITE_MAX_BACKLOG, the oldest beyond REMOTE_WRITE_MAX_BACKLOG_BYTES, beyond the per-scrape series limit, or offered while the hand-off was full.",
            "counter",
            r.dropped as f64,
        ),
        (
            "zai_dash_remote_write_samples_failed_total",
            "Samples the receiver refused for good (an answer 4xx other than 429).",
            "counter",
            r.failed as f64,
        ),
        ("zai_dash_remote_write_samples_sent_total", "Samples the receiver accepted.", "counter", r.sent as f64),
    ];
    for (name, help, kind, value) in families {
        e.family(name, help, kind);
        e.sample(name, &[], value);
    }
}

/// A counter family of the alert receivers: name, help, and the count it reads.
type ReceiverFamily = (&'static str, &'static str, fn(&ReceiverView) -> u64);

/// Receivers' deliveries, failed attempts and drops, and the alerts pending and firing.
fn write_alerts(e: &mut Exposition, i: &Inputs<'_>) {
    let families: [ReceiverFamily; 3] = [
        ("zai_dash_alert_deliveries_total", "Alert notifications delivered, per receiver.", |r| r.sent),
        (
            "zai_dash_alert_delivery_failures_total",
            "Failed alert delivery attempts, per receiver (each is retried with backoff).",
            |r| r.failures,
        ),
        (
            "zai_dash_alert_notifications_dropped_total",
            "Alert notifications dropped because a receiver's mailbox was full.",
            |r| r.dropped,
        ),
    ];
    for (name, help, get) in families {
        e.family(name, help, "counter");
        for r in i.receivers {
            e.sample(name, &[("receiver", r.name)], get(r) as f64);
        }
    }
    e.family(
        "zai_dash_alert_evaluations_total",
        "Evaluations of the alert rules (one per live tick, or after two point intervals without one).",
        "counter",
    );
    e.sample("zai_dash_alert_evaluations_total", &[], i.alert_evaluations as f64);
    e.family("zai_dash_alerts", "Alerts by state (pending or firing) at the last evaluation.", "gauge");
    let (pending, firing) = i.alerts_pending_firing;
    e.sample("zai_dash_alerts", &[("state", "firing")], firing as f64);
    e.sample("zai_dash_alerts", &[("state", "pending")], pending as f64);
}

fn write_dropped(e: &mut Exposition, targets: &[TargetHealth]) {
    e.family(
        "zai_dash_scrape_series_dropped_total",
        "Series left out of scrapes by the per-target limits (20,000 series, 64 le bounds per family).",
        "counter",
    );
    for t in targets.iter().filter(|t| !t.retired) {
        e.sample("zai_dash_scrape_series_dropped_total", &[("target", &t.url)], t.series_dropped as f64);
    }
}

fn write_cut(e: &mut Exposition, targets: &[TargetHealth]) {
    e.family(
        "zai_dash_label_values_cut_total",
        "Label values (or names) of scraped samples longer than 128 bytes, cut to 128 bytes; each occurrence counts.",
        "counter",
    );
    for t in targets.iter().filter(|t| !t.retired) {
        e.sample("zai_dash_label_values_cut_total", &[("target", &t.url)], t.labels_cut as f64);
    }
}

fn write_scrapes(e: &mut Exposition, targets: &[TargetHealth]) {
    e.family("zai_dash_scrapes_total", "Scrapes by target and result (success or the kind of failure).", "counter");
    for t in targets.iter().filter(|t| !t.retired) {
        let mut results: BTreeMap<&str, u64> = t.scrape_failures.iter().map(|(k, v)| (*k, *v)).collect();
        results.insert("success", t.scrapes_ok);
        for (result, n) in results {
            e.sample("zai_dash_scrapes_total", &[("result", result), ("target", &t.url)], n as f64);
        }
    }
}

/// The dashboard listener's own closes, by reason (`net::serve`'s deadlines).
fn write_listener(e: &mut Exposition, trips: &ListenerTrips) {
    e.family(
        "zai_dash_http_connections_closed_total",
        "Dashboard connections the server closed on its own: request head not complete within HTTP_HEADER_READ_TIMEOUT (header_timeout), or idle for HTTP_IDLE_TIMEOUT (idle_timeout).",
        "counter",
    );
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    e.sample("zai_dash_http_connections_closed_total", &[("reason", "header_timeout")], load(&trips.header_timeouts));
    e.sample("zai_dash_http_connections_closed_total", &[("reason", "idle_timeout")], load(&trips.idle_closes));
}

fn write_writer(e: &mut Exposition, w: &WriterStats) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    e.family(
        "zai_dash_write_backlog_batches",
        "Batches kept in memory after failed writes, waiting for a retry.",
        "gauge",
    );
    e.sample("zai_dash_write_backlog_batches", &[], load(&w.backlog));
    e.family("zai_dash_write_batches_total", "Batches (one per 5 s bucket) committed to the database.", "counter");
    e.sample("zai_dash_write_batches_total", &[], load(&w.committed));
    e.family(
        "zai_dash_write_drops_total",
        "Batches dropped because the backlog outgrew an hour of them, or the writer was gone.",
        "counter",
    );
    e.sample("zai_dash_write_drops_total", &[], load(&w.dropped));
    e.family("zai_dash_write_failures_total", "Failed database transactions (each is retried).", "counter");
    e.sample("zai_dash_write_failures_total", &[], load(&w.failed));
    e.family(
        "zai_dash_write_merges_total",
        "Ticks whose notice found the write queue full and was merged into the next one (nothing lost).",
        "counter",
    );
    e.sample("zai_dash_write_merges_total", &[], load(&w.merged));
    e.family(
        "zai_dash_write_queue_depth",
        "Ticks the writer has not taken notice of yet (their rows are held and readable meanwhile).",
        "gauge",
    );
    e.sample("zai_dash_write_queue_depth", &[], load(&w.queued));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_targets_are_left_out() {
        let live = TargetHealth::new(2, "http://10.0.0.2:8080/metrics".into(), "canary".into());
        let mut t = TargetHealth::new(1, "http://10.0.0.1:8080/metrics".into(), "canary".into());
        t.scrapes_ok = 4;
        t.scrape_failures.insert("timeout", 2);
        t.retired = true;
        let own = SelfMetrics::default();
        own.listener.idle_closes.fetch_add(3, Ordering::Relaxed);
        let writer = WriterStats::default();
        let durations = AtomicHistogram::scrape_seconds();
        let text = render(&Inputs {
            targets: &[t, live],
            scrape_durations: &durations,
            writer: &writer,
            canary: &[],
            own: &own,
            sse_clients: 2,
            sqlite_heap_bytes: Some(4096),
            sqlite_pool_waits: Some((3, 0.25)),
            db: None,
            remote: None,
            receivers: &[],
            alerts_pending_firing: (1, 2),
            alert_evaluations: 7,
            storage_healthy: false,
        });
        assert!(!text.contains("10.0.0.1"), "{text}");
        assert!(
            text.contains("zai_dash_scrapes_total{result=\"success\",target=\"http://10.0.0.2:8080/metrics\"} 0\n")
        );
        assert!(text.contains("zai_dash_target_up{target=\"http://10.0.0.2:8080/metrics\",variant=\"canary\"} 0\n"));
        assert!(text.contains("zai_dash_sse_clients 2\n"));
        assert!(text.contains("zai_dash_sqlite_heap_bytes 4096\n"), "{text}");
        assert!(text.contains("zai_dash_sqlite_pool_waits_total 3\n"), "{text}");
        assert!(text.contains("zai_dash_sqlite_pool_wait_seconds_total 0.25\n"), "{text}");
        assert!(text.contains("zai_dash_alerts{state=\"firing\"} 2\n"));
        assert!(text.contains("zai_dash_alert_evaluations_total 7\n"));
        assert!(text.contains("zai_dash_storage_healthy 0\n"));
        assert!(text.contains("zai_dash_http_connections_closed_total{reason=\"header_timeout\"} 0\n"), "{text}");
        assert!(text.contains("zai_dash_http_connections_closed_total{reason=\"idle_timeout\"} 3\n"), "{text}");
        assert!(crate::scrape::parse::parse(&text).is_ok());
    }
}
