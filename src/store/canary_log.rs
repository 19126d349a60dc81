//! The canary verdict of every pair, judged once a minute and kept as long as the 1 min rows:
//! `/api/compare/history`, the verdict band of `/compare`, and the `zai_dash_canary_verdict`
//! gauge on `/metrics` (the latest entry) read it. Each entry is the judgement `/api/compare`
//! gives by default at that minute ([`crate::ports::rollout::judge`], since the candidate's
//! rollout began), so replaying the band shows what a person refreshing the page saw.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use crate::canary::CanaryConfig;
use crate::clock::SharedClock;
use crate::ports::read::DataSource;
use crate::ports::rollout::{self, Interval};

/// One pair's verdict at one minute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerdictEntry {
    /// When it was judged, Unix ms.
    #[serde(rename = "timestamp")]
    pub ts_ms: i64,
    /// Baseline variant.
    #[serde(skip)]
    pub baseline: String,
    /// Candidate variant.
    #[serde(skip)]
    pub candidate: String,
    /// `pass`, `warn`, `fail` or `insufficient_data`.
    pub verdict: String,
    /// The score, 0-100, once a metric decided.
    pub score: Option<f64>,
    /// Start of the interval judged, Unix ms.
    #[serde(rename = "since")]
    pub since_ms: i64,
    /// The candidate's version, when a version change marks the rollout.
    pub version: Option<String>,
    /// Per metric: `pass`, `high`, `low`, `nodata` or `undecided`.
    pub metrics: std::collections::BTreeMap<String, String>,
}

fn insert(conn: &mut Connection, entries: &[VerdictEntry]) -> Result<(), StoreError> {
    let tx = super::write_transaction(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO canary_history (ts, baseline, candidate, verdict, score, since, version, metrics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for e in entries {
            let metrics = serde_json::to_string(&e.metrics).unwrap_or_else(|_| "{}".to_owned());
            stmt.execute(params![
                e.ts_ms,
                e.baseline,
                e.candidate,
                e.verdict,
                e.score,
                e.since_ms,
                e.version,
                metrics
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<VerdictEntry> {
    let metrics: String = r.get(7)?;
    Ok(VerdictEntry {
        ts_ms: r.get(0)?,
        baseline: r.get(1)?,
        candidate: r.get(2)?,
        verdict: r.get(3)?,
        score: r.get(4)?,
        since_ms: r.get(5)?,
        version: r.get(6)?,
        metrics: serde_json::from_str(&metrics).unwrap_or_default(),
    })
}

const COLUMNS: &str = "ts, baseline, candidate, verdict, score, since, version, metrics";

/// Entries of one pair with `start < ts <= end`, ascending.
fn history(conn: &Connection, pair: (&str, &str), (start, end): (i64, i64)) -> Result<Vec<VerdictEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM canary_history WHERE baseline = ?1 AND candidate = ?2 AND ts > ?3 AND ts <= ?4 ORDER BY ts"
    ))?;
    let rows = stmt.query_map(params![pair.0, pair.1, start, end], entry)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest entry of every pair judged after `after`.
fn latest(conn: &Connection, after: i64) -> Result<Vec<VerdictEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM canary_history h WHERE ts = (SELECT max(ts) FROM canary_history
         WHERE baseline = h.baseline AND candidate = h.candidate) AND ts > ?1 ORDER BY baseline, candidate"
    ))?;
    let rows = stmt.query_map([after], entry)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes entries at or before `cutoff` (the 1 min rows' retention).
pub(crate) fn trim(conn: &Connection, cutoff: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM canary_history WHERE ts <= ?1", [cutoff])?)
}

impl Store {
    /// Stores one minute's entries.
    pub async fn record_verdicts(&self, entries: Vec<VerdictEntry>) -> Result<(), StoreError> {
        self.with_conn(move |c| insert(c, &entries)).await
    }

    /// One pair's entries over `(start, end]`, ascending.
    pub async fn verdict_history(
        &self,
        baseline: &str,
        candidate: &str,
        window: (i64, i64),
    ) -> Result<Vec<VerdictEntry>, StoreError> {
        let (b, c) = (baseline.to_owned(), candidate.to_owned());
        self.with_conn(move |conn| history(conn, (&b, &c), window)).await
    }

    /// Every pair's newest entry judged after `after_ms`.
    pub async fn latest_verdicts(&self, after_ms: i64) -> Result<Vec<VerdictEntry>, StoreError> {
        self.with_conn(move |c| latest(c, after_ms)).await
    }
}

/// What the minutely judge needs.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Where the entries go.
    pub store: Store,
    /// What is judged.
    pub source: Arc<dyn DataSource>,
    /// Canary analysis settings.
    pub config: Arc<CanaryConfig>,
    /// Baselines: every other variant is judged against each of them that has data.
    pub baselines: Vec<String>,
    /// Wall clock.
    pub clock: SharedClock,
    /// How often (one rollup width).
    pub every: Duration,
}

/// Every pair's entry at `now_ms`; a pair that cannot be judged is left out (and logged).
pub async fn judge_all(w: &Watch, now_ms: i64) -> Result<Vec<VerdictEntry>, crate::ports::read::SourceError> {
    let variants = w.source.variants().await?;
    let mut out = Vec::new();
    for baseline in w.baselines.iter().filter(|b| variants.contains(*b)) {
        for candidate in variants.iter().filter(|v| *v != baseline) {
            let interval = Interval::rollout(w.source.as_ref(), candidate, now_ms).await?;
            let j = rollout::judge(w.source.as_ref(), (baseline, candidate), interval, &w.config).await?;
            let metrics = j
                .judgement
                .rows
                .iter()
                .filter_map(|r| {
                    let class = serde_json::to_value(r.classification).ok()?;
                    Some((r.metric.name().to_owned(), class.as_str()?.to_owned()))
                })
                .collect();
            out.push(VerdictEntry {
                ts_ms: now_ms,
                baseline: baseline.clone(),
                candidate: candidate.clone(),
                verdict: j.judgement.verdict.as_str().to_owned(),
                score: j.judgement.score,
                since_ms: j.interval.since_ms,
                version: j.interval.started.and_then(|s| s.version),
                metrics,
            });
        }
    }
    Ok(out)
}

/// Judges every pair once per `every` until `stop`, storing the entries.
pub async fn run(w: Watch, stop: CancellationToken) {
    let mut interval = tokio::time::interval(w.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let now = w.clock.now_ms();
        let stored = match judge_all(&w, now).await {
            Ok(entries) if entries.is_empty() => Ok(()),
            Ok(entries) => w.store.record_verdicts(entries).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::debug!(error = %e, "Canary verdicts not recorded this minute.");
        }
    }
}
