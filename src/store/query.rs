//! Reading rows back, and the range query behind `/api/metrics`.
//!
//! Ranges up to [`RAW_RANGE_LIMIT_MS`] read `metrics_5s`; longer ones read `metrics_1m`, plus
//! the newest minutes not rolled up yet, rolled from `metrics_5s` on the fly, so a long range
//! never misses its most recent end (the Go dashboard lost up to 10 minutes there).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, codec};
use crate::clock::bucket_end;
use std::sync::Arc;

use crate::point::summary::status;
use crate::point::{Point, PointBuilder, Quota, SumCount, Summary, TargetRow};

/// Ranges up to one hour are answered from raw points.
pub const RAW_RANGE_LIMIT_MS: i64 = 3_600_000;

/// Which points table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `metrics_5s`.
    Raw,
    /// `metrics_1m`.
    Rollup,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Raw => "metrics_5s",
            Table::Rollup => "metrics_1m",
        }
    }
}

/// A target as stored.
#[derive(Debug, Clone)]
pub struct StoredTarget {
    /// Id.
    pub id: i64,
    /// Scrape URL.
    pub url: String,
    /// Latest variant.
    pub variant: String,
    /// Serialized state, if the target was ever scraped.
    pub state: Option<String>,
}

const WATERMARK_KEY: &str = "rollup_watermark_ms";

/// End of the last minute rolled into `metrics_1m`, if any.
pub fn watermark(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [WATERMARK_KEY], |r| r.get(0)).optional()?)
}

/// Moves the rollup watermark.
pub fn set_watermark(conn: &Connection, ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![WATERMARK_KEY, ms],
    )?;
    Ok(())
}

/// Every stored target.
pub fn targets(conn: &Connection) -> Result<Vec<StoredTarget>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, url, variant, state FROM targets ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| Ok(StoredTarget { id: r.get(0)?, url: r.get(1)?, variant: r.get(2)?, state: r.get(3)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Registers configured targets (keeping ids and state of known ones) and returns them in
/// configuration order.
pub fn register_targets(
    conn: &Connection,
    urls_and_variants: &[(String, String)],
    now_ms: i64,
) -> Result<Vec<StoredTarget>, StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO targets (url, variant, first_seen_ms) VALUES (?1, ?2, ?3)")?;
    for (url, variant) in urls_and_variants {
        insert.execute(params![url, variant, now_ms])?;
    }
    let all = targets(conn)?;
    Ok(urls_and_variants.iter().filter_map(|(url, _)| all.iter().find(|t| &t.url == url).cloned()).collect())
}

/// Every variant name by id.
pub fn variant_names(conn: &Connection) -> Result<HashMap<i64, String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, name FROM variants")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The id of a variant name, created on first use.
pub fn variant_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO variants (name) VALUES (?1)")?.execute([name])?;
    Ok(conn.prepare_cached("SELECT id FROM variants WHERE name = ?1")?.query_row([name], |r| r.get(0))?)
}

/// Inserts a raw row; if the target already has a row for that bucket (two scrapes completed
/// in one bucket, or a retried late batch), the two are merged instead of one being lost.
/// Returns true when it merged.
pub fn upsert_raw_row(conn: &Connection, row: &TargetRow) -> Result<bool, StoreError> {
    let vid = variant_id(conn, &row.variant)?;
    let data = codec::encode(&row.counts, &row.totals, &row.gauges);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO metrics_5s (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(target_id, ts) DO NOTHING",
        )?
        .execute(params![row.target_id, row.ts_ms, vid, row.elapsed_ms, data])?;
    if inserted == 0 {
        let names = variant_names(conn)?;
        if let Some(mut existing) = row_at(conn, Table::Raw, row.target_id, row.ts_ms, &names)? {
            existing.absorb_later(row);
            replace_row(conn, Table::Raw, &existing)?;
        }
    }
    Ok(inserted == 0)
}

