//! The scrape ingest path on arbitrary text: parse, select, and two increase steps.
//!
//! Input: one exposition, or two separated by a form feed (`\x0c`), scraped in that order.
//! Properties:
//! - nothing panics (overflow checks and debug assertions are on);
//! - parsing is deterministic (a second parse gives the same result, NaN included);
//! - on success, every sample line became exactly one sample, in a family of a matching kind;
//!   on failure, the error names a line of the input;
//! - the reading counts the exposition's samples and keeps only finite counter values;
//! - increases are never negative, and scraping the same text again adds nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zai_dash::point::{Counts, TargetRow};
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::parse::{Exposition, MetricType, Sample, SampleKind, parse};
use zai_dash::scrape::reading::{Reading, read};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, second) = match text.split_once('\x0c') {
        Some((first, second)) => (checked_parse(first), checked_parse(second)),
        None => {
            let expo = checked_parse(&text);
            (expo.clone(), expo)
        }
    };
    let Some(first) = first else { return };

    let mut state = TargetState::default();
    let baseline = state.advance(&checked_read(&first), 1_000, 1, "fuzz");
    assert_eq!(baseline.counts, Counts::default(), "a first scrape is a baseline");
    let Some(second) = second else { return };
    let reading = checked_read(&second);
    let row = state.advance(&reading, 6_000, 1, "fuzz");
    check_row(&row);
    let again = state.advance(&reading, 11_000, 1, "fuzz");
    check_row(&again);
    assert_eq!(again.counts, Counts::default(), "the same scrape twice adds nothing");
});

fn checked_parse(text: &str) -> Option<Exposition<'_>> {
    let result = parse(text);
    let same = match (&result, &parse(text)) {
        (Ok(a), Ok(b)) => same_exposition(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    assert!(same, "parsing is not deterministic");
    let expo = match result {
        Ok(expo) => expo,
        Err(e) => {
            assert!(e.line >= 1 && e.line <= text.split('\n').count(), "error on line {} of none", e.line);
            return None;
        }
    };
    let sample_lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim_start_matches([' ', '\t']))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(expo.sample_count(), sample_lines, "one sample per sample line");
    let mut names: Vec<&str> = expo.families.iter().map(|f| f.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "family names are unique");
    for family in &expo.families {
        for s in &family.samples {
            let kind_fits = match family.kind {
                MetricType::Histogram => matches!(s.kind, SampleKind::Bucket | SampleKind::Sum | SampleKind::Count),
                MetricType::Summary => matches!(s.kind, SampleKind::Quantile | SampleKind::Sum | SampleKind::Count),
                _ => s.kind == SampleKind::Value,
            };
            assert!(kind_fits, "{:?} sample in a {:?} family", s.kind, family.kind);
            assert_eq!(s.bound.is_some(), matches!(s.kind, SampleKind::Bucket | SampleKind::Quantile));
        }
    }
    Some(expo)
}

/// Equality with values compared bit for bit (so NaN equals NaN).
fn same_exposition(a: &Exposition, b: &Exposition) -> bool {
    let same_sample = |x: &Sample, y: &Sample| {
        x.kind == y.kind
            && x.labels == y.labels
            && x.value.to_bits() == y.value.to_bits()
            && x.bound.map(f64::to_bits) == y.bound.map(f64::to_bits)
            && x.timestamp_ms == y.timestamp_ms
    };
    a.families.len() == b.families.len()
        && a.families.iter().zip(&b.families).all(|(f, g)| {
            f.name == g.name
                && f.kind == g.kind
                && f.help == g.help
                && f.samples.len() == g.samples.len()
                && f.samples.iter().zip(&g.samples).all(|(x, y)| same_sample(x, y))
        })
}

fn checked_read(expo: &Exposition) -> Reading {
    let r = read(expo);
    assert_eq!(r.samples, expo.sample_count());
    assert!(r.counters.iter().all(|c| c.value.is_finite()), "only finite counter values are kept");
    for h in &r.hists {
        assert!(h.buckets.windows(2).all(|w| w[0].0.total_cmp(&w[1].0).is_le()), "buckets sorted by bound");
    }
    r
}

fn check_row(row: &TargetRow) {
    let c = &row.counts;
    let maps = [&c.requests, &c.upstream_errors, &c.retries];
    let values = maps.iter().flat_map(|m| m.values()).chain(c.tokens.values().chain(c.cost.values()).flatten());
    let scalars = [c.rejections, c.request_size.count, c.response_size.count].into_iter().chain(c.adjustments);
    for v in values.copied().chain(scalars) {
        assert!(v >= 0.0, "negative increase {v}");
    }
}
