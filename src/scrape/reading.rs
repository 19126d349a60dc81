//! From a parsed exposition to the series zai-dash keeps, as absolute values.
//!
//! Only `zai_proxy_*` families with the expected `# TYPE` are read; runtime families (`go_*`,
//! `process_*`, ...) and unknown families are ignored. Each kept series remembers where its
//! increase goes ([`Slot`]), so computing increases is a plain walk over the series.
//!
//! Every label value kept (model, status code, error type, reason, version, variant, quota
//! limit type) is cut to [`LABEL_MAX_BYTES`] at a char boundary, and counted ([`Reading::cut`]).
//! Series keys keep a long label as its cut value plus a hash of the whole value, so two series
//! that differ only after the cut stay two series for their increases, which then add up under
//! the one cut value: bounded keys, bounded stored state, and no increase lost or counted twice.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::BuildHasher;

use super::parse::{Exposition, Family, MetricType, Sample, SampleKind};
use crate::expo::{LABEL_MAX_BYTES, cut_label_value};
use crate::point::{GaugeStat, Gauges, Quota, QuotaWindow};

/// Family names of the zai-proxy exposition (docs/decisions.md, zai-proxy's exposition).
#[allow(missing_docs)] // each constant is the family name it spells
pub mod names {
    pub const REQUESTS: &str = "zai_proxy_requests_total";
    pub const TOKENS: &str = "zai_proxy_tokens_total";
    pub const COST: &str = "zai_proxy_estimated_cost_usd_total";
    pub const UPSTREAM_ERRORS: &str = "zai_proxy_upstream_errors_total";
    pub const RETRIES: &str = "zai_proxy_retry_attempts_total";
    pub const REJECTIONS: &str = "zai_proxy_rate_limit_rejections_total";
    pub const RATE_LIMIT_WAIT: &str = "zai_proxy_rate_limit_wait_seconds";
    pub const ADJUSTMENTS: &str = "zai_proxy_rate_limit_adjustments_total";
    pub const DURATION: &str = "zai_proxy_request_duration_seconds";
    pub const TTFT: &str = "zai_proxy_time_to_first_token_seconds";
    pub const TPOT: &str = "zai_proxy_time_per_output_token_seconds";
    pub const REQUEST_SIZE: &str = "zai_proxy_request_size_bytes";
    pub const RESPONSE_SIZE: &str = "zai_proxy_response_size_bytes";
    pub const CONCURRENT: &str = "zai_proxy_concurrent_requests";
    pub const MAX_WORKERS: &str = "zai_proxy_max_workers";
    pub const RATE_LIMIT_RPS: &str = "zai_proxy_rate_limit_requests_per_second";
    pub const BUILD_INFO: &str = "zai_proxy_build_info";
    pub const QUOTA_USAGE: &str = "zai_proxy_quota_usage_ratio";
    pub const QUOTA_REMAINING: &str = "zai_proxy_quota_remaining_ratio";
    pub const QUOTA_RESET: &str = "zai_proxy_quota_reset_time_seconds";
    pub const QUOTA_AGE: &str = "zai_proxy_quota_sample_age_seconds";
    pub const QUOTA_GATE: &str = "zai_proxy_quota_gate_open";
    pub const QUOTA_RATE_CAP: &str = "zai_proxy_quota_rate_cap";
}

/// A piece of [`Reading::text`] (byte offsets): a series key or a label value. The series of a
/// reading hold their text in one buffer instead of a `String` each, so reading a scrape costs
/// a few allocations per scrape rather than several per series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: usize,
    end: usize,
}

/// Where a counter series' increase is added; label values are [`Span`]s of the reading's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Requests by status code.
    Requests(Span),
    /// Tokens by model and direction index.
    Tokens(Span, usize),
    /// Cost by model and direction index.
    Cost(Span, usize),
    /// Upstream errors by type.
    UpstreamError(Span),
    /// Retries by reason.
    Retry(Span),
    /// Capacity rejections, by caller bucket (`client`; empty on proxies without it).
    Rejection(Span),
    /// Rate limit adjustments by direction index.
    Adjustment(usize),
}

