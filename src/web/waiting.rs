//! "Who is waiting": the overview panel of the proxies' caller buckets (the `client` label of
//! `zai_proxy_rate_limit_wait_seconds` and `zai_proxy_rate_limit_rejections_total`, peers hashed
//! into `source-00` ... `source-63`) over the selected range, so a noisy neighbour shows.
//!
//! One row per variant and bucket, ranked by the total time waited at the rate limiter (what a
//! caller loses to the queue), then by capacity rejections; the top [`TOP`] are shown and the
//! rest folded into one row whose p95 comes from the summed buckets of the folded ones.

use std::collections::BTreeMap;

use super::charts::compact;
use crate::point::{ClientCounts, Counts, Histogram};

/// Rows shown before the rest is folded.
pub const TOP: usize = 10;

/// One line of the panel, formatted.
#[derive(Debug, Clone)]
pub struct WaitRow {
    /// Variant (empty on the folded row).
    pub variant: String,
    /// Caller bucket, or `N other buckets` (untrusted: escaped by the template).
    pub client: String,
    /// Admissions through the rate limiter (waits observed).
    pub admissions: String,
    /// p95 of the wait, or `–` without a wait.
    pub p95: String,
    /// Total time waited.
    pub waited: String,
    /// Capacity rejections.
    pub rejections: String,
    /// `folded` for the row of the rest, else empty.
    pub class: &'static str,
}

/// The panel's rows from each variant's sums over the range; empty when no proxy exported a
/// caller bucket (an older proxy: no panel rather than an empty one).
pub fn rows(counts: &BTreeMap<String, Counts>) -> Vec<WaitRow> {
    let mut all: Vec<(&str, &str, &ClientCounts)> = counts
        .iter()
        .flat_map(|(variant, c)| c.clients.iter().map(move |(client, cc)| (variant.as_str(), client.as_str(), cc)))
        .collect();
    all.sort_by(|a, b| {
        b.2.wait.sum.total_cmp(&a.2.wait.sum).then(b.2.rejections.total_cmp(&a.2.rejections)).then(a.1.cmp(b.1))
    });
    let mut out: Vec<WaitRow> = all.iter().take(TOP).map(|(v, client, c)| row(v, client, c, "")).collect();
    if all.len() > TOP {
        let mut rest = ClientCounts::default();
        for (_, _, c) in &all[TOP..] {
            rest.add(c);
        }
        let n = all.len() - TOP;
        let label = if n == 1 { "1 other bucket".to_owned() } else { format!("{n} other buckets") };
        out.push(row("", &label, &rest, "folded"));
    }
    out
}

fn row(variant: &str, client: &str, c: &ClientCounts, class: &'static str) -> WaitRow {
    WaitRow {
        variant: variant.to_owned(),
        client: client.to_owned(),
        admissions: compact(c.wait.count),
        p95: p95(&c.wait),
        waited: seconds(c.wait.sum),
        rejections: compact(c.rejections),
        class,
    }
}

/// The wait's p95 from its summed buckets, `–` without observations.
fn p95(h: &Histogram) -> String {
    h.quantile(0.95).map_or_else(|| "–".to_owned(), seconds)
}

/// `0.8 ms`, `420 ms`, `2.35 s`, `1.2 h`: a wait at a readable scale.
fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "–".to_owned()
    } else if s < 1.0 {
        format!("{} ms", compact(s * 1000.0))
    } else if s < 3600.0 {
        format!("{} s", compact(s))
    } else {
        format!("{} h", compact(s / 3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(wait_s: f64, n: f64, rejections: f64) -> ClientCounts {
        let wait = Histogram { buckets: vec![(0.1, 0.0), (1.0, n), (f64::INFINITY, n)], sum: wait_s, count: n };
        ClientCounts { rejections, wait }
    }

    #[test]
    fn the_ten_longest_waits_are_shown_and_the_rest_folded_into_one_row() {
        let mut c = Counts::default();
        for i in 0..14 {
            c.clients.insert(format!("source-{i:02}").into(), client(f64::from(i), 10.0, f64::from(i % 3)));
        }
        let rows = rows(&BTreeMap::from([("production".to_owned(), c)]));
        assert_eq!(rows.len(), TOP + 1);
        assert_eq!(rows[0].client, "source-13", "the longest total wait first");
        assert_eq!(rows[9].client, "source-04");
        let rest = &rows[10];
        assert_eq!((rest.client.as_str(), rest.class, rest.admissions.as_str()), ("4 other buckets", "folded", "40"));
        assert_eq!(rest.waited, "6 s", "0 + 1 + 2 + 3 seconds");
        assert_eq!(rows[0].p95, "955 ms", "interpolated inside the (0.1, 1] bucket");
    }

    #[test]
    fn no_caller_bucket_no_rows() {
        assert!(rows(&BTreeMap::from([("production".to_owned(), Counts::default())])).is_empty());
    }
}
