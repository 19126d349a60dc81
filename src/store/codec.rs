//! Compact binary encoding of a row's payload (increases, totals, gauges), and the one reader
//! of it ([`view`]): decoding to owned values ([`decode`]), summarising for points
//! ([`RowView::summary`]) and adding into window sums ([`RowView::add_to`]) all read through it.
//!
//! Rows are small and mostly zeros or small integers, so numbers are tagged: zero costs one
//! byte, an integer or a value with at most three decimals costs a byte plus a varint, one with
//! up to fifteen decimals whose digits fit 45 bits a byte plus a packed varint (since version 3),
//! anything else nine bytes. Histogram buckets are stored as per-bucket increments (mostly zero)
//! and summed back to cumulative counts on decode; zai-proxy's own bucket bounds and quota limit
//! types are named by an index rather than written out (version 3). This keeps a target-day at 5 s in the low
//! megabytes (see BENCHMARKS.md) where the Go dashboard's JSON blobs took 40-60 MB. The first
//! byte is a format version, so a later format can be read side by side.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::point::summary::status;
use crate::point::{
    ClientCounts, Counts, GaugeStat, Gauges, Histogram, Label, Quota, QuotaWindow, SumCount, Summary, Totals,
};
use crate::ports::ingest::SavedState;

/// Format of row payloads written now: 3 names a histogram's bounds by an index into
/// [`KNOWN_BOUNDS`] when they are one of zai-proxy's sets, a quota window's limit type by an
/// index into [`KNOWN_LIMIT_TYPES`], and writes a value with four to fifteen decimals as a
/// packed decimal (number tag 6): the open raw rows' pages were most of what a tick writes,
/// and these took about a quarter of a typical 5 s row (BENCHMARKS.md, "Write volume, twelfth
/// stop").
pub(crate) const VERSION: u8 = 3;
/// Payloads of version 2 (each histogram's bucket encoding flagged: increments, or cumulative
/// counts when increments would not decode to the same bits; bounds always written) are still
/// read.
const VERSION_2: u8 = 2;
/// Payloads of version 1 (histograms always as increments) are still read.
const VERSION_1: u8 = 1;
/// Bucket bounds a payload of version 3 names by their index here instead of writing them:
/// zai-proxy's request duration, time to first token and time per output token buckets, each
/// with `+Inf` (a test keeps them equal to the built-in proxy's). A 5 s row of a busy target
/// carries the duration histogram, whose bounds took 37 bytes of about 270. **Append only**:
/// a stored payload's index means its entry here for good.
const KNOWN_BOUNDS: [&[f64]; 3] = [
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, f64::INFINITY],
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0, f64::INFINITY],
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, f64::INFINITY],
];
/// Quota limit types a payload of version 3 names by their index here (the ones
/// `scrape::reading` prefers): 26 bytes of a row with both windows. **Append only**, as
/// [`KNOWN_BOUNDS`].
const KNOWN_LIMIT_TYPES: [&str; 2] = ["credit_limit", "tokens_limit"];
/// Powers of ten of a packed decimal (number tag 6), each exact as an `f64`.
const TENS: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
/// Format of encoded totals (unchanged since version 1).
const TOTALS_VERSION: u8 = 1;
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// A payload that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt row payload: {0}")]
pub struct CodecError(pub(crate) &'static str);

/// Encodes the payload of a row.
pub fn encode(counts: &Counts, totals: &Totals, gauges: &Gauges) -> Vec<u8> {
    let mut w = Enc(Vec::with_capacity(128), true);
    w.0.push(VERSION);
    w.counts(counts);
    w.totals(totals);
    for g in [&gauges.concurrent, &gauges.max_workers, &gauges.rate_limit_rps] {
        w.gauge(g);
    }
    w.quota(gauges.quota.as_ref());
    if !counts.clients.is_empty() {
        w.clients(&counts.clients);
    }
    w.0
}

/// Encodes running totals alone (a target's latest totals, kept with its state).
pub(crate) fn encode_totals(totals: &Totals) -> Vec<u8> {
    // Without packed decimals: the totals' format is unchanged, so a build before version 3
    // payloads still reads a target's kept totals.
    let mut w = Enc(Vec::with_capacity(32), false);
    w.0.push(TOTALS_VERSION);
    w.totals(totals);
    w.0
}

/// `targets.state` as both writers store a [`SavedState`] (the scrape task's checkpoints and
/// start-up's consolidated ones, each compressed where it was made): deflated a BLOB, else the
/// JSON as the TEXT earlier builds wrote; [`decode_state`] reads both.
///
/// Why compressed: a checkpointed state (the scraper's JSON, about 10 KB with the fixture's
/// series) is written every 10 minutes per target, and as TEXT it spilled over three overflow
/// pages, rewritten each time (BENCHMARKS.md, "Write volume, fifth stop"); deflated it fits in
/// its table page.
pub(crate) struct StateColumn<'a>(pub &'a SavedState);

impl rusqlite::ToSql for StateColumn<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self.0 {
            SavedState::Deflated(blob) => ToSqlOutput::Borrowed(ValueRef::Blob(blob)),
            SavedState::Plain(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

/// The state a [`StateColumn`] stored deflated ([`crate::ports::ingest::inflate_json`]).
pub(crate) fn decode_state(blob: &[u8]) -> Result<String, CodecError> {
    crate::ports::ingest::inflate_json(blob).ok_or(CodecError("corrupt compressed state"))
}

/// Decodes what [`encode_totals`] wrote.
pub(crate) fn decode_totals(bytes: &[u8]) -> Result<Totals, CodecError> {
    let mut r = Dec(bytes, VERSION);
    if r.u8()? != TOTALS_VERSION {
        return Err(CodecError("unknown format version"));
    }
    r.totals()
}

/// Decodes a payload written by [`encode`] into owned values.
pub fn decode(bytes: &[u8]) -> Result<(Counts, Totals, Gauges), CodecError> {
    let v = view(bytes)?;
    // Inserted one by one: `collect` into a map first gathers the entries in a `Vec` (an
    // allocation or more per map of every row decoded).
    fn owned<'a, V>(entries: impl Iterator<Item = (&'a str, V)>) -> BTreeMap<Label, V> {
        let mut m = BTreeMap::new();
        for (k, v) in entries {
            m.insert(Label::from(k), v);
        }
        m
    }
    let owned1 = |m: &MapView<'_, 1>| owned(m.iter().map(|(k, [x])| (k, x)));
    let owned4 = |m: &MapView<'_, 4>| owned(m.iter());
    let [request_size, response_size] = v.size_sums();
    let [duration, ttft, tpot] = v.histograms();
    let counts = Counts {
        requests: owned1(&v.requests),
        tokens: owned4(&v.tokens),
        cost: owned4(&v.cost),
        upstream_errors: owned1(&v.upstream_errors),
        retries: owned1(&v.retries),
        rejections: v.rejections,
        adjustments: v.adjustments,
        request_size,
        response_size,
        duration,
        ttft,
        tpot,
        clients: owned(v.clients.iter()),
    };
    let [concurrent, max_workers, rate_limit_rps] = v.gauges;
    Ok((counts, v.totals, Gauges { concurrent, max_workers, rate_limit_rps, quota: v.quota()? }))
}