/// Writes a row, replacing any row of the same target and bucket.
pub fn replace_row(conn: &Connection, table: Table, row: &TargetRow) -> Result<(), StoreError> {
    let vid = variant_id(conn, &row.variant)?;
    let data = codec::encode(&row.counts, &row.totals, &row.gauges);
    let sql = format!(
        "INSERT OR REPLACE INTO {} (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        table.name()
    );
    conn.prepare_cached(&sql)?.execute(params![row.target_id, row.ts_ms, vid, row.elapsed_ms, data])?;
    Ok(())
}

fn decode_row(
    target_id: i64,
    ts: i64,
    vid: i64,
    elapsed: i64,
    data: &[u8],
    names: &HashMap<i64, String>,
) -> Result<TargetRow, StoreError> {
    let (counts, totals, gauges) = codec::decode(data)?;
    Ok(TargetRow {
        target_id,
        variant: names.get(&vid).cloned().unwrap_or_else(|| "unknown".to_owned()),
        ts_ms: ts,
        elapsed_ms: elapsed,
        counts,
        totals,
        gauges,
    })
}

fn row_at(
    conn: &Connection,
    table: Table,
    target_id: i64,
    ts: i64,
    names: &HashMap<i64, String>,
) -> Result<Option<TargetRow>, StoreError> {
    let sql = format!("SELECT variant_id, elapsed_ms, data FROM {} WHERE target_id = ?1 AND ts = ?2", table.name());
    let raw = conn
        .prepare_cached(&sql)?
        .query_row(params![target_id, ts], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))
        .optional()?;
    raw.map(|(vid, el, data)| decode_row(target_id, ts, vid, el, &data, names)).transpose()
}

/// The latest row of a target at or before `ts`.
pub fn last_row_at_or_before(
    conn: &Connection,
    table: Table,
    target_id: i64,
    ts: i64,
    names: &HashMap<i64, String>,
) -> Result<Option<TargetRow>, StoreError> {
    let sql = format!(
        "SELECT ts, variant_id, elapsed_ms, data FROM {} WHERE target_id = ?1 AND ts <= ?2 ORDER BY ts DESC LIMIT 1",
        table.name()
    );
    let raw = conn
        .prepare_cached(&sql)?
        .query_row(params![target_id, ts], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
        })
        .optional()?;
    raw.map(|(t, vid, el, data)| decode_row(target_id, t, vid, el, &data, names)).transpose()
}

/// Rows of one target with `after < ts <= until`, in time order.
pub fn target_rows(
    conn: &Connection,
    table: Table,
    target_id: i64,
    after: i64,
    until: i64,
    names: &HashMap<i64, String>,
) -> Result<Vec<TargetRow>, StoreError> {
    let sql = format!(
        "SELECT ts, variant_id, elapsed_ms, data FROM {} WHERE target_id = ?1 AND ts > ?2 AND ts <= ?3 ORDER BY ts",
        table.name()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![target_id, after, until])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let data = r.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
        out.push(decode_row(target_id, r.get(0)?, r.get(1)?, r.get(2)?, data, names)?);
    }
    Ok(out)
}

/// The latest raw row of every stored target (seeds the live point builder's running totals).
pub fn latest_rows(conn: &Connection) -> Result<Vec<TargetRow>, StoreError> {
    let names = variant_names(conn)?;
    let mut out = Vec::new();
    for t in targets(conn)? {
        out.extend(last_row_at_or_before(conn, Table::Raw, t.id, i64::MAX, &names)?);
    }
    Ok(out)
}

/// What `/api/metrics` asks for, already validated.
#[derive(Debug, Clone)]
pub struct PointQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Output bucket width; a multiple of the source table's width.
    pub step_ms: i64,
    /// Read `metrics_5s` (else `metrics_1m`).
    pub raw: bool,
    /// Only this variant.
    pub variant: Option<String>,
    /// Only this target URL.
    pub target_url: Option<String>,
}

/// A row as read by a range query: in place ([`codec::RowView`]) from a table, or decoded (the
/// raw tail of a long range, rolled on the fly).
#[derive(Debug, Clone, Copy)]
pub enum RowRef<'a> {
    /// Read in place.
    View(&'a codec::RowView<'a>),
    /// Decoded.
    Row(&'a TargetRow),
}

