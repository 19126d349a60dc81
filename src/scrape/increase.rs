//! Per-target increases between two scrapes, reset-safe.
//!
//! A target's [`TargetState`] holds the absolute values of its previous successful scrape. The
//! next scrape's increase is computed per raw series (per label set), then summed into the
//! row's [`Counts`]:
//! - the first ever sight of a target is a baseline: no increase, no rate;
//! - a counter lower than before is a process restart: its new value is the increase;
//! - a series not seen before on a known target appeared since the last scrape (client
//!   libraries create a labelled child on first use): its whole value is the increase;
//! - a histogram is reset as a whole when its count or any bucket went down.
//!
//! So no rate is ever negative and a restart never spikes. The state is persisted (a checkpoint
//! now and then, the values that changed at every scrape: see [`super::persist`]), so
//! restarting zai-dash resumes with one long `elapsed` instead of a new baseline.
//!
//! Series are kept in the order the exposition lists them. That order is stable from one
//! scrape to the next (client libraries sort families and series), so the steady path pairs
//! each series with its previous value by position, with no lookup and no allocation; only a
//! scrape whose series changed rebuilds the state, and bumps [`TargetState::layout`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::reading::{HistSeries, HistSlot, Reading, Slot};
use crate::health::version_event_due;
use crate::point::{Counts, Histogram, Label, TargetRow, Totals};

/// At most this many distinct values per label kind (models, status codes, ...) are stored per
/// target; later ones are folded into `other`, so a misbehaving client cannot grow storage.
pub const LABEL_VALUE_CAP: usize = 50;
/// Caller buckets (`client`) kept per target: zai-proxy hashes peers into 64 (`source-00` to
/// `source-63`); any beyond are folded into `other`.
pub const CLIENT_BUCKET_CAP: usize = 64;

/// What zai-dash remembers about a target between scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Completion time of the last successful scrape; `None` until the baseline scrape.
    pub last_scrape_ms: Option<i64>,
    /// Absolute counter values by series key, in exposition order.
    #[serde(with = "ordered_map")]
    pub counters: Vec<(String, f64)>,
    /// Absolute histogram values by series key, in exposition order.
    #[serde(with = "ordered_map")]
    pub hists: Vec<(String, HistValues)>,
    /// Running totals since zai-dash first saw the target.
    pub totals: TotalsState,
    /// Label values admitted so far, per kind, for [`LABEL_VALUE_CAP`].
    pub seen: BTreeMap<String, BTreeSet<String>>,
    /// The build version last announced (by a version-change event, or the first one seen).
    pub version: Option<String>,
    /// When the last version-change event was, so events stay at most one a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_event_ms: Option<i64>,
    /// Changes whenever the series (keys, order, histogram bounds) or the admitted label values
    /// change, so the persister knows when the positions of its values moved. Not persisted.
    #[serde(skip)]
    pub layout: u64,
}

/// Serializes `[(key, value)]` as a JSON object and reads an object back in document order,
/// so the persisted form is the map it always was while memory keeps the exposition's order.
mod ordered_map {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(v: &[(String, T)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<(String, T)>, D::Error> {
        struct Ordered<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Ordered<T> {
            type Value = Vec<(String, T)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of series keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Ordered(PhantomData))
    }
}

/// Serializable mirror of [`Totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TotalsState {
    r2: f64,
    r4: f64,
    r5: f64,
    tokens: [f64; 4],
    cost: [f64; 4],
    rejections: f64,
    adj_inc: f64,
    adj_dec: f64,
    upstream_errors: f64,
    retries: f64,
}

impl TotalsState {
    /// Number of fields.
    const LEN: usize = 16;

    fn fields(&self) -> [f64; Self::LEN] {
        let [t0, t1, t2, t3] = self.tokens;
        let [c0, c1, c2, c3] = self.cost;
        [
            self.r2,
            self.r4,
            self.r5,
            t0,
            t1,
            t2,
            t3,
            c0,
            c1,
            c2,
            c3,
            self.rejections,
            self.adj_inc,
            self.adj_dec,
            self.upstream_errors,
            self.retries,
        ]
    }