/// A payload read in place: scalars decoded, maps, histograms and quota left as byte slices to
/// iterate on demand. Range queries summarise rows through this without allocating per label.
#[derive(Debug, Clone, Copy)]
pub struct RowView<'a> {
    /// Requests by status code.
    pub requests: MapView<'a, 1>,
    /// Tokens by model, per direction.
    pub tokens: MapView<'a, 4>,
    /// Cost by model, per direction.
    pub cost: MapView<'a, 4>,
    /// Upstream errors by type.
    pub upstream_errors: MapView<'a, 1>,
    /// Retries by reason.
    pub retries: MapView<'a, 1>,
    /// Capacity rejections.
    pub rejections: f64,
    /// Rate limit adjustments.
    pub adjustments: [f64; 3],
    /// Request size sum and count, response size sum and count.
    pub sizes: [f64; 4],
    /// Duration, TTFT and TPOT buckets.
    pub hists: [HistView<'a>; 3],
    /// Running totals.
    pub totals: Totals,
    /// Concurrency, max workers and rate limit gauges.
    pub gauges: [Option<GaugeStat>; 3],
    /// The quota section, still encoded (rows of one target usually repeat it byte for byte).
    pub quota_bytes: &'a [u8],
    /// Per caller bucket: rejections and rate-limiter waits (empty in rows written before
    /// they were kept, or without any).
    pub clients: ClientsView<'a>,
}

impl RowView<'_> {
    /// Request and response size sums and counts.
    fn size_sums(&self) -> [SumCount; 2] {
        let [rs, rc, ps, pc] = self.sizes;
        [SumCount { sum: rs, count: rc }, SumCount { sum: ps, count: pc }]
    }

    /// Duration, TTFT and TPOT buckets with cumulative counts.
    fn histograms(&self) -> [Histogram; 3] {
        self.hists.map(HistView::to_histogram)
    }

    /// The row reduced to what points use, without allocating a string per label: what a
    /// range query keeps of every stored row. Sums run in the same order as
    /// [`Summary::from`]'s (per direction over models, then over directions), so REST and the
    /// live stream agree to the bit.
    pub(crate) fn summary(
        &self,
        target_id: i64,
        variant: Arc<str>,
        (ts_ms, elapsed_ms): (i64, i64),
        quota: Option<Arc<Quota>>,
    ) -> Summary {
        let by_direction = |m: &MapView<'_, 4>| {
            let mut out = [0.0; 4];
            for (_, t) in m.iter() {
                for (a, b) in out.iter_mut().zip(t) {
                    *a += b;
                }
            }
            out
        };
        let [request_size, response_size] = self.size_sums();
        let [duration, ttft, tpot] = self.histograms();
        Summary {
            target_id,
            variant,
            ts_ms,
            elapsed_ms,
            present_ms: 0,
            requests: self.requests.iter().map(|(k, [n])| (status(k), n)).collect(),
            tokens: by_direction(&self.tokens),
            cost: add_up(by_direction(&self.cost).into_iter()),
            upstream_errors: add_up(self.upstream_errors.iter().map(|(_, [n])| n)),
            retries: add_up(self.retries.iter().filter(|(k, _)| *k != "retry").map(|(_, [n])| n)),
            rejections: self.rejections,
            request_size,
            response_size,
            duration,
            ttft,
            tpot,
            totals: self.totals,
            gauges: self.gauges,
            quota,
        }
    }

    /// Adds this row's increases into `c`, allocating only for labels `c` does not have yet.
    pub fn add_to(&self, c: &mut Counts) {
        fn add1(m: &mut BTreeMap<Label, f64>, view: &MapView<'_, 1>) {
            for (k, [v]) in view.iter() {
                match m.get_mut(k) {
                    Some(x) => *x += v,
                    None => {
                        m.insert(Label::from(k), v);
                    }
                }
            }
        }
        fn add4(m: &mut BTreeMap<Label, [f64; 4]>, view: &MapView<'_, 4>) {
            for (k, v) in view.iter() {
                let e = match m.get_mut(k) {
                    Some(x) => x,
                    None => m.entry(Label::from(k)).or_default(),
                };
                for (a, b) in e.iter_mut().zip(v) {
                    *a += b;
                }
            }
        }
        add1(&mut c.requests, &self.requests);
        add4(&mut c.tokens, &self.tokens);
        add4(&mut c.cost, &self.cost);
        add1(&mut c.upstream_errors, &self.upstream_errors);
        add1(&mut c.retries, &self.retries);
        c.rejections += self.rejections;
        for (a, b) in c.adjustments.iter_mut().zip(self.adjustments) {
            *a += b;
        }
        let [rs, rc, ps, pc] = self.sizes;
        c.request_size.sum += rs;
        c.request_size.count += rc;
        c.response_size.sum += ps;
        c.response_size.count += pc;
        for (h, view) in [&mut c.duration, &mut c.ttft, &mut c.tpot].into_iter().zip(self.hists) {
            view.add_into(h);
        }
        self.clients.add_to(&mut c.clients);
    }

    /// The quota block, decoded.
    pub fn quota(&self) -> Result<Option<Quota>, CodecError> {
        Dec(self.quota_bytes, VERSION).quota()
    }
}

/// A sum from +0.0, in iteration order (like `point::total`, by value).
fn add_up(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |a, b| a + b)
}

/// An encoded `label -> [f64; N]` map.
#[derive(Debug, Clone, Copy)]
pub struct MapView<'a, const N: usize> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a, const N: usize> MapView<'a, N> {
    /// Entries in label order (validated by [`view`], so iteration cannot fail).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, [f64; N])> + 'a {
        let mut d = Dec(self.bytes, VERSION);
        (0..self.len).map_while(move |_| Some((d.str_ref().ok()?, d.nums::<N>().ok()?)))
    }
}

/// The encoded caller buckets: `client -> (rejections, wait histogram)`, appended after the
/// quota section only when a row has any, so rows without them are byte for byte what they
/// were before they existed (and older rows read as having none).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientsView<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> ClientsView<'a> {
    /// Entries in label order (validated by [`view`], so iteration cannot fail).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, ClientCounts)> + 'a {
        let mut d = Dec(self.bytes, VERSION);
        let mut bounds = Vec::new();
        (0..self.len).map_while(move |_| {
            let name = d.str_ref().ok()?;
            let rejections = d.num().ok()?;
            let wait = d.wait_hist(&mut bounds).ok()?;
            Some((name, ClientCounts { rejections, wait }))
        })
    }
}