impl Slot {
    /// The slot with its label value at `span`.
    fn at(self, span: Span) -> Self {
        match self {
            Self::Requests(_) => Self::Requests(span),
            Self::Tokens(_, d) => Self::Tokens(span, d),
            Self::Cost(_, d) => Self::Cost(span, d),
            Self::UpstreamError(_) => Self::UpstreamError(span),
            Self::Retry(_) => Self::Retry(span),
            Self::Rejection(_) => Self::Rejection(span),
            other => other,
        }
    }
}

/// Which histogram a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistSlot {
    /// Request duration (buckets kept).
    Duration,
    /// Time to first token (buckets kept).
    Ttft,
    /// Time per output token (buckets kept).
    Tpot,
    /// Request size (sum and count only).
    RequestSize,
    /// Response size (sum and count only).
    ResponseSize,
    /// Rate-limiter wait of one caller bucket (the `client` label's value; buckets kept).
    Wait(Span),
}

/// One counter series: a stable key (family and sorted labels), its slot and absolute value.
#[derive(Debug, Clone)]
pub struct CounterSeries {
    /// Family name and sorted labels; stable across scrapes ([`Reading::text`]).
    pub key: Span,
    /// Where its increase goes.
    pub slot: Slot,
    /// Absolute value.
    pub value: f64,
}

/// One histogram series (one label set), absolute values.
#[derive(Debug, Clone)]
pub struct HistSeries {
    /// Family name and sorted labels (without `le`) ([`Reading::text`]).
    pub key: Span,
    /// Which histogram.
    pub slot: HistSlot,
    /// Cumulative `(le, count)` pairs, ascending.
    pub buckets: Vec<(f64, f64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: f64,
}

/// Most series (counter values and histogram lines) kept from one scrape of one target: a
/// target cannot make a scrape, its stored state or the page cost more than this.
pub const MAX_SERIES: usize = 20_000;
/// Most distinct `le` bounds per histogram family: a flood of bounds would make every sum of
/// histograms rebuild a huge union of bounds.
pub const MAX_BOUNDS: usize = 64;

/// Everything zai-dash keeps from one scrape.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Counter series.
    pub counters: Vec<CounterSeries>,
    /// Histogram series.
    pub hists: Vec<HistSeries>,
    /// Gauges (single values).
    pub gauges: Gauges,
    /// The single `variant` label value, if the target reports exactly one.
    pub variant_label: Option<String>,
    /// `zai_proxy_build_info` version.
    pub version: Option<String>,
    /// Samples in the whole exposition (health data).
    pub samples: usize,
    /// Series left out: beyond [`MAX_SERIES`], or with a bound beyond [`MAX_BOUNDS`].
    pub dropped: usize,
    /// Label names and values of `zai_proxy_*` samples longer than [`LABEL_MAX_BYTES`], each
    /// cut where it is kept (each occurrence counts).
    pub cut: usize,
    /// The series keys and slot label values, one after another.
    text: String,
}

impl Reading {
    /// The text of a series key or slot label value.
    pub fn text(&self, span: Span) -> &str {
        self.text.get(span.start..span.end).unwrap_or("")
    }

    /// Appends `value` to the text.
    fn push_text(&mut self, value: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(value);
        Span { start, end: self.text.len() }
    }
}

/// Extracts the kept series from an exposition.
pub fn read(expo: &Exposition<'_>) -> Reading {
    let mut r = Reading { samples: expo.sample_count(), ..Reading::default() };
    let mut variants = Variants::default();
    for fam in &expo.families {
        if !fam.name.starts_with("zai_proxy_") {
            continue;
        }
        for s in &fam.samples {
            if s.labels.text_len() > LABEL_MAX_BYTES {
                let long = |t: &str| usize::from(t.len() > LABEL_MAX_BYTES);
                r.cut += s.labels.iter().map(|(n, v)| long(n) + long(v)).sum::<usize>();
            }
        }
        read_family(fam, &mut r, &mut variants);
    }
    r.variant_label = crate::variant::variant_from_labels(variants.0.iter().copied());
    r.gauges.quota = read_quota(expo);
    r
}