impl RowRef<'_> {
    /// Adds the row's increases into `counts` (allocating only for labels `counts` lacks).
    pub fn add_to(&self, counts: &mut crate::point::Counts) {
        match self {
            RowRef::View(v) => v.add_to(counts),
            RowRef::Row(r) => counts.add(&r.counts),
        }
    }
}

/// Visitor of every row a range query reads: variant, bucket end, row (in no particular order).
pub type RowVisitor<'v> = dyn FnMut(&str, i64, RowRef<'_>) + 'v;

/// Points of the window, ascending by time then variant.
pub fn points(conn: &Connection, q: &PointQuery, rollup_ms: i64) -> Result<Vec<Point>, StoreError> {
    points_with(conn, q, rollup_ms, &mut |_, _, _| {})
}

/// [`points`], also handing every row read to `each_row`, so a caller that needs window sums too
/// (the dashboard's per-model table) reads the rows only once.
pub fn points_with(
    conn: &Connection,
    q: &PointQuery,
    rollup_ms: i64,
    each_row: &mut RowVisitor<'_>,
) -> Result<Vec<Point>, StoreError> {
    let names = variant_names(conn)?;
    let shared: HashMap<i64, Arc<str>> = names.iter().map(|(id, n)| (*id, Arc::from(n.as_str()))).collect();
    let targets: Vec<StoredTarget> =
        targets(conn)?.into_iter().filter(|t| q.target_url.as_ref().is_none_or(|u| u == &t.url)).collect();
    let first_end = bucket_end(q.start_ms + 1, q.step_ms);
    let after = first_end - q.step_ms;
    let mut builder = PointBuilder::new();
    let mut rows = Vec::new();
    for t in &targets {
        let (seed, mut own) = if q.raw {
            let seed = last_row_at_or_before(conn, Table::Raw, t.id, after, &names)?;
            (seed, target_summaries(conn, Table::Raw, t.id, after, q.end_ms, &shared, each_row)?)
        } else {
            rollup_window(conn, t.id, after, q.end_ms, rollup_ms, (&names, &shared), each_row)?
        };
        if let Some(seed) = seed {
            builder.seed(&Summary::from(&seed));
        }
        rows.append(&mut own);
    }
    // Sort references, not the rows themselves: a summary is a few hundred bytes.
    let mut order: Vec<&Summary> = rows.iter().collect();
    order.sort_by_key(|r| (r.ts_ms, r.target_id));
    let mut out = Vec::new();
    for bucket in order.chunk_by(|a, b| bucket_end(a.ts_ms, q.step_ms) == bucket_end(b.ts_ms, q.step_ms)) {
        let pts = builder.build(bucket_end(bucket[0].ts_ms, q.step_ms), bucket);
        out.extend(pts.into_iter().filter(|p| q.variant.as_ref().is_none_or(|v| v == &p.variant)));
    }
    Ok(out)
}

/// Summaries of one target's rows with `after < ts <= until`, read in place from the encoded
/// payloads: no string is allocated per label, and a quota block repeated byte for byte is
/// decoded once.
pub fn target_summaries(
    conn: &Connection,
    table: Table,
    target_id: i64,
    after: i64,
    until: i64,
    names: &HashMap<i64, Arc<str>>,
    each_row: &mut RowVisitor<'_>,
) -> Result<Vec<Summary>, StoreError> {
    let sql = format!(
        "SELECT ts, variant_id, elapsed_ms, data FROM {} WHERE target_id = ?1 AND ts > ?2 AND ts <= ?3 ORDER BY ts",
        table.name()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![target_id, after, until])?;
    let unknown: Arc<str> = Arc::from("unknown");
    let mut last_quota: Option<(Vec<u8>, Option<Arc<Quota>>)> = None;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let data = r.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
        let v = codec::view(data)?;
        let quota = match &last_quota {
            Some((bytes, q)) if bytes.as_slice() == v.quota_bytes => q.clone(),
            _ => {
                let q = v.quota()?.map(Arc::new);
                last_quota = Some((v.quota_bytes.to_vec(), q.clone()));
                q
            }
        };
        let variant = names.get(&r.get::<_, i64>(1)?).cloned().unwrap_or_else(|| unknown.clone());
        let ts: i64 = r.get(0)?;
        each_row(&variant, ts, RowRef::View(&v));
        out.push(summarize(&v, target_id, variant, ts, r.get(2)?, quota));
    }
    Ok(out)
}