impl ClientsView<'_> {
    /// Adds every caller bucket into `clients` exactly as [`ClientCounts::add`] of the decoded
    /// entry does (a new bucket inserted as decoded), building an entry's wait histogram only
    /// when `clients` lacks the bucket or has other bounds: a window sum adds each row's buckets.
    pub(crate) fn add_to(&self, clients: &mut BTreeMap<Label, ClientCounts>) {
        let mut d = Dec(self.bytes, VERSION);
        // Where the last histogram that wrote its bounds starts (its `(le, n)` pairs), for
        // the entries after it that share them.
        let mut written: &[u8] = &[];
        for _ in 0..self.len {
            let (Ok(name), Ok(rejections), Ok((len, same, cumulative))) = (d.str_ref(), d.num(), d.wait_header())
            else {
                return; // validated by `view`
            };
            let body = d.0;
            let bounds = || {
                let mut b = Dec(if same { written } else { body }, VERSION);
                (0..len).map(move |_| {
                    let le = b.num().unwrap_or(f64::NAN);
                    let _ = b.skip_num();
                    le
                })
            };
            let mine = clients.get_mut(name);
            let in_place = mine.filter(|c| {
                c.wait.buckets.len() == len && c.wait.buckets.iter().zip(bounds()).all(|(a, le)| a.0 == le)
            });
            if let Some(c) = in_place {
                c.rejections += rejections;
                if len > 0 {
                    let mut cum = 0.0;
                    for b in &mut c.wait.buckets {
                        if !same {
                            let _ = d.skip_num();
                        }
                        let n = d.num().unwrap_or(0.0);
                        cum = if cumulative { n } else { cum + n };
                        b.1 += cum;
                    }
                    c.wait.sum += d.num().unwrap_or(0.0);
                    c.wait.count += d.num().unwrap_or(0.0);
                }
            } else {
                let mut wait = Histogram::default();
                if len > 0 {
                    let mut cum = 0.0;
                    wait.buckets = bounds()
                        .map(|le| {
                            if !same {
                                let _ = d.skip_num();
                            }
                            let n = d.num().unwrap_or(0.0);
                            cum = if cumulative { n } else { cum + n };
                            (le, cum)
                        })
                        .collect();
                    (wait.sum, wait.count) = (d.num().unwrap_or(0.0), d.num().unwrap_or(0.0));
                }
                let entry = ClientCounts { rejections, wait };
                match clients.get_mut(name) {
                    Some(c) => c.add(&entry),
                    None => {
                        clients.insert(Label::from(name), entry);
                    }
                }
            }
            if !same && len > 0 {
                written = body;
            }
        }
    }
}

/// Encoded histogram buckets, sum and count.
#[derive(Debug, Clone, Copy)]
pub struct HistView<'a> {
    bytes: &'a [u8],
    len: usize,
    /// Counts stored cumulative rather than as per-bucket increments.
    cumulative: bool,
    /// The bounds, when the payload names them ([`KNOWN_BOUNDS`]) instead of writing each
    /// before its count.
    known: Option<&'static [f64]>,
}

impl HistView<'_> {
    /// Hands each bucket's bound and stored count (an increment, or cumulative) to `bucket`,
    /// in order, and returns the sum and count (validated by [`view`], so reading cannot fail).
    #[inline]
    fn read(&self, mut bucket: impl FnMut(f64, f64)) -> (f64, f64) {
        let mut d = Dec(self.bytes, VERSION);
        for i in 0..self.len {
            let le = match self.known {
                Some(bounds) => bounds.get(i).copied().unwrap_or(f64::NAN),
                None => d.num().unwrap_or(f64::NAN),
            };
            bucket(le, d.num().unwrap_or(0.0));
        }
        (d.num().unwrap_or(0.0), d.num().unwrap_or(0.0))
    }

    /// Adds these buckets into `h` exactly as `h.add(&self.to_histogram())` does, without
    /// building the histogram when `h` has the same bounds (rows of one proxy build do): a
    /// window sum adds three histograms per row, each a `Vec` when built.
    pub(crate) fn add_into(self, h: &mut Histogram) {
        if self.len == 0 {
            return; // `to_histogram` is empty, which `Histogram::add` skips
        }
        if h.buckets.len() == self.len && self.same_bounds(&h.buckets) {
            let (mut cum, mut i) = (0.0, 0);
            let buckets = &mut h.buckets;
            let (sum, count) = self.read(|_, n| {
                cum = if self.cumulative { n } else { cum + n };
                if let Some(b) = buckets.get_mut(i) {
                    b.1 += cum;
                }
                i += 1;
            });
            h.sum += sum;
            h.count += count;
        } else {
            h.add(&self.to_histogram());
        }
    }

    /// True when the encoded bounds equal `buckets`' (as `==` compares them, like
    /// `Histogram::add`).
    fn same_bounds(&self, buckets: &[(f64, f64)]) -> bool {
        if let Some(bounds) = self.known {
            return bounds.len() == buckets.len() && bounds.iter().zip(buckets).all(|(le, b)| *le == b.0);
        }
        let mut d = Dec(self.bytes, VERSION);
        buckets.iter().all(|b| matches!((d.num(), d.skip_num()), (Ok(le), Ok(())) if le == b.0))
    }

    /// The histogram with cumulative counts.
    pub fn to_histogram(self) -> Histogram {
        if self.len == 0 {
            return Histogram::default();
        }
        let mut buckets = Vec::with_capacity(self.len);
        let mut cum = 0.0;
        let (sum, count) = self.read(|le, n| {
            cum = if self.cumulative { n } else { cum + n };
            buckets.push((le, cum));
        });
        Histogram { buckets, sum, count }
    }
}

/// Reads a payload in place, checking its whole structure (so later iteration cannot fail).
pub fn view(bytes: &[u8]) -> Result<RowView<'_>, CodecError> {
    let mut r = Dec(bytes, VERSION);
    let version = r.u8()?;
    if !matches!(version, VERSION | VERSION_2 | VERSION_1) {
        return Err(CodecError("unknown format version"));
    }
    r.1 = version;
    let requests = r.map_view::<1>()?;
    let tokens = r.map_view::<4>()?;
    let cost = r.map_view::<4>()?;
    let upstream_errors = r.map_view::<1>()?;
    let retries = r.map_view::<1>()?;
    let rejections = r.num()?;
    let adjustments = r.nums::<3>()?;
    let sizes = r.nums::<4>()?;
    let hists = [r.hist_view()?, r.hist_view()?, r.hist_view()?];
    let totals = r.totals()?;
    let gauges = [r.gauge()?, r.gauge()?, r.gauge()?];
    let rest = r.0;
    let mut after_quota = Dec(rest, VERSION);
    after_quota.skip_quota()?; // checked without allocating; decoded only when needed
    let quota_bytes = &rest[..rest.len() - after_quota.0.len()];
    let clients = if after_quota.0.is_empty() { ClientsView::default() } else { after_quota.clients_view()? };
    Ok(RowView {
        requests,
        tokens,
        cost,
        upstream_errors,
        retries,
        rejections,
        adjustments,
        sizes,
        hists,
        totals,
        gauges,
        quota_bytes,
        clients,
    })
}

/// An encoder: the bytes, and whether numbers may be written as packed decimals (tag 6, payload
/// version 3 and later; not in encoded totals, whose format did not change).
struct Enc(Vec<u8>, bool);