/// The `variant` label values (as stored) of every `zai_proxy_*` sample. Collected by the
/// family readers as they walk each sample's labels anyway, so a label set is walked about
/// once per sample (each walk reads the label text byte by byte).
#[derive(Default)]
struct Variants<'s>(BTreeSet<&'s str>);

impl<'s> Variants<'s> {
    /// Adds the sample's `variant` from its labels as walked.
    fn add(&mut self, labels: &[(&'s str, &'s str)]) {
        if let Some(v) = find(labels, "variant") {
            self.0.insert(stored_value(v));
        }
    }

    /// Adds the sample's `variant`, walking its labels.
    fn add_sample(&mut self, s: &'s Sample<'_>) {
        if let Some(v) = s.label("variant") {
            self.0.insert(stored_value(v));
        }
    }
}

/// The value of the label `name` among labels as walked.
fn find<'s>(labels: &[(&'s str, &'s str)], name: &str) -> Option<&'s str> {
    labels.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn read_family<'s>(fam: &'s Family<'_>, r: &mut Reading, variants: &mut Variants<'s>) {
    use names::*;
    let hist = |slot| (Some(slot), None);
    let (hist_slot, gauge) = match (fam.name, fam.kind) {
        (DURATION, MetricType::Histogram) => hist(HistSlot::Duration),
        (TTFT, MetricType::Histogram) => hist(HistSlot::Ttft),
        (TPOT, MetricType::Histogram) => hist(HistSlot::Tpot),
        (REQUEST_SIZE, MetricType::Histogram) => hist(HistSlot::RequestSize),
        (RESPONSE_SIZE, MetricType::Histogram) => hist(HistSlot::ResponseSize),
        (RATE_LIMIT_WAIT, MetricType::Histogram) => hist(HistSlot::Wait(Span::default())),
        (CONCURRENT, MetricType::Gauge) => (None, Some(&mut r.gauges.concurrent)),
        (MAX_WORKERS, MetricType::Gauge) => (None, Some(&mut r.gauges.max_workers)),
        (RATE_LIMIT_RPS, MetricType::Gauge) => (None, Some(&mut r.gauges.rate_limit_rps)),
        (_, MetricType::Counter | MetricType::Untyped) => return read_counter(fam, r, variants),
        _ => (None, None),
    };
    if let Some(slot) = hist_slot {
        return read_hist(fam, slot, r, variants);
    }
    if let Some(gauge) = gauge {
        *gauge = gauge_sum(fam);
    }
    if (fam.name, fam.kind) == (BUILD_INFO, MetricType::Gauge) {
        r.version = fam.samples.iter().find_map(|s| s.label("version").map(|v| stored_value(v).to_owned()));
    }
    fam.samples.iter().for_each(|s| variants.add_sample(s));
}

/// Series kept so far (a histogram line counts once).
fn kept(r: &Reading) -> usize {
    r.counters.len() + r.hists.iter().map(|h| h.buckets.len() + 2).sum::<usize>()
}

