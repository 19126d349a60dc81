//! Shared by the bench binaries: a store pre-filled like a week of a real deployment.

use zai_dash::clock::bucket_end;
use zai_dash::point::TargetRow;
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::{parse, reading};
use zai_dash::store::Store;
use zai_dash::store::query::{self, Table};

/// The realistic zai-proxy exposition.
pub const FIXTURE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");
/// One day in ms.
pub const DAY_MS: i64 = 86_400_000;

/// The fixture's reading with every counter and histogram scaled by `frac` (cheap, for bulk fills).
pub fn scaled_reading(base: &reading::Reading, frac: f64) -> reading::Reading {
    let scale = |v: f64| if v.fract() == 0.0 { (v * frac).floor() } else { v * frac };
    let mut r = base.clone();
    for c in &mut r.counters {
        c.value = scale(c.value);
    }
    for h in &mut r.hists {
        for b in &mut h.buckets {
            b.1 = scale(b.1);
        }
        h.sum = scale(h.sum);
        h.count = scale(h.count);
    }
    r
}

/// Fills 2 variants x 3 pods: 24 h of 5 s rows and 7 d of 1 min rows ending `now`, with the
/// fixture's traffic growing steadily; everything before the last minute is rolled up, raw rows
/// of rolled 10-minute windows are sealed into chunks, and the writer is taken to have
/// committed every bucket up to `now`.
pub fn prefill(store: &Store, now: i64) {
    let pairs: Vec<(String, String)> = (0..6)
        .map(|i| (format!("http://pod-{i}:8080/metrics"), if i < 3 { "production" } else { "canary" }.to_owned()))
        .collect();
    let ids = query::register_targets(&store.conn().unwrap(), &pairs, 0).unwrap();
    let base = reading::read(&parse::parse(FIXTURE).unwrap());
    for (t, (_, variant)) in ids.iter().zip(&pairs) {
        let mut st = TargetState::default();
        let (mut raw, mut rolled): (Vec<TargetRow>, Vec<TargetRow>) = (Vec::new(), Vec::new());
        let mut at = now - 7 * DAY_MS;
        while at <= now {
            let width = if at < now - DAY_MS { 60_000 } else { 5_000 };
            let frac = 1.0 + (at - (now - 7 * DAY_MS)) as f64 / DAY_MS as f64;
            let mut row = st.advance(&scaled_reading(&base, frac), at, t.id, variant);
            row.ts_ms = bucket_end(at, width);
            if width == 60_000 {
                rolled.push(row)
            } else {
                raw.push(row)
            }
            at += width;
        }
        rolled.extend(query::roll_minutes(&raw, 60_000));
        let mut c = store.conn().unwrap();
        let tx = c.transaction().unwrap();
        for r in &raw {
            query::replace_row(&tx, Table::Raw, r).unwrap();
        }
        for r in &rolled {
            query::replace_row(&tx, Table::Rollup, r).unwrap();
        }
        tx.commit().unwrap();
    }
    query::set_watermark(&store.conn().unwrap(), bucket_end(now, 60_000) - 60_000).unwrap();
    // The 10-minute tier ranges over a day read, rolled from those minutes as the downsampler
    // does in service (retention long enough to keep everything written above).
    let plan = zai_dash::store::downsample::Plan {
        point_ms: 5_000,
        rollup_ms: 60_000,
        settle_ms: 11_000,
        retention_raw_ms: 8 * DAY_MS,
        retention_rollup_ms: 8 * DAY_MS,
        retention_coarse_ms: 30 * DAY_MS,
    };
    // Runs until nothing is left to seal, so raw and rolled rows sit in chunks as in a server
    // that has run for a week (a run seals at most 12 windows of each table).
    loop {
        let r = zai_dash::store::downsample::run_once(&mut store.conn().unwrap(), now, plan).unwrap();
        if r.sealed_rows == 0 && r.sealed_rolled_rows == 0 {
            break;
        }
    }
    store.note_committed(bucket_end(now, 5_000)); // as the writer does after each tick
}

/// The `p` quantile (0..=1) of `v`, nearest rank.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