impl Enc {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn num(&mut self, v: f64) {
        if v == 0.0 && v.is_sign_positive() {
            self.0.push(0);
        } else if (0.0..MAX_EXACT).contains(&v) && v.fract() == 0.0 {
            self.0.push(1);
            self.varint(v as u64);
        } else if v > -MAX_EXACT && v < 0.0 && v.fract() == 0.0 {
            self.0.push(5);
            self.varint((-v) as u64);
        } else if v == f64::INFINITY {
            self.0.push(4);
        } else if let Some(m) = as_millis(v) {
            self.0.push(2);
            self.varint(m);
        } else if let Some(packed) = self.1.then_some(v).and_then(as_decimal) {
            self.0.push(6);
            self.varint(packed);
        } else {
            self.0.push(3);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn map<V>(&mut self, m: &BTreeMap<Label, V>, mut put: impl FnMut(&mut Self, &V)) {
        self.varint(m.len() as u64);
        for (k, v) in m {
            self.str(k);
            put(self, v);
        }
    }

    fn nums(&mut self, vs: &[f64]) {
        for &v in vs {
            self.num(v);
        }
    }

    /// Buckets as increments (mostly zeros: one byte each) when summing them back gives the
    /// same bits, else as cumulative counts (fractional counts may not round-trip through a
    /// difference), flagged in the length's lowest bit. Exact either way: a stored row reads back
    /// equal to the live one, to the bit.
    fn hist(&mut self, h: &Histogram) {
        if h.is_empty() {
            self.varint(0);
            return;
        }
        // Zero buckets reads back as an empty histogram, so observations without buckets (an
        // exporter that sent only `_sum` and `_count`) are stored in a `+Inf` bucket: by
        // definition it holds the count.
        let inf = [(f64::INFINITY, h.count)];
        let buckets: &[(f64, f64)] = if h.buckets.is_empty() { &inf } else { &h.buckets };
        let cumulative = !increments_round_trip(buckets);
        let known = KNOWN_BOUNDS
            .iter()
            .position(|k| k.len() == buckets.len() && k.iter().zip(buckets).all(|(k, b)| k.to_bits() == b.0.to_bits()));
        self.varint(((buckets.len() as u64) << 2) | (u64::from(known.is_some()) << 1) | u64::from(cumulative));
        if let Some(i) = known {
            self.0.push(i as u8);
        }
        let mut below = 0.0;
        for &(le, c) in buckets {
            if known.is_none() {
                self.num(le);
            }
            self.num(if cumulative { c } else { c - below });
            below = c;
        }
        self.num(h.sum);
        self.num(h.count);
    }

    fn counts(&mut self, c: &Counts) {
        self.map(&c.requests, |w, v| w.num(*v));
        self.map(&c.tokens, |w, v| w.nums(v));
        self.map(&c.cost, |w, v| w.nums(v));
        self.map(&c.upstream_errors, |w, v| w.num(*v));
        self.map(&c.retries, |w, v| w.num(*v));
        self.num(c.rejections);
        self.nums(&c.adjustments);
        self.nums(&[c.request_size.sum, c.request_size.count, c.response_size.sum, c.response_size.count]);
        for h in [&c.duration, &c.ttft, &c.tpot] {
            self.hist(h);
        }
    }

    fn clients(&mut self, clients: &BTreeMap<Label, ClientCounts>) {
        let mut bounds = Vec::new();
        self.map(clients, |w, c| {
            w.num(c.rejections);
            w.wait_hist(&c.wait, &mut bounds);
        });
    }

    /// A caller bucket's wait histogram as [`Self::hist`] writes one, except that bounds equal
    /// to the previous bucket's written ones (every bucket of one proxy has the same) are not
    /// repeated, flagged in the length's second bit: each bucket after the first costs a row
    /// about 50 bytes instead of 78 (the fixture's busiest row, measured in the tests).
    fn wait_hist(&mut self, h: &Histogram, bounds: &mut Vec<f64>) {
        if h.is_empty() {
            self.varint(0);
            return;
        }
        let inf = [(f64::INFINITY, h.count)];
        let buckets: &[(f64, f64)] = if h.buckets.is_empty() { &inf } else { &h.buckets };
        let cumulative = !increments_round_trip(buckets);
        let same = buckets.len() == bounds.len()
            && buckets.iter().zip(bounds.iter()).all(|(b, p)| b.0.to_bits() == p.to_bits());
        self.varint(((buckets.len() as u64) << 2) | (u64::from(same) << 1) | u64::from(cumulative));
        let mut below = 0.0;
        for &(le, c) in buckets {
            if !same {
                self.num(le);
            }
            self.num(if cumulative { c } else { c - below });
            below = c;
        }
        self.num(h.sum);
        self.num(h.count);
        if !same {
            // What the reader will hold: the bounds as they decode (`-0.0` reads back as `0.0`).
            *bounds = buckets.iter().map(|b| Dec(&encoded_num(b.0), VERSION).num().unwrap_or(b.0)).collect();
        }
    }

    fn totals(&mut self, t: &Totals) {
        self.nums(&[t.requests_2xx, t.requests_4xx, t.requests_5xx]);
        self.nums(&t.tokens);
        self.nums(&t.cost);
        self.nums(&[t.rejections, t.adj_increase, t.adj_decrease, t.upstream_errors, t.retry_attempts]);
    }

    fn gauge(&mut self, g: &Option<GaugeStat>) {
        match g {
            None => self.0.push(0),
            Some(s) if s.avg == s.min && s.min == s.max && s.max == s.last => {
                self.0.push(1);
                self.num(s.last);
            }
            Some(s) => {
                self.0.push(2);
                self.nums(&[s.avg, s.min, s.max, s.last]);
            }
        }
    }

    fn opt_num(&mut self, v: Option<f64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.num(v);
            }
        }
    }