fn read_counter<'s>(fam: &'s Family<'_>, r: &mut Reading, variants: &mut Variants<'s>) {
    // A series exposed twice (a broken exporter) keeps its first sample, as Prometheus does:
    // keeping both would count the step between them as an increase on every scrape. While the
    // keys come in strictly increasing order (client_golang sorts series) none can repeat, and
    // each is only compared with the one before; from the first key out of order on, keys are
    // remembered by hash: a hash seen before is checked against the series that first had it,
    // and only a true collision of two keys scans the family.
    let start = r.counters.len();
    let hasher = RandomState::new();
    let mut seen: Option<HashMap<u64, usize>> = None;
    let mut sorted = Vec::new();
    // Each sample's labels, walked once for its variant, its slot's label and its key.
    let mut labels = Vec::new();
    for s in &fam.samples {
        labels.clear();
        labels.extend(s.labels.iter());
        variants.add(&labels);
        if s.kind != SampleKind::Value || !s.value.is_finite() {
            continue;
        }
        let Some((slot, value)) = counter_slot(fam.name, &labels) else { continue };
        let mark = r.text.len();
        let key = push_series_key(&mut r.text, fam.name, &labels, None, &mut sorted);
        let in_order = seen.is_none() && r.counters[start..].last().is_none_or(|c| r.text(c.key) < r.text(key));
        let mut hash = None;
        if !in_order {
            let seen = seen.get_or_insert_with(|| {
                r.counters[start..]
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (hasher.hash_one(r.text(c.key)), start + i))
                    .collect()
            });
            let h = hasher.hash_one(r.text(key));
            let is_copy = |first: usize| {
                r.text(r.counters[first].key) == r.text(key)
                    || r.counters[start..].iter().any(|c| r.text(c.key) == r.text(key))
            };
            if seen.get(&h).is_some_and(|&first| is_copy(first)) {
                r.text.truncate(mark);
                continue;
            }
            hash = Some(h);
        }
        if kept(r) >= MAX_SERIES {
            r.text.truncate(mark);
            r.dropped += 1;
            continue;
        }
        if let (Some(seen), Some(h)) = (seen.as_mut(), hash) {
            seen.entry(h).or_insert(r.counters.len());
        }
        let span = r.push_text(stored_value(value));
        r.counters.push(CounterSeries { key, slot: slot.at(span), value: s.value });
    }
}

/// The slot of a counter sample (its label value's span still to be set) and that label value.
fn counter_slot<'s>(family: &str, labels: &[(&'s str, &'s str)]) -> Option<(Slot, &'s str)> {
    let label = |n: &str| find(labels, n).unwrap_or("");
    let direction = |names: &[&str]| find(labels, "direction").and_then(|d| names.iter().position(|n| *n == d));
    let none = Span::default();
    Some(match family {
        names::REQUESTS => (Slot::Requests(none), label("status_code")),
        names::TOKENS => (Slot::Tokens(none, direction(&crate::point::DIRECTIONS)?), label("model")),
        names::COST => (Slot::Cost(none, direction(&crate::point::DIRECTIONS)?), label("model")),
        names::UPSTREAM_ERRORS => (Slot::UpstreamError(none), label("error_type")),
        names::RETRIES => (Slot::Retry(none), label("reason")),
        names::REJECTIONS => (Slot::Rejection(none), label("client")),
        names::ADJUSTMENTS => (Slot::Adjustment(direction(&crate::point::ADJUSTMENTS)?), ""),
        _ => return None,
    })
}