    fn from_fields(f: [f64; Self::LEN]) -> Self {
        let [r2, r4, r5, t0, t1, t2, t3, c0, c1, c2, c3, rejections, adj_inc, adj_dec, upstream_errors, retries] = f;
        Self {
            r2,
            r4,
            r5,
            tokens: [t0, t1, t2, t3],
            cost: [c0, c1, c2, c3],
            rejections,
            adj_inc,
            adj_dec,
            upstream_errors,
            retries,
        }
    }
}

impl From<TotalsState> for Totals {
    fn from(t: TotalsState) -> Self {
        Totals {
            requests_2xx: t.r2,
            requests_4xx: t.r4,
            requests_5xx: t.r5,
            tokens: t.tokens,
            cost: t.cost,
            rejections: t.rejections,
            adj_increase: t.adj_inc,
            adj_decrease: t.adj_dec,
            upstream_errors: t.upstream_errors,
            retry_attempts: t.retries,
        }
    }
}

impl From<Totals> for TotalsState {
    fn from(t: Totals) -> Self {
        TotalsState {
            r2: t.requests_2xx,
            r4: t.requests_4xx,
            r5: t.requests_5xx,
            tokens: t.tokens,
            cost: t.cost,
            rejections: t.rejections,
            adj_inc: t.adj_increase,
            adj_dec: t.adj_decrease,
            upstream_errors: t.upstream_errors,
            retries: t.retry_attempts,
        }
    }
}

/// Absolute values of one histogram series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistValues {
    /// Cumulative `(le, count)`.
    #[serde(with = "bounds_as_text")]
    pub buckets: Vec<(f64, f64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: f64,
}

/// JSON has no infinity, and every histogram ends with `le="+Inf"`: bounds are stored as text.
mod bounds_as_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(buckets: &[(f64, f64)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(String, f64)> = buckets.iter().map(|(le, c)| (le.to_string(), *c)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let v: Vec<(String, f64)> = Vec::deserialize(d)?;
        v.into_iter().map(|(le, c)| le.parse::<f64>().map(|le| (le, c)).map_err(serde::de::Error::custom)).collect()
    }
}

impl TargetState {
    /// Every value, in a fixed order: counters, each histogram's bucket counts then sum and
    /// count, then the running totals. Positions hold while [`Self::layout`] does.
    pub fn slots(&self) -> Vec<f64> {
        let hist_len: usize = self.hists.iter().map(|(_, h)| h.buckets.len() + 2).sum();
        let mut out = Vec::with_capacity(self.counters.len() + hist_len + TotalsState::LEN);
        out.extend(self.counters.iter().map(|(_, v)| *v));
        for (_, h) in &self.hists {
            out.extend(h.buckets.iter().map(|b| b.1));
            out.extend([h.sum, h.count]);
        }
        out.extend(self.totals.fields());
        out
    }

    /// Sets every value from [`Self::slots`]' order; `values` has exactly that length.
    pub fn set_slots(&mut self, values: &[f64]) {
        let mut it = values.iter().copied();
        for (_, v) in &mut self.counters {
            *v = it.next().unwrap_or(*v);
        }
        for (_, h) in &mut self.hists {
            for b in &mut h.buckets {
                b.1 = it.next().unwrap_or(b.1);
            }
            h.sum = it.next().unwrap_or(h.sum);
            h.count = it.next().unwrap_or(h.count);
        }
        let mut fields = self.totals.fields();
        for f in &mut fields {
            *f = it.next().unwrap_or(*f);
        }
        self.totals = TotalsState::from_fields(fields);
    }

    /// Applies a successful scrape completed at `now_ms`: returns the row of increases (for
    /// the given target and variant) and moves the state to this scrape's values.
    pub fn advance(&mut self, reading: &Reading, now_ms: i64, target_id: i64, variant: &str) -> TargetRow {
        self.advance_with(reading, now_ms, None, target_id, variant)
    }

    /// [`Self::advance`] with the time since the previous scrape measured on a monotonic clock
    /// (the scraper's, within one process), which a wall clock stepping back or forth cannot
    /// distort; `None` uses the wall-clock difference (the first scrape after a restart).
    pub fn advance_with(
        &mut self,
        reading: &Reading,
        now_ms: i64,
        elapsed_ms: Option<i64>,
        target_id: i64,
        variant: &str,
    ) -> TargetRow {
        let baseline = self.last_scrape_ms.is_none();
        let mut counts = Counts::default();
        if !baseline {
            self.add_counter_increases(reading, &mut counts);
            self.add_hist_increases(reading, &mut counts);
        }
        let elapsed_ms = match (self.last_scrape_ms, elapsed_ms) {
            (None, _) => 0,
            (Some(_), Some(measured)) => measured.max(0),
            (Some(last), None) => (now_ms - last).max(0),
        };
        let mut totals = Totals::from(self.totals);
        totals.accumulate(&counts);
        self.totals = totals.into();
        self.keep_values(reading);
        self.last_scrape_ms = Some(now_ms);
        TargetRow {
            target_id,
            variant: variant.to_owned(),
            ts_ms: now_ms,
            elapsed_ms,
            present_ms: 0, // the ticker sets it: one point width per raw row
            counts,
            totals,
            gauges: reading.gauges.clone(),
        }
    }

    /// The version change to announce at `now_ms` as `(from, to)`, when `current` differs from
    /// the version last announced and [`version_event_due`] allows one; the first version seen
    /// is taken without an event. Changes inside the minute after an event are not lost: the
    /// next event goes from the last announced version straight to the one reported then.
    /// The announced version is persisted, so a rollout during a restart is seen too.
    pub fn version_change(&mut self, current: Option<&str>, now_ms: i64) -> Option<(String, String)> {
        let current = current?;
        let from = match self.version.as_deref() {
            Some(v) if v == current => return None,
            Some(_) if !version_event_due(self.version_event_ms, now_ms) => return None,
            Some(v) => Some(v.to_owned()),
            None => None,
        };
        self.version = Some(current.to_owned());
        self.layout += 1; // the version lives in checkpoints only
        let from = from?;
        self.version_event_ms = Some(now_ms);
        Some((from, current.to_owned()))
    }

    /// Moves the state to this scrape's absolute values: in place when the series are the
    /// previous scrape's (the steady path), else rebuilt.
    fn keep_values(&mut self, reading: &Reading) {
        if same_keys(&self.counters, &reading.counters, |c| reading.text(c.key)) {
            for ((_, v), c) in self.counters.iter_mut().zip(&reading.counters) {
                *v = c.value;
            }
        } else {
            self.counters = reading.counters.iter().map(|c| (reading.text(c.key).to_owned(), c.value)).collect();
            self.layout += 1;
        }
        let same_bounds = |(_, prev): &(String, HistValues), h: &HistSeries| {
            prev.buckets.len() == h.buckets.len() && prev.buckets.iter().zip(&h.buckets).all(|(p, c)| p.0 == c.0)
        };
        if same_keys(&self.hists, &reading.hists, |h| reading.text(h.key))
            && self.hists.iter().zip(&reading.hists).all(|(p, h)| same_bounds(p, h))
        {
            for ((_, v), h) in self.hists.iter_mut().zip(&reading.hists) {
                for (kept, new) in v.buckets.iter_mut().zip(&h.buckets) {
                    kept.1 = new.1;
                }
                v.sum = h.sum;
                v.count = h.count;
            }
        } else {
            self.hists = reading
                .hists
                .iter()
                .map(|h| {
                    let values = HistValues { buckets: h.buckets.clone(), sum: h.sum, count: h.count };
                    (reading.text(h.key).to_owned(), values)
                })
                .collect();
            self.layout += 1;
        }
    }

    fn add_counter_increases(&mut self, reading: &Reading, counts: &mut Counts) {
        let aligned = same_keys(&self.counters, &reading.counters, |c| reading.text(c.key));
        let by_key: HashMap<&str, f64> =
            if aligned { HashMap::new() } else { self.counters.iter().map(|(k, v)| (k.as_str(), *v)).collect() };
        let mut increases = Vec::new();
        for (i, c) in reading.counters.iter().enumerate() {
            let prev = if aligned { Some(self.counters[i].1) } else { by_key.get(reading.text(c.key)).copied() };
            let inc = match prev {
                Some(prev) if c.value >= prev => c.value - prev,
                _ => c.value, // new series, or a reset: everything counted since is new
            };
            if inc > 0.0 {
                increases.push((i, inc));
            }
        }
        drop(by_key);
        for (i, inc) in increases {
            self.add_to_slot(reading, reading.counters[i].slot, inc, counts);
        }
    }

    fn add_to_slot(&mut self, reading: &Reading, slot: Slot, inc: f64, counts: &mut Counts) {
        let mut capped = |kind: &str, value| self.capped(kind, reading.text(value));
        match slot {
            Slot::Requests(code) => *counts.requests.entry(capped("status_code", code)).or_default() += inc,
            Slot::Tokens(model, d) => counts.tokens.entry(capped("model", model)).or_default()[d] += inc,
            Slot::Cost(model, d) => counts.cost.entry(capped("model", model)).or_default()[d] += inc,
            Slot::UpstreamError(t) => *counts.upstream_errors.entry(capped("error_type", t)).or_default() += inc,
            Slot::Retry(r) => *counts.retries.entry(capped("reason", r)).or_default() += inc,
            Slot::Rejection(client) => {
                counts.rejections += inc;
                if !reading.text(client).is_empty() {
                    let client = self.capped_to("client", reading.text(client), CLIENT_BUCKET_CAP);
                    counts.clients.entry(client).or_default().rejections += inc;
                }
            }
            Slot::Adjustment(d) => counts.adjustments[d] += inc,
        }
    }

    /// The stored label value: as given while fewer than [`LABEL_VALUE_CAP`] distinct values
    /// were seen for `kind`, then `other` for new ones.
    fn capped(&mut self, kind: &str, value: &str) -> Label {
        self.capped_to(kind, value, LABEL_VALUE_CAP)
    }

    /// [`Self::capped`] with its own cap.
    fn capped_to(&mut self, kind: &str, value: &str, cap: usize) -> Label {
        if let Some(seen) = self.seen.get(kind)
            && seen.contains(value)
        {
            return Label::from(value);
        }
        let seen = self.seen.entry(kind.to_owned()).or_default();
        if seen.len() < cap {
            seen.insert(value.to_owned());
            self.layout += 1;
            return Label::from(value);
        }
        Label::from("other")
    }

    fn add_hist_increases(&mut self, reading: &Reading, counts: &mut Counts) {
        let aligned = same_keys(&self.hists, &reading.hists, |h| reading.text(h.key));
        let by_key: HashMap<&str, &HistValues> =
            if aligned { HashMap::new() } else { self.hists.iter().map(|(k, v)| (k.as_str(), v)).collect() };
        let mut increases = Vec::new();
        for (i, h) in reading.hists.iter().enumerate() {
            let prev = if aligned { Some(&self.hists[i].1) } else { by_key.get(reading.text(h.key)).copied() };
            let inc = match prev {
                Some(prev) if !is_reset(prev, &h.buckets, h.count) => Histogram {
                    buckets: h.buckets.iter().zip(&prev.buckets).map(|(c, p)| (c.0, c.1 - p.1)).collect(),
                    sum: (h.sum - prev.sum).max(0.0),
                    count: h.count - prev.count,
                },
                _ => Histogram { buckets: h.buckets.clone(), sum: h.sum, count: h.count },
            };
            if inc.count > 0.0 {
                increases.push((h.slot, inc));
            }
        }
        drop(by_key);
        for (slot, inc) in increases {
            match slot {
                HistSlot::Duration => counts.duration.add(&inc),
                HistSlot::Ttft => counts.ttft.add(&inc),
                HistSlot::Tpot => counts.tpot.add(&inc),
                HistSlot::RequestSize => {
                    counts.request_size.sum += inc.sum;
                    counts.request_size.count += inc.count;
                }
                HistSlot::ResponseSize => {
                    counts.response_size.sum += inc.sum;
                    counts.response_size.count += inc.count;
                }
                // A wait without a `client` label (an older proxy) has no bucket to show.
                HistSlot::Wait(client) if reading.text(client).is_empty() => {}
                HistSlot::Wait(client) => {
                    let client = self.capped_to("client", reading.text(client), CLIENT_BUCKET_CAP);
                    counts.clients.entry(client).or_default().wait.add(&inc);
                }
            }
        }
    }
}

/// Whether `kept` holds exactly the series of `new`, in the same order: the steady scrape's
/// pairing by position, checked against the stored keys (a comparison of bytes, no allocation).
fn same_keys<'r, T, S>(kept: &[(String, T)], new: &'r [S], key: impl Fn(&'r S) -> &'r str) -> bool {
    kept.len() == new.len() && kept.iter().zip(new).all(|((k, _), s)| k == key(s))
}

/// A histogram series restarted (or changed layout) when its count or any bucket went down.
fn is_reset(prev: &HistValues, buckets: &[(f64, f64)], count: f64) -> bool {
    count < prev.count
        || buckets.len() != prev.buckets.len()
        || buckets.iter().zip(&prev.buckets).any(|(c, p)| c.0 != p.0 || c.1 < p.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::{parse::parse, reading::read};

    fn reading(text: &str) -> Reading {
        read(&parse(text).unwrap())
    }

    fn expo(ok: u64, err: u64, fast: u64, slow: u64) -> String {
        format!(
            "# TYPE zai_proxy_requests_total counter\n\
             zai_proxy_requests_total{{status_code=\"200\"}} {ok}\n\
             zai_proxy_requests_total{{status_code=\"500\"}} {err}\n\
             # TYPE zai_proxy_request_duration_seconds histogram\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"0.1\"}} {fast}\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"10\"}} {}\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             zai_proxy_request_duration_seconds_sum 1\n\
             zai_proxy_request_duration_seconds_count {}\n",
            fast + slow,
            fast + slow,
            fast + slow
        )
    }

    #[test]
    fn first_scrape_is_a_baseline() {
        let mut s = TargetState::default();
        let row = s.advance(&reading(&expo(100, 5, 100, 5)), 1_000, 1, "production");
        assert_eq!(row.elapsed_ms, 0);
        assert_eq!(row.counts, Counts::default());
        assert_eq!(row.totals, Totals::default());
    }

    #[test]
    fn increases_between_scrapes() {
        let mut s = TargetState::default();
        s.advance(&reading(&expo(100, 5, 100, 5)), 1_000, 1, "p");
        let row = s.advance(&reading(&expo(110, 6, 100, 16)), 6_000, 1, "p");
        assert_eq!(row.elapsed_ms, 5_000);
        assert_eq!(row.counts.requests["200"], 10.0);
        assert_eq!(row.counts.requests["500"], 1.0);
        assert_eq!(row.counts.duration.count, 11.0);
        assert_eq!(row.counts.duration.buckets[0], (0.1, 0.0));
        assert_eq!(row.totals.requests_2xx, 10.0);
    }

    #[test]
    fn a_counter_reset_counts_the_new_value_never_negative() {
        let mut s = TargetState::default();
        s.advance(&reading(&expo(1000, 50, 1000, 50)), 1_000, 1, "p");
        s.advance(&reading(&expo(1010, 50, 1010, 50)), 6_000, 1, "p");
        let row = s.advance(&reading(&expo(3, 0, 3, 0)), 11_000, 1, "p");
        assert_eq!(row.counts.requests["200"], 3.0);
        assert!(!row.counts.requests.contains_key("500"));
        assert_eq!(row.counts.duration.count, 3.0);
        assert_eq!(row.totals.requests_2xx, 13.0);
    }

    #[test]
    fn a_new_series_on_a_known_target_counts_fully() {
        let mut s = TargetState::default();
        s.advance(&reading("zai_proxy_requests_total{status_code=\"200\"} 5\n"), 0, 1, "p");
        let row = s.advance(
            &reading(
                "zai_proxy_requests_total{status_code=\"200\"} 5\nzai_proxy_requests_total{status_code=\"502\"} 2\n",
            ),
            5_000,
            1,
            "p",
        );
        assert_eq!(row.counts.requests.get("502"), Some(&2.0));
        assert_eq!(row.counts.requests.get("200"), None);
    }

    #[test]
    fn model_labels_are_capped() {
        let mut s = TargetState::default();
        let expo = |n: usize| {
            (0..n)
                .map(|i| format!("zai_proxy_tokens_total{{direction=\"input\",model=\"m{i}\"}} 1\n"))
                .collect::<String>()
        };
        s.advance(&reading(&expo(1)), 0, 1, "p");
        let row = s.advance(&reading(&expo(60)), 5_000, 1, "p");
        // m0 had no increase, so m1..m50 take the 50 places and m51..m59 become `other`.
        assert_eq!(row.counts.tokens.len(), LABEL_VALUE_CAP + 1);
        assert_eq!(row.counts.tokens["other"][0], 9.0);
        assert!(!row.counts.tokens.contains_key("m51"));
    }

    #[test]
    fn models_equal_once_cut_add_up_as_one() {
        let shared = "s".repeat(128);
        let expo = |a: u64, b: u64| {
            format!(
                "zai_proxy_tokens_total{{direction=\"input\",model=\"{shared}{}\"}} {a}\n\
                 zai_proxy_tokens_total{{direction=\"input\",model=\"{shared}{}\"}} {b}\n",
                "A".repeat(200_000),
                "B".repeat(200_000)
            )
        };
        let mut s = TargetState::default();
        s.advance(&reading(&expo(30, 50)), 0, 1, "p");
        let row = s.advance(&reading(&expo(33, 55)), 5_000, 1, "p");
        assert_eq!(row.counts.tokens.len(), 1);
        assert_eq!(row.counts.tokens[shared.as_str()][0], 8.0);
        // One of them restarts: its new value counts, the other's increase too, nothing twice.
        let row = s.advance(&reading(&expo(2, 60)), 10_000, 1, "p");
        assert_eq!(row.counts.tokens[shared.as_str()][0], 7.0);
        assert_eq!(row.totals.tokens[0], 15.0);
        assert!(serde_json::to_string(&s).unwrap().len() < 4_096, "the state holds no 200 KB key");
    }

    #[test]
    fn version_changes_are_announced_at_most_once_a_minute() {
        let mut s = TargetState::default();
        assert_eq!(s.version_change(Some("1.0"), 0), None, "the first version is no change");
        assert_eq!(s.version_change(Some("1.0"), 5_000), None);
        assert_eq!(s.version_change(Some("1.1"), 10_000), Some(("1.0".into(), "1.1".into())));
        for (i, t) in (15_000..70_000).step_by(5_000).enumerate() {
            assert_eq!(s.version_change(Some(&format!("2.{i}")), t), None, "within the minute");
        }
        assert_eq!(s.version.as_deref(), Some("1.1"), "the announced version");
        assert_eq!(s.version_change(None, 69_000), None);
        assert_eq!(s.version_change(Some("2.9"), 70_000), Some(("1.1".into(), "2.9".into())), "coalesced");
        assert_eq!(s.version_change(Some("1.1"), 75_000), None);
        assert_eq!(s.version_change(Some("2.9"), 200_000), None, "back where it was announced");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = TargetState::default();
        s.advance(&reading(&expo(1, 2, 1, 2)), 0, 1, "p");
        let back: TargetState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, TargetState { layout: 0, ..s });
    }
}