fn summarize(
    v: &codec::RowView<'_>,
    target_id: i64,
    variant: Arc<str>,
    ts_ms: i64,
    elapsed_ms: i64,
    quota: Option<Arc<Quota>>,
) -> Summary {
    let mut tokens = [0.0; 4];
    for (_, t) in v.tokens.iter() {
        for (a, b) in tokens.iter_mut().zip(t) {
            *a += b;
        }
    }
    let [rs, rc, ps, pc] = v.sizes;
    Summary {
        target_id,
        variant,
        ts_ms,
        elapsed_ms,
        requests: v.requests.iter().map(|(k, [n])| (status(k), n)).collect(),
        tokens,
        cost: v.cost.iter().map(|(_, c)| c.iter().fold(0.0, |a, b| a + b)).fold(0.0, |a, b| a + b),
        upstream_errors: v.upstream_errors.iter().map(|(_, [n])| n).fold(0.0, |a, b| a + b),
        retries: v.retries.iter().filter(|(k, _)| *k != "retry").map(|(_, [n])| n).fold(0.0, |a, b| a + b),
        rejections: v.rejections,
        request_size: SumCount { sum: rs, count: rc },
        response_size: SumCount { sum: ps, count: pc },
        duration: v.hists[0].to_histogram(),
        ttft: v.hists[1].to_histogram(),
        tpot: v.hists[2].to_histogram(),
        totals: v.totals,
        gauges: v.gauges,
        quota,
    }
}

/// A target's 1-minute rows for `after < ts <= until`: stored rollups up to the watermark, then
/// the raw tail rolled on the fly. Also returns the row that seeds its running totals.
fn rollup_window(
    conn: &Connection,
    target_id: i64,
    after: i64,
    until: i64,
    rollup_ms: i64,
    (names, shared): (&HashMap<i64, String>, &HashMap<i64, Arc<str>>),
    each_row: &mut RowVisitor<'_>,
) -> Result<(Option<TargetRow>, Vec<Summary>), StoreError> {
    let wm = watermark(conn)?.unwrap_or(i64::MIN);
    let mut rows = target_summaries(conn, Table::Rollup, target_id, after, until.min(wm), shared, each_row)?;
    let raw_tail = target_rows(conn, Table::Raw, target_id, after.max(wm), until, names)?;
    for r in &raw_tail {
        each_row(&r.variant, r.ts_ms, RowRef::Row(r));
    }
    rows.extend(roll_minutes(&raw_tail, rollup_ms).iter().map(Summary::from));
    let rolled = last_row_at_or_before(conn, Table::Rollup, target_id, after, names)?;
    let raw = last_row_at_or_before(conn, Table::Raw, target_id, after, names)?;
    let seed = match (rolled, raw) {
        (Some(a), Some(b)) => Some(if b.ts_ms > a.ts_ms { b } else { a }),
        (a, b) => a.or(b),
    };
    Ok((seed, rows))
}

/// Groups time-ordered raw rows of one target into rolled-up rows per `rollup_ms` bucket.
pub fn roll_minutes(rows: &[TargetRow], rollup_ms: i64) -> Vec<TargetRow> {
    rows.chunk_by(|a, b| bucket_end(a.ts_ms, rollup_ms) == bucket_end(b.ts_ms, rollup_ms))
        .filter_map(|chunk| TargetRow::rollup(chunk, bucket_end(chunk[0].ts_ms, rollup_ms)))
        .collect()
}