fn read_hist<'s>(fam: &'s Family<'_>, slot: HistSlot, r: &mut Reading, variants: &mut Variants<'s>) {
    let start = r.hists.len();
    let hasher = RandomState::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut bounds: BTreeSet<u64> = BTreeSet::new();
    let mut budget = MAX_SERIES.saturating_sub(kept(r));
    let mut sorted = Vec::new();
    // The previous line's series: a histogram's lines come grouped by series, so most lines
    // find theirs without building a key.
    let mut previous: Option<(&Sample<'_>, usize)> = None;
    let mut labels = Vec::new();
    for s in &fam.samples {
        // A line of the previous line's series has its variant too; any other is walked once
        // (its variant, and its key if it is a new series).
        let same = previous.filter(|(p, _)| same_labels_but_le(p, s));
        labels.clear();
        if same.is_none() {
            labels.extend(s.labels.iter());
            variants.add(&labels);
        }
        if !s.value.is_finite() && s.kind != SampleKind::Bucket {
            continue;
        }
        if let (SampleKind::Bucket, Some(le)) = (s.kind, s.bound)
            && !bounds.contains(&le.to_bits())
        {
            if bounds.len() >= MAX_BOUNDS {
                r.dropped += 1;
                continue;
            }
            bounds.insert(le.to_bits());
        }
        if budget == 0 {
            r.dropped += 1;
            continue;
        }
        budget -= 1;
        let idx = match same {
            Some((_, i)) => i,
            None => {
                let mark = r.text.len();
                let key = push_series_key(&mut r.text, fam.name, &labels, Some("le"), &mut sorted);
                let hash = hasher.hash_one(r.text(key));
                let found = match index.get(&hash) {
                    Some(&i) if r.text(r.hists[i].key) == r.text(key) => Some(i),
                    Some(_) => (start..r.hists.len()).find(|&i| r.text(r.hists[i].key) == r.text(key)),
                    None => None,
                };
                match found {
                    Some(i) => {
                        r.text.truncate(mark);
                        i
                    }
                    None => {
                        index.entry(hash).or_insert(r.hists.len());
                        let slot = match slot {
                            HistSlot::Wait(_) => {
                                HistSlot::Wait(r.push_text(stored_value(find(&labels, "client").unwrap_or(""))))
                            }
                            other => other,
                        };
                        r.hists.push(HistSeries { key, slot, buckets: Vec::new(), sum: 0.0, count: 0.0 });
                        r.hists.len() - 1
                    }
                }
            }
        };
        previous = Some((s, idx));
        let h = &mut r.hists[idx];
        match (s.kind, s.bound) {
            (SampleKind::Bucket, Some(le)) if s.value.is_finite() => h.buckets.push((le, s.value)),
            (SampleKind::Sum, _) => h.sum = s.value,
            (SampleKind::Count, _) => h.count = s.value,
            _ => {}
        }
    }
    for h in &mut r.hists[start..] {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

/// Whether two samples have the same labels apart from `le` (same names in the same order,
/// same values).
fn same_labels_but_le(a: &Sample<'_>, b: &Sample<'_>) -> bool {
    a.labels.same_except(&b.labels, "le")
}

/// A label value as stored: cut to [`LABEL_MAX_BYTES`] at a char boundary.
fn stored_value(value: &str) -> &str {
    cut_label_value(value).unwrap_or(value)
}

/// Appends the series key to `text`: family name plus labels sorted by name (optionally
/// without one label), joined with separators that cannot be confused with label text. Labels
/// already in order (client_golang sorts them) are not collected and sorted first (`sorted` is
/// the reused buffer for those that are not). A name or value longer than [`LABEL_MAX_BYTES`] is
/// written as [`push_key_part`] writes it.
fn push_series_key<'s>(
    text: &mut String,
    family: &str,
    labels: &[(&'s str, &'s str)],
    skip: Option<&str>,
    sorted: &mut Vec<(&'s str, &'s str)>,
) -> Span {
    let start = text.len();
    text.push_str(family);
    let included = |l: &(&str, &str)| Some(l.0) != skip;
    let push = |text: &mut String, (n, v): (&str, &str)| {
        text.push('\u{1}');
        push_key_part(text, n);
        text.push('\u{2}');
        push_key_part(text, v);
    };
    // Written in one pass while the names come in order; labels out of order start over sorted.
    let mut previous = "";
    for (i, &label) in labels.iter().filter(|l| included(l)).enumerate() {
        if i > 0 && label.0 <= previous {
            text.truncate(start + family.len());
            sorted.clear();
            sorted.extend(labels.iter().copied().filter(included));
            sorted.sort_unstable();
            sorted.iter().for_each(|&l| push(text, l));
            break;
        }
        previous = label.0;
        push(text, label);
    }
    Span { start, end: text.len() }
}

/// `text` as a key holds it: as it is, or when longer than [`LABEL_MAX_BYTES`], cut, then a
/// separator and the FNV-1a hash of the whole text in hex. Keys are persisted with the target's
/// state, so the hash is one that never changes between builds (not the std hasher's).
fn push_key_part(key: &mut String, text: &str) {
    match cut_label_value(text) {
        None => key.push_str(text),
        Some(cut) => {
            key.push_str(cut);
            key.push('\u{3}');
            let _ = write!(key, "{:016x}", fnv1a(text.as_bytes()));
        }
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn gauge_sum(fam: &Family<'_>) -> Option<GaugeStat> {
    let mut values = fam.samples.iter().map(|s| s.value).filter(|v| v.is_finite()).peekable();
    values.peek()?;
    Some(GaugeStat::single(values.fold(0.0, |a, b| a + b)))
}

/// The Go dashboard's quota block: one limit type per window (credit_limit preferred, then
/// tokens_limit, else the smallest name), the oldest sample age, gate and enforcement flags.
fn read_quota(expo: &Exposition<'_>) -> Option<Quota> {
    let fam = |n: &str| expo.family(n).map(|f| f.samples.as_slice()).unwrap_or_default();
    let (usage, remaining, reset) = (fam(names::QUOTA_USAGE), fam(names::QUOTA_REMAINING), fam(names::QUOTA_RESET));
    let age = fam(names::QUOTA_AGE);
    if usage.is_empty() && remaining.is_empty() && reset.is_empty() && age.is_empty() {
        return None;
    }
    let window = |w: &str| quota_window(w, usage, remaining, reset);
    let gate = fam(names::QUOTA_GATE);
    Some(Quota {
        five_hour: window("five_hour"),
        weekly: window("weekly"),
        sample_age_seconds: age.iter().map(|s| s.value).filter(|v| v.is_finite()).reduce(f64::max),
        gate_open: (!gate.is_empty()).then(|| gate.iter().any(|s| s.value >= 1.0)),
        enforcement: Some(!gate.is_empty() || !fam(names::QUOTA_RATE_CAP).is_empty()),
    })
}

fn quota_window(
    window: &str,
    usage: &[Sample<'_>],
    remaining: &[Sample<'_>],
    reset: &[Sample<'_>],
) -> Option<QuotaWindow> {
    let in_window = |s: &&Sample<'_>| s.label("window") == Some(window);
    let types: BTreeSet<String> = usage
        .iter()
        .chain(remaining)
        .chain(reset)
        .filter(in_window)
        .map(|s| stored_value(s.label("limit_type").unwrap_or("")).to_ascii_lowercase())
        .collect();
    let chosen = ["credit_limit", "tokens_limit"]
        .iter()
        .find(|p| types.contains(**p))
        .map(|p| (*p).to_owned())
        .or_else(|| types.iter().next().cloned())?;
    let value = |samples: &[Sample<'_>]| {
        samples
            .iter()
            .filter(in_window)
            .find(|s| s.label("limit_type").is_some_and(|t| stored_value(t).eq_ignore_ascii_case(&chosen)))
            .map(|s| s.value)
            .filter(|v| v.is_finite())
    };
    Some(QuotaWindow {
        limit_type: (!chosen.is_empty()).then(|| chosen.clone()),
        usage_ratio: value(usage),
        remaining_ratio: value(remaining),
        reset_time_unix: value(reset).filter(|v| *v > 0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse::parse;

    const SAMPLE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");

    #[test]
    fn the_variant_label_counts_in_every_kind_of_family() {
        let hist = "# TYPE zai_proxy_request_duration_seconds histogram\n\
                    zai_proxy_request_duration_seconds_bucket{le=\"1\",variant=\"a\"} 1\n\
                    zai_proxy_request_duration_seconds_bucket{le=\"+Inf\",variant=\"a\"} 1\n\
                    zai_proxy_request_duration_seconds_bucket{le=\"1\",variant=\"b\"} 1\n\
                    zai_proxy_request_duration_seconds_bucket{le=\"+Inf\",variant=\"b\"} 1\n";
        let counter = "# TYPE zai_proxy_requests_total counter\nzai_proxy_requests_total{variant=\"c\"} 1\n";
        let gauge = "# TYPE zai_proxy_max_workers gauge\nzai_proxy_max_workers{variant=\"d\"} 1\n";
        let other = "# TYPE zai_proxy_something summary\nzai_proxy_something_sum{variant=\"e\"} 1\n";
        let variant = |text: &str| read(&parse(text).unwrap()).variant_label;
        assert_eq!(variant(counter).as_deref(), Some("c"));
        assert_eq!(variant(gauge).as_deref(), Some("d"));
        assert_eq!(variant(other).as_deref(), Some("e"));
        let first_series = hist.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(variant(&first_series).as_deref(), Some("a"));
        // A histogram's second series names another variant: no single variant.
        assert_eq!(variant(hist), None);
        assert_eq!(variant(&format!("{counter}{gauge}")), None);
        assert_eq!(variant(&format!("{gauge}{other}")), None);
        assert_eq!(variant(&format!("{counter}{first_series}")), None);
    }

    #[test]
    fn reads_the_fixture() {
        let r = read(&parse(SAMPLE).unwrap());
        assert_eq!(r.samples, 249);
        assert_eq!(r.variant_label.as_deref(), Some("production"));
        assert_eq!(r.version.as_deref(), Some("1.11.1"));
        assert_eq!(r.gauges.concurrent.unwrap().last, 3.0);
        assert_eq!(r.gauges.max_workers.unwrap().last, 10.0);
        assert_eq!(r.gauges.rate_limit_rps.unwrap().last, 29.4);
        let reqs: f64 = r.counters.iter().filter(|c| matches!(c.slot, Slot::Requests(_))).map(|c| c.value).sum();
        assert_eq!(reqs, 1533.0);
        let durations: Vec<_> = r.hists.iter().filter(|h| h.slot == HistSlot::Duration).collect();
        assert_eq!(durations.len(), 5);
        assert!(durations.iter().all(|h| h.buckets.len() == 16 && h.buckets[15].0 == f64::INFINITY));
        // token_rate / token_rate_seconds are not request durations and are not read at all;
        // the rate-limiter wait is, per caller bucket.
        assert_eq!(r.hists.len(), 5 + 2 + 2 + 1);
        let waits: Vec<&str> = r
            .hists
            .iter()
            .filter_map(|h| match h.slot {
                HistSlot::Wait(client) => Some(r.text(client)),
                _ => None,
            })
            .collect();
        assert_eq!(waits, ["source-43"]);
        let rejections: Vec<(&str, f64)> = r
            .counters
            .iter()
            .filter_map(|c| match c.slot {
                Slot::Rejection(client) => Some((r.text(client), c.value)),
                _ => None,
            })
            .collect();
        assert_eq!(rejections, [("source-43", 3.0), ("source-53", 1.0)]);
    }

    #[test]
    fn quota_block_matches_the_go_dashboard() {
        let q = read(&parse(SAMPLE).unwrap()).gauges.quota.unwrap();
        let five = q.five_hour.unwrap();
        assert_eq!(five.limit_type.as_deref(), Some("tokens_limit"));
        assert_eq!(five.usage_ratio, Some(0.13));
        assert_eq!(five.reset_time_unix, Some(1_788_738_692.0));
        let weekly = q.weekly.unwrap();
        assert_eq!(weekly.limit_type.as_deref(), Some("credit_limit"));
        assert_eq!(weekly.remaining_ratio, Some(0.5785));
        assert_eq!(q.sample_age_seconds, Some(60.004));
        assert_eq!(q.enforcement, Some(false));
        assert_eq!(q.gate_open, None);
    }

    #[test]
    fn wrongly_typed_families_are_ignored() {
        let r = read(
            &parse("# TYPE zai_proxy_requests_total gauge\nzai_proxy_requests_total{status_code=\"200\"} 5\n").unwrap(),
        );
        assert!(r.counters.is_empty());
    }

    #[test]
    fn a_duplicated_series_keeps_its_first_sample() {
        // Found by fuzzing: with both samples kept, the same scrape twice counted 1 request.
        let text = "zai_proxy_requests_total{status_code=\"500\"} 1\nzai_proxy_requests_total{status_code=\"500\"} 0\n";
        let r = read(&parse(text).unwrap());
        assert_eq!(r.counters.len(), 1);
        assert_eq!(r.counters[0].value, 1.0);
        let mut state = crate::scrape::increase::TargetState::default();
        state.advance(&r, 0, 1, "p");
        assert_eq!(state.advance(&r, 5_000, 1, "p").counts, crate::point::Counts::default());
    }

    #[test]
    fn long_label_values_are_cut_counted_and_keep_their_series_apart() {
        let shared = "m".repeat(128);
        let text = format!(
            "# TYPE zai_proxy_build_info gauge\n\
             zai_proxy_build_info{{version=\"{v}\"}} 1\n\
             # TYPE zai_proxy_tokens_total counter\n\
             zai_proxy_tokens_total{{direction=\"input\",model=\"{shared}A{long}\"}} 1\n\
             zai_proxy_tokens_total{{direction=\"input\",model=\"{shared}B{long}\"}} 2\n\
             zai_proxy_requests_total{{status_code=\"{long}\",{long_name}=\"x\"}} 3\n",
            v = "1".repeat(300),
            long = "z".repeat(50_000),
            long_name = "n".repeat(200),
        );
        let r = read(&parse(&text).unwrap());
        assert_eq!(r.cut, 5, "version, two models, a status code and a label name");
        assert_eq!(r.version.as_deref().map(str::len), Some(128));
        let value = |slot: Slot| match slot {
            Slot::Tokens(v, 0) | Slot::Requests(v) => r.text(v).to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(value(r.counters[0].slot), shared);
        assert_eq!(value(r.counters[1].slot), shared);
        assert!(matches!(r.counters[2].slot, Slot::Requests(_)));
        assert_eq!(value(r.counters[2].slot), "z".repeat(128));
        assert_ne!(r.text(r.counters[0].key), r.text(r.counters[1].key), "the two models stay two series");
        assert!(r.counters.iter().all(|c| r.text(c.key).len() < 512), "keys hold cut values and hashes");
    }

    #[test]
    fn a_series_repeated_after_others_is_still_dropped() {
        let text = "zai_proxy_requests_total{status_code=\"200\"} 1\n\
                    zai_proxy_requests_total{status_code=\"500\"} 2\n\
                    zai_proxy_requests_total{status_code=\"404\"} 3\n\
                    zai_proxy_requests_total{status_code=\"200\"} 4\n\
                    zai_proxy_requests_total{status_code=\"500\"} 5\n";
        let r = read(&parse(text).unwrap());
        let values: Vec<f64> = r.counters.iter().map(|c| c.value).collect();
        assert_eq!(values, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn histogram_lines_written_differently_stay_one_series() {
        let text = "# TYPE zai_proxy_request_duration_seconds histogram\n\
                    zai_proxy_request_duration_seconds_bucket{a=\"x\",le=\"1\"} 1\n\
                    zai_proxy_request_duration_seconds_bucket{ a = \"x\", le=\"+Inf\"} 2\n\
                    zai_proxy_request_duration_seconds_bucket{le=\"1\",a=\"y\"} 3\n\
                    zai_proxy_request_duration_seconds_count{a=\"x\"} 2\n";
        let r = read(&parse(text).unwrap());
        assert_eq!(r.hists.len(), 2);
        assert_eq!(r.hists[0].buckets, [(1.0, 1.0), (f64::INFINITY, 2.0)]);
        assert_eq!(r.hists[0].count, 2.0);
        assert_eq!(r.hists[1].buckets, [(1.0, 3.0)]);
    }

    #[test]
    fn the_key_hash_is_fnv1a() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn series_keys_ignore_label_order() {
        let a = read(&parse("zai_proxy_requests_total{a=\"1\",status_code=\"200\"} 1\n").unwrap());
        let b = read(&parse("zai_proxy_requests_total{status_code=\"200\",a=\"1\"} 1\n").unwrap());
        assert_eq!(a.text(a.counters[0].key), b.text(b.counters[0].key));
    }
}