    fn opt_bool(&mut self, v: Option<bool>) {
        self.0.push(match v {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }

    fn window(&mut self, w: Option<&QuotaWindow>) {
        let Some(w) = w else {
            self.0.push(0);
            return;
        };
        self.0.push(1);
        match &w.limit_type {
            None => self.0.push(0),
            Some(t) => match KNOWN_LIMIT_TYPES.iter().position(|k| k == t) {
                Some(i) => {
                    self.0.push(2);
                    self.0.push(i as u8);
                }
                None => {
                    self.0.push(1);
                    self.str(t);
                }
            },
        }
        self.opt_num(w.usage_ratio);
        self.opt_num(w.remaining_ratio);
        self.opt_num(w.reset_time_unix);
    }

    fn quota(&mut self, q: Option<&Quota>) {
        let Some(q) = q else {
            self.0.push(0);
            return;
        };
        self.0.push(1);
        self.window(q.five_hour.as_ref());
        self.window(q.weekly.as_ref());
        self.opt_num(q.sample_age_seconds);
        self.opt_bool(q.gate_open);
        self.opt_bool(q.enforcement);
    }
}

/// True when per-bucket increments, summed in order from zero, give back every cumulative count
/// bit for bit (always for whole counts).
fn increments_round_trip(buckets: &[(f64, f64)]) -> bool {
    let (mut below, mut decoded) = (0.0_f64, 0.0_f64);
    for &(_, c) in buckets {
        decoded += c - below;
        if decoded.to_bits() != c.to_bits() {
            return false;
        }
        below = c;
    }
    true
}

/// `v` as [`Enc::num`] writes it.
fn encoded_num(v: f64) -> Vec<u8> {
    let mut w = Enc(Vec::with_capacity(9), true);
    w.num(v);
    w.0
}

/// `v` as an exact count of thousandths, when that round-trips bit for bit.
fn as_millis(v: f64) -> Option<u64> {
    let m = (v * 1000.0).round();
    (v > 0.0 && m < MAX_EXACT && m / 1000.0 == v).then_some(m as u64)
}

/// `v > 0` as the fewest decimals `m / 10^k` (`k` from 4 to 15) that read back bit for bit,
/// packed `m << 4 | k`, when that takes at most seven bytes (a varint of 8 saves nothing over
/// tag 3's 8 bytes): ratios such as a quota's `0.4215` take 4 bytes instead of 9.
fn as_decimal(v: f64) -> Option<u64> {
    const LIMIT: f64 = (1u64 << 45) as f64; // m << 4 below 2^49: a varint of at most 7 bytes
    if !(v > 0.0 && v < LIMIT) {
        return None;
    }
    for (k, ten) in TENS.iter().enumerate().skip(4) {
        let m = (v * ten).round();
        if m >= LIMIT {
            return None;
        }
        if m / ten == v {
            return Some(((m as u64) << 4) | k as u64);
        }
    }
    None
}

/// The value of a packed decimal ([`as_decimal`]).
fn decimal(packed: u64) -> f64 {
    (packed >> 4) as f64 / TENS[(packed & 15) as usize]
}

/// A reader over encoded bytes, and the payload format being read (decides how histograms were
/// written).
struct Dec<'a>(&'a [u8], u8);

const TRUNCATED: CodecError = CodecError("truncated");

impl<'a> Dec<'a> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.0.split_first().ok_or(TRUNCATED)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        // Most varints here are one byte (counts, lengths, small increases): read without the
        // loop, which a decode of an hour's rows (every number passes here) spent a tenth in.
        if let Some((&b, rest)) = self.0.split_first()
            && b < 0x80
        {
            self.0 = rest;
            return Ok(u64::from(b));
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError("length overflow"))?;
        if n > self.0.len() {
            return Err(TRUNCATED); // every element takes at least one byte
        }
        Ok(n)
    }

    fn num(&mut self) -> Result<f64, CodecError> {
        Ok(match self.u8()? {
            0 => 0.0,
            1 => self.varint()? as f64,
            2 => self.varint()? as f64 / 1000.0,
            3 => {
                let (b, rest) = self.0.split_first_chunk::<8>().ok_or(TRUNCATED)?;
                self.0 = rest;
                f64::from_le_bytes(*b)
            }
            4 => f64::INFINITY,
            5 => -(self.varint()? as f64),
            6 => decimal(self.varint()?),
            _ => return Err(CodecError("unknown number tag")),
        })
    }

    fn nums<const N: usize>(&mut self) -> Result<[f64; N], CodecError> {
        let mut out = [0.0; N];
        for v in &mut out {
            *v = self.num()?;
        }
        Ok(out)
    }

    fn str_ref(&mut self) -> Result<&'a str, CodecError> {
        let n = self.len()?;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| CodecError("label is not UTF-8"))
    }

    fn str(&mut self) -> Result<String, CodecError> {
        self.str_ref().map(str::to_owned)
    }

    /// Skips over a map, checking every entry, and returns its bytes.
    fn map_view<const N: usize>(&mut self) -> Result<MapView<'a, N>, CodecError> {
        let len = self.len()?;
        let start = self.0;
        for _ in 0..len {
            self.str_ref()?;
            for _ in 0..N {
                self.skip_num()?;
            }
        }
        Ok(MapView { bytes: &start[..start.len() - self.0.len()], len })
    }

    /// Steps over a number without computing it (finding section boundaries is most of
    /// [`view`]'s work, so it must not pay for values it does not keep).
    fn skip_num(&mut self) -> Result<(), CodecError> {
        match self.u8()? {
            0 | 4 => Ok(()),
            1 | 2 | 5 | 6 => {
                let end = self.0.iter().position(|b| b & 0x80 == 0).ok_or(TRUNCATED)?;
                if end >= 10 {
                    return Err(CodecError("varint too long"));
                }
                self.0 = &self.0[end + 1..];
                Ok(())
            }
            3 => {
                self.0 = self.0.get(8..).ok_or(TRUNCATED)?;
                Ok(())
            }
            _ => Err(CodecError("unknown number tag")),
        }
    }

    /// The caller buckets' section, checked whole (nothing may follow it).
    fn clients_view(&mut self) -> Result<ClientsView<'a>, CodecError> {
        let len = self.len()?;
        let start = self.0;
        let mut bounds = 0;
        for _ in 0..len {
            self.str_ref()?;
            self.skip_num()?;
            self.skip_wait_hist(&mut bounds)?;
        }
        if !self.0.is_empty() {
            return Err(CodecError("bytes after the last section"));
        }
        Ok(ClientsView { bytes: start, len })
    }

    /// The length, "same bounds" and "cumulative" flags of a wait histogram.
    fn wait_header(&mut self) -> Result<(usize, bool, bool), CodecError> {
        let v = usize::try_from(self.varint()?).map_err(|_| CodecError("length overflow"))?;
        let len = v >> 2;
        if len > self.0.len() {
            return Err(TRUNCATED); // every bucket takes at least one byte
        }
        Ok((len, v & 2 != 0, v & 1 != 0))
    }

    /// A wait histogram written by [`Enc::wait_hist`]; `bounds` are the last written ones.
    fn wait_hist(&mut self, bounds: &mut Vec<f64>) -> Result<Histogram, CodecError> {
        let (len, same, cumulative) = self.wait_header()?;
        if len == 0 {
            return Ok(Histogram::default());
        }
        if same && bounds.len() != len {
            return Err(CodecError("wait buckets without their bounds"));
        }
        let mut buckets = Vec::with_capacity(len);
        let mut cum = 0.0;
        for i in 0..len {
            let le = if same { bounds.get(i).copied().ok_or(TRUNCATED)? } else { self.num()? };
            let n = self.num()?;
            cum = if cumulative { n } else { cum + n };
            buckets.push((le, cum));
        }
        let (sum, count) = (self.num()?, self.num()?);
        if !same {
            *bounds = buckets.iter().map(|b| b.0).collect();
        }
        Ok(Histogram { buckets, sum, count })
    }

    /// Walks a wait histogram like [`Self::wait_hist`] without building it; `bounds` is how
    /// many the last written ones were.
    fn skip_wait_hist(&mut self, bounds: &mut usize) -> Result<(), CodecError> {
        let (len, same, _) = self.wait_header()?;
        if len == 0 {
            return Ok(());
        }
        if same && *bounds != len {
            return Err(CodecError("wait buckets without their bounds"));
        }
        for _ in 0..len * if same { 1 } else { 2 } + 2 {
            self.skip_num()?;
        }
        if !same {
            *bounds = len;
        }
        Ok(())
    }

    /// Walks a quota section like [`Self::quota`] without building it.
    fn skip_quota(&mut self) -> Result<(), CodecError> {
        if self.u8()? == 0 {
            return Ok(());
        }
        for _ in 0..2 {
            if self.u8()? != 0 {
                match self.u8()? {
                    0 => {}
                    2 => {
                        self.known_limit_type()?;
                    }
                    _ => {
                        self.str_ref()?;
                    }
                }
                for _ in 0..3 {
                    self.opt_num()?;
                }
            }
        }
        self.opt_num()?;
        self.opt_bool()?;
        self.opt_bool()?;
        Ok(())
    }

    fn hist_view(&mut self) -> Result<HistView<'a>, CodecError> {
        let (len, cumulative, known) = match self.1 {
            VERSION_1 => (self.len()?, false, None),
            VERSION_2 => {
                let v = usize::try_from(self.varint()?).map_err(|_| CodecError("length overflow"))?;
                if v >> 1 > self.0.len() {
                    return Err(TRUNCATED);
                }
                (v >> 1, v & 1 == 1, None)
            }
            _ => {
                let v = usize::try_from(self.varint()?).map_err(|_| CodecError("length overflow"))?;
                let len = v >> 2;
                if len > self.0.len() {
                    return Err(TRUNCATED);
                }
                let known = if v & 2 != 0 {
                    let bounds = KNOWN_BOUNDS.get(usize::from(self.u8()?)).copied();
                    match bounds {
                        Some(b) if b.len() == len => Some(b),
                        _ => return Err(CodecError("unknown histogram bounds")),
                    }
                } else {
                    None
                };
                (len, v & 1 == 1, known)
            }
        };
        let start = self.0;
        if len > 0 {
            let per_bucket = if known.is_some() { 1 } else { 2 };
            for _ in 0..per_bucket * len + 2 {
                self.skip_num()?;
            }
        }
        Ok(HistView { bytes: &start[..start.len() - self.0.len()], len, cumulative, known })
    }

    fn totals(&mut self) -> Result<Totals, CodecError> {
        let [r2, r4, r5] = self.nums()?;
        let tokens = self.nums()?;
        let cost = self.nums()?;
        let [rejections, adj_increase, adj_decrease, upstream_errors, retry_attempts] = self.nums()?;
        Ok(Totals {
            requests_2xx: r2,
            requests_4xx: r4,
            requests_5xx: r5,
            tokens,
            cost,
            rejections,
            adj_increase,
            adj_decrease,
            upstream_errors,
            retry_attempts,
        })
    }

    fn gauge(&mut self) -> Result<Option<GaugeStat>, CodecError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(GaugeStat::single(self.num()?)),
            2 => {
                let [avg, min, max, last] = self.nums()?;
                Some(GaugeStat { avg, min, max, last })
            }
            _ => return Err(CodecError("unknown gauge tag")),
        })
    }

    fn opt_num(&mut self) -> Result<Option<f64>, CodecError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.num()?),
        })
    }

    fn opt_bool(&mut self) -> Result<Option<bool>, CodecError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        })
    }

    fn window(&mut self) -> Result<Option<QuotaWindow>, CodecError> {
        if self.u8()? == 0 {
            return Ok(None);
        }
        let limit_type = match self.u8()? {
            0 => None,
            2 => Some(self.known_limit_type()?.to_owned()),
            _ => Some(self.str()?),
        };
        Ok(Some(QuotaWindow {
            limit_type,
            usage_ratio: self.opt_num()?,
            remaining_ratio: self.opt_num()?,
            reset_time_unix: self.opt_num()?,
        }))
    }

    /// A limit type named by its index in [`KNOWN_LIMIT_TYPES`].
    fn known_limit_type(&mut self) -> Result<&'static str, CodecError> {
        let i = self.u8()?;
        KNOWN_LIMIT_TYPES.get(usize::from(i)).copied().ok_or(CodecError("unknown limit type"))
    }

    fn quota(&mut self) -> Result<Option<Quota>, CodecError> {
        if self.u8()? == 0 {
            return Ok(None);
        }
        Ok(Some(Quota {
            five_hour: self.window()?,
            weekly: self.window()?,
            sample_age_seconds: self.opt_num()?,
            gate_open: self.opt_bool()?,
            enforcement: self.opt_bool()?,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scrape::{increase::TargetState, parse::parse, reading::read};

    const SAMPLE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");

    fn fixture_row() -> (Counts, Totals, Gauges) {
        // A reset from nothing makes every fixture value an increase: the busiest possible row.
        let mut st = TargetState { last_scrape_ms: Some(0), ..TargetState::default() };
        let row = st.advance(&read(&parse(SAMPLE).unwrap()), 5_000, 1, "production");
        (row.counts, row.totals, row.gauges)
    }

    /// A 5 s row as the pipeline bench writes them: two requests, tokens and cost of one model,
    /// the proxy's duration buckets, the fixture's totals and quota.
    pub(crate) fn typical_row() -> (Counts, Totals, Gauges) {
        let (_, totals, gauges) = fixture_row();
        let mut duration = Histogram::default();
        let mut cum = 0.0;
        for le in
            [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, f64::INFINITY]
        {
            cum += f64::from(u8::from(le == 2.5 || le == 30.0));
            duration.buckets.push((le, cum));
        }
        (duration.sum, duration.count) = (17.481_290_137_345_95, 2.0);
        let counts = Counts {
            requests: BTreeMap::from([(Label::from("200"), 2.0)]),
            tokens: BTreeMap::from([(Label::from("glm-4.7"), [1_234.0, 567.0, 0.0, 0.0])]),
            cost: BTreeMap::from([(Label::from("glm-4.7"), [0.002_468_000_000_000_083, 0.001_134, 0.0, 0.0])]),
            duration,
            ..Counts::default()
        };
        (counts, totals, gauges)
    }

    /// [`typical_row`] as a build before version 3 encoded it (`f438f3d`): 285 bytes.
    const TYPICAL_ROW_V2: [&str; 6] = [
        "02010332303001020107676c6d2d342e3701d20901b70400000107676c6d2d342e3703843d2b69c537643f039278793a",
        "5794523f00000000000000000000000020020500020a0002190002320002640002fa010002f4030001010002c4130101",
        "010500010a00011e0101013c0001780001ac0200040003c8c997d4357b31400102000001f30b01040106018ca8a40101",
        "8d892b0194e2da0401bec00803cb87fb2367bcfc3f0372ef2b20feabfb3f03e323d6a0372ef33f00010401070103012d",
        "012601010301010a0102d8e5010101010c746f6b656e735f6c696d6974010282010102e606010184f9f7d40601010c63",
        "72656469745f6c696d6974010360e5d022dbf9da3f0103508d976e1283e23f0101c0b383d5060102e4d4030001",
    ];

    fn unhex(parts: &[&str]) -> Vec<u8> {
        let hex: String = parts.concat();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// [`typical_row`]'s payload as a build before version 3 wrote it.
    pub(crate) fn typical_row_v2() -> Vec<u8> {
        unhex(&TYPICAL_ROW_V2)
    }

    #[test]
    fn version_2_payloads_still_read() {
        let v2 = typical_row_v2();
        assert_eq!((v2[0], v2.len()), (VERSION_2, 285));
        let (c, t, g) = typical_row();
        assert_eq!(decode(&v2).unwrap(), (c.clone(), t, g.clone()));
        // Read in place alike: summaries, window sums and the quota block.
        let (old, new) = (encode(&c, &t, &g), v2.clone());
        let summary = |b: &[u8]| {
            let v = view(b).unwrap();
            v.summary(1, Arc::from("p"), (5_000, 5_000), v.quota().unwrap().map(Arc::new))
        };
        assert_eq!(summary(&old), summary(&new));
        let (mut a, mut b) = (Counts::default(), Counts::default());
        for _ in 0..2 {
            view(&old).unwrap().add_to(&mut a);
            view(&new).unwrap().add_to(&mut b);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn a_typical_row_names_the_proxys_bounds_and_limit_types() {
        let (c, t, g) = typical_row();
        let bytes = encode(&c, &t, &g);
        assert_eq!(decode(&bytes).unwrap(), (c.clone(), t, g.clone()));
        // Bounds 37 bytes -> 1, limit types 26 -> 2, the weekly ratios 18 -> 8.
        assert!(bytes.len() <= 285 - 65, "{} bytes", bytes.len());
        // Every known set round-trips, and so does a set one bound away from one (written).
        for bounds in KNOWN_BOUNDS {
            let mut other = bounds.to_vec();
            other[1] *= 1.5;
            for (les, named) in [(bounds.to_vec(), true), (other, false)] {
                let h = Histogram {
                    buckets: les.iter().enumerate().map(|(i, &le)| (le, i as f64)).collect(),
                    sum: 2.5,
                    count: (les.len() - 1) as f64,
                };
                let c = Counts { ttft: h.clone(), ..Counts::default() };
                let bytes = encode(&c, &Totals::default(), &Gauges::default());
                assert_eq!(decode(&bytes).unwrap().0.ttft, h);
                let v = view(&bytes).unwrap();
                assert_eq!(v.hists[1].known.is_some(), named, "{les:?}");
                let mut sum = h.clone();
                v.hists[1].add_into(&mut sum);
                assert_eq!(
                    sum.buckets.iter().map(|b| b.1).collect::<Vec<_>>(),
                    h.buckets.iter().map(|b| 2.0 * b.1).collect::<Vec<_>>()
                );
            }
        }
    }

    /// The built-in proxy exports the bounds the codec names: a change there would store every
    /// bound again (and is caught here, to add the new set at the end of [`KNOWN_BOUNDS`]).
    #[test]
    fn the_known_bounds_are_the_proxys() {
        use crate::proxy::metrics::{DURATION_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS};
        for (proxy, known) in [DURATION_BUCKETS, TTFT_BUCKETS, TPOT_BUCKETS].into_iter().zip(KNOWN_BOUNDS) {
            assert_eq!([proxy, &[f64::INFINITY]].concat(), known);
        }
    }

    #[test]
    fn short_decimals_are_packed_and_every_value_reads_back_to_the_bit() {
        let len = |v: f64| {
            let mut w = Enc(Vec::new(), true);
            w.num(v);
            w.0.len()
        };
        assert_eq!([len(0.4215), len(0.5785), len(0.000_002), len(29.4)], [4, 4, 2, 4]);
        assert_eq!(len(0.1 + 0.2), 9, "no short decimal: the 8 bytes");
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..20_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let v = match i % 4 {
                0 => f64::from_bits(rng),
                1 => (rng % 1_000_000_000) as f64 / TENS[(rng >> 40) as usize % 16],
                2 => (rng >> 11) as f64 / (1u64 << 53) as f64,
                _ => (rng % 10_000) as f64 * 0.000_002 + 0.964_197_52,
            };
            let mut w = Enc(Vec::new(), true);
            w.num(v);
            assert!(w.0.len() <= 9);
            let back = Dec(&w.0, VERSION).num().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e} read back as {back:e}");
        }
        // Encoded totals keep their format (no packed decimals): a build before version 3 reads them.
        let t = Totals { cost: [0.4215, 0.0, 0.0, 0.0], ..Totals::default() };
        let kept = encode_totals(&t);
        assert!(!kept.contains(&6), "{kept:?}");
        assert_eq!(decode_totals(&kept).unwrap(), t);
    }

    #[test]
    fn a_row_read_in_place_summarises_like_the_decoded_row() {
        let (counts, totals, gauges) = fixture_row();
        let bytes = encode(&counts, &totals, &gauges);
        let v = view(&bytes).unwrap();
        let quota = v.quota().unwrap().map(Arc::new);
        let in_place = v.summary(7, Arc::from("production"), (5_000, 5_000), quota);
        let row = crate::point::TargetRow {
            target_id: 7,
            variant: "production".into(),
            ts_ms: 5_000,
            elapsed_ms: 5_000,
            present_ms: 0,
            counts,
            totals,
            gauges,
        };
        assert_eq!(in_place, Summary::from(&row), "REST (in place) and the live stream (decoded) agree");
    }

    #[test]
    fn round_trips_a_full_row() {
        let (c, t, g) = fixture_row();
        assert!(g.quota.is_some() && !c.duration.is_empty());
        let bytes = encode(&c, &t, &g);
        let (c2, t2, g2) = decode(&bytes).unwrap();
        assert_eq!((c2, t2, g2), (c, t, g));
    }

    #[test]
    fn numbers_round_trip_exactly() {
        for v in [0.0, 1.0, 29.4, 0.005, 1.4074068, 1e300, -3.0, -0.5, f64::INFINITY, 2.0f64.powi(60), 1e-9] {
            let g = Gauges { concurrent: Some(GaugeStat::single(v)), ..Gauges::default() };
            let (_, _, back) = decode(&encode(&Counts::default(), &Totals::default(), &g)).unwrap();
            assert_eq!(back.concurrent.unwrap().last.to_bits(), v.to_bits(), "{v}");
        }
    }

    #[test]
    fn fractional_histogram_counts_read_back_to_the_bit() {
        // 0.1 + 0.2 - 0.1 is not 0.2: such counts are stored cumulative, whole ones as increments.
        let frac = Histogram {
            buckets: vec![(0.5, 0.1), (1.0, 0.30000000000000004), (f64::INFINITY, 3967.1558)],
            sum: 1.0,
            count: 3967.1558,
        };
        let whole = Histogram { buckets: vec![(0.5, 10.0), (1.0, 10.0), (f64::INFINITY, 12.0)], sum: 1.0, count: 12.0 };
        for h in [frac, whole] {
            let c = Counts { duration: h.clone(), ..Counts::default() };
            let (back, _, _) = decode(&encode(&c, &Totals::default(), &Gauges::default())).unwrap();
            let bits = |h: &Histogram| h.buckets.iter().map(|(le, c)| (le.to_bits(), c.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&back.duration), bits(&h));
        }
    }

    #[test]
    fn version_1_payloads_still_read() {
        // A version-1 payload: histograms as increments, length without a flag bit.
        let c = Counts {
            duration: Histogram { buckets: vec![(1.0, 2.0), (f64::INFINITY, 5.0)], sum: 3.0, count: 5.0 },
            ..Counts::default()
        };
        let mut v2 = encode(&c, &Totals::default(), &Gauges::default());
        let at = v2.iter().position(|&b| b == 8).unwrap(); // the length 2 << 2 of the histogram
        v2[at] = 2;
        v2[0] = VERSION_1;
        let (back, _, _) = decode(&v2).unwrap();
        assert_eq!(back.duration.buckets, vec![(1.0, 2.0), (f64::INFINITY, 5.0)]);
    }

    #[test]
    fn a_histogram_without_buckets_keeps_its_count() {
        // Found by fuzzing: a target exposing only `_sum` and `_count` gave rows whose histogram
        // was written as zero buckets followed by sum and count, which no decoder could read.
        let text = "# TYPE zai_proxy_request_duration_seconds histogram\n\
            zai_proxy_request_duration_seconds_sum 2.5\nzai_proxy_request_duration_seconds_count 3\n";
        let mut st = TargetState { last_scrape_ms: Some(0), ..TargetState::default() };
        let row = st.advance(&read(&parse(text).unwrap()), 5_000, 1, "p");
        assert_eq!(row.counts.duration, Histogram { buckets: Vec::new(), sum: 2.5, count: 3.0 });
        let (back, _, _) = decode(&encode(&row.counts, &row.totals, &row.gauges)).unwrap();
        assert_eq!(back.duration, Histogram { buckets: vec![(f64::INFINITY, 3.0)], sum: 2.5, count: 3.0 });
    }

    #[test]
    fn caller_buckets_round_trip_and_a_row_without_them_is_unchanged() {
        let (c, t, g) = fixture_row();
        let clients = &c.clients;
        assert_eq!(clients.keys().collect::<Vec<_>>(), ["source-43", "source-53"]);
        assert_eq!(clients["source-43"].rejections, 3.0);
        assert_eq!(clients["source-43"].wait.count, 1568.0);
        let bytes = encode(&c, &t, &g);
        assert_eq!(&decode(&bytes).unwrap().0, &c);
        let mut summed = Counts::default();
        view(&bytes).unwrap().add_to(&mut summed);
        summed.add(&decode(&bytes).unwrap().0);
        assert_eq!(summed.clients["source-43"].wait.count, 2.0 * 1568.0, "added in place and decoded alike");
        // Without caller buckets, not one byte more than before they were kept: the quota
        // section is the last.
        let without = Counts { clients: BTreeMap::new(), ..c };
        let short = encode(&without, &t, &g);
        assert_eq!(view(&short).unwrap().quota_bytes, view(&bytes).unwrap().quota_bytes);
        assert_eq!(short.len() + 1 + view(&bytes).unwrap().clients.bytes.len(), bytes.len());
        // What busy caller buckets cost a 5 s row: the first, its name, rejections and 13 wait
        // buckets with their bounds; each further one the same without the bounds.
        let one = &c.clients["source-43"];
        let size = |n: usize| {
            let mut w = Enc(Vec::new(), true);
            w.clients(&(0..n).map(|i| (Label::from(format!("source-{i:02}")), one.clone())).collect());
            w.0.len()
        };
        let (first, next) = (size(1), size(2) - size(1));
        eprintln!("first caller bucket: {first} bytes, each further one: {next}; a row without: {}", short.len());
        assert!(first <= 80 && next <= 52, "{first} and {next} bytes");
        let many: BTreeMap<Label, ClientCounts> =
            (0..64).map(|i| (Label::from(format!("source-{i:02}")), one.clone())).collect();
        let with_many = encode(&Counts { clients: many.clone(), ..without.clone() }, &t, &g);
        assert_eq!(decode(&with_many).unwrap().0.clients, many, "64 buckets sharing their bounds");
    }

    #[test]
    fn adding_rows_in_place_sums_as_adding_the_decoded_rows() {
        // Rows whose histograms and caller buckets change bounds, appear and vanish, so adding
        // in place meets both its paths (same bounds: added where they are; others: merged).
        let (fixture, t, g) = fixture_row();
        let wait = |bounds: &[f64], n: f64| Histogram {
            buckets: bounds.iter().enumerate().map(|(i, &le)| (le, n * (i + 1) as f64 + 0.1)).collect(),
            sum: n * 0.3,
            count: n * bounds.len() as f64 + 0.1,
        };
        let (narrow, wide) = ([0.1, 1.0, f64::INFINITY], [0.1, 0.5, 1.0, f64::INFINITY]);
        let mut rows = Vec::new();
        for i in 0..12 {
            let n = f64::from(i);
            let mut c = fixture.clone();
            c.requests.insert(Label::from(format!("{}", 200 + i % 3)), n);
            c.duration = if i % 4 == 3 { wait(&wide, n) } else { wait(&narrow, n) };
            c.ttft = if i % 5 == 0 { Histogram::default() } else { wait(&narrow, n / 3.0) };
            c.clients.clear();
            for (k, name) in ["source-01", "source-02", "source-03"].into_iter().enumerate() {
                if (i + k as i32) % 3 != 0 {
                    let bounds: &[f64] = if i % 5 == 4 && k == 1 { &wide } else { &narrow };
                    let w = if i % 7 == 6 { Histogram::default() } else { wait(bounds, n + k as f64) };
                    c.clients.insert(name.into(), ClientCounts { rejections: n, wait: w });
                }
            }
            rows.push(encode(&c, &t, &g));
        }
        let (mut in_place, mut decoded) = (Counts::default(), Counts::default());
        for r in &rows {
            view(r).unwrap().add_to(&mut in_place);
            decoded.add(&decode(r).unwrap().0);
        }
        assert_eq!(format!("{in_place:?}"), format!("{decoded:?}"));
        assert!(decoded.duration.buckets.len() == 4 && decoded.clients["source-02"].wait.buckets.len() == 4);
    }

    #[test]
    fn an_idle_row_is_small() {
        let (_, t, mut g) = fixture_row();
        g.quota = None;
        let bytes = encode(&Counts::default(), &t, &g);
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (c, t, g) = fixture_row();
        assert!(!c.clients.is_empty(), "the fixture has caller buckets");
        let bytes = encode(&c, &t, &g);
        // Cut right before the caller buckets' section, a row reads as one without any: that
        // section is optional (rows written before it existed end there).
        let without = encode(&Counts { clients: BTreeMap::new(), ..c.clone() }, &t, &g);
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]) {
                Ok(row) => assert!(cut == without.len() && row.0.clients.is_empty(), "cut at {cut}"),
                Err(_) => assert_ne!(cut, without.len()),
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err(), "nothing may follow the last section");
        assert!(decode(&[9, 9, 9]).is_err());
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode(&flipped);
            flipped[i] ^= 0x5a;
        }
        // A named set or limit type this build does not know, or a set of another length than
        // the histogram's, is an error (not a panic, not other bounds).
        let (typical, ..) = typical_row();
        let named = encode(&Counts { duration: typical.duration, ..Counts::default() }, &t, &Gauges::default());
        let at = named.iter().position(|&b| b == 16 << 2 | 2).unwrap() + 1; // after the histogram's length
        assert_eq!(named[at], 0, "the duration set");
        for (index, why) in [(3, "unknown histogram bounds"), (1, "unknown histogram bounds")] {
            let mut bad = named.clone();
            bad[at] = index;
            assert_eq!(view(&bad).map(|_| ()).unwrap_err().0, why, "index {index}");
        }
        let window = QuotaWindow { limit_type: Some("tokens_limit".into()), ..QuotaWindow::default() };
        let quota = Gauges { quota: Some(Quota { five_hour: Some(window), ..Quota::default() }), ..Gauges::default() };
        let mut bad = encode(&Counts::default(), &Totals::default(), &quota);
        let at = bad.windows(2).position(|w| w == [2, 1]).unwrap() + 1; // tag 2, index 1
        bad[at] = 2;
        assert_eq!(view(&bad).map(|_| ()).unwrap_err().0, "unknown limit type");
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn states_compress_with_one_reused_compressor_whatever_their_size() {
        // Hex of a pseudo-random stream compresses to about half: more than the first guess
        // of a quarter, so the output grows; each state decodes alone (the compressor is reset).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noisy: String = (0..60_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from_digit((x % 16) as u32, 16).unwrap_or('0')
            })
            .collect();
        for json in [noisy.as_str(), "{\"series\":[]}", noisy.as_str(), ""] {
            let SavedState::Deflated(blob) = SavedState::of_json(json.to_owned()) else { panic!("compressed") };
            assert!(!blob.is_empty());
            assert_eq!(decode_state(&blob).unwrap(), json);
        }
    }
}
