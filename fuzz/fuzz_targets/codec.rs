//! The row codec: decoding hostile bytes, and encode -> decode of rows built from the input.
//!
//! Every input is used twice:
//! - as an encoded row: `decode` and `view` never panic, agree on what is valid, never allocate
//!   more than a small multiple of the input (a hostile length prefix must not reserve
//!   gigabytes), and a row they accept re-encodes to the same row;
//! - as the choices of a generator of `(Counts, Totals, Gauges)`: `decode(encode(row))` gives the
//!   row back, and `view(..).add_to` sums the same values as `decode`.
//!
//! What the codec promises for numbers: every `f64` comes back bit for bit, except `-0.0`, which
//! comes back as `0.0`. A histogram with no observation (`count <= 0` and no positive bucket)
//! comes back empty; one with observations but no bucket comes back with a single `+Inf` bucket
//! holding its count. Bucket counts are stored as per-bucket increments, so they come back
//! exactly when they are integers below 2^52 in magnitude (as every exporter writes them); other
//! counts only have to decode (bounds, sum and a positive count still come back exactly).

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zai_dash::point::{
    ClientCounts, Counts, GaugeStat, Gauges, Histogram, Label, Quota, QuotaWindow, SumCount, Totals,
};
use zai_dash::store::codec::{decode, encode, view};

fuzz_target!(|data: &[u8]| {
    check_bytes(data);
    let mut u = Unstructured::new(data);
    if let Ok(row) = gen_row(&mut u) {
        check_round_trip(&row);
    }
});

type Row = (Counts, Totals, Gauges);

fn check_bytes(data: &[u8]) {
    let ((decoded, viewed), peak) = measured(|| {
        let decoded = decode(data);
        let viewed = view(data).map(|v| {
            let mut summed = Counts::default();
            v.add_to(&mut summed);
            let _ = v.quota();
            for h in &v.hists {
                let _ = h.to_histogram();
            }
            summed
        });
        (decoded, viewed)
    });
    let limit = 64 * data.len() + 64 * 1024;
    assert!(peak <= limit, "decoding {} bytes took {peak} bytes of heap", data.len());
    assert_eq!(decoded.is_ok(), viewed.is_ok(), "decode and view disagree on {data:?}");
    let Ok(row) = decoded else { return };
    let again = decode(&encode(&row.0, &row.1, &row.2)).expect("a decoded row re-encodes");
    assert_eq!(normalized(&again, false), normalized(&row, false));
}

fn check_round_trip(row: &Row) {
    let bytes = encode(&row.0, &row.1, &row.2);
    let back = decode(&bytes).expect("an encoded row decodes");
    let hists = || [&row.0.duration, &row.0.ttft, &row.0.tpot].into_iter().chain(row.0.clients.values().map(|c| &c.wait));
    let exact = hists().all(exact_counts);
    assert_eq!(normalized(&back, exact), normalized(row, exact), "round trip of {row:?}");
    if exact && hists().all(sorted_bounds) {
        let mut summed = Counts::default();
        view(&bytes).expect("an encoded row is a valid view").add_to(&mut summed);
        assert_eq!(normalized(&(summed, back.1, back.2.clone()), true), normalized(&back, true), "view disagrees");
    }
}

// ---- what the codec promises, as a canonical text to compare ----

/// `-0.0` as `0.0`; `Debug` of `f64` round-trips every other value (NaNs compare as `NaN`).
fn z(v: f64) -> f64 {
    if v == 0.0 { 0.0 } else { v }
}

fn exact_counts(h: &Histogram) -> bool {
    h.buckets.iter().all(|&(_, c)| c.fract() == 0.0 && c.abs() < 4_503_599_627_370_496.0)
}

/// Strictly increasing, NaN-free bounds: the layout `Histogram::add` keeps as it is.
fn sorted_bounds(h: &Histogram) -> bool {
    h.buckets.windows(2).all(|w| w[0].0 < w[1].0) && h.buckets.iter().all(|b| !b.0.is_nan())
}

fn normalized(row: &Row, exact: bool) -> String {
    let (c, t, g) = row;
    let map1 = |m: &BTreeMap<Label, f64>| m.iter().map(|(k, v)| (k.to_string(), z(*v))).collect::<Vec<_>>();
    let map4 = |m: &BTreeMap<Label, [f64; 4]>| m.iter().map(|(k, v)| (k.to_string(), v.map(z))).collect::<Vec<_>>();
    let hist = |h: &Histogram| {
        // Without exact counts, float noise in the increments decides whether a histogram with
        // no positive count reads back as empty: only one with a positive count is compared.
        if h.is_empty() || !(exact || h.count > 0.0) {
            return Histogram::default();
        }
        let count = |c: f64| if exact { z(c) } else { 0.0 };
        let inf = [(f64::INFINITY, h.count)];
        let buckets = if h.buckets.is_empty() { &inf[..] } else { &h.buckets };
        Histogram {
            buckets: buckets.iter().map(|&(le, c)| (z(le), count(c))).collect(),
            sum: z(h.sum),
            count: z(h.count),
        }
    };
    let sc = |s: &SumCount| (z(s.sum), z(s.count));
    let gauge = |s: &Option<GaugeStat>| s.map(|s| [s.avg, s.min, s.max, s.last].map(z));
    let window = |w: &Option<QuotaWindow>| {
        w.as_ref()
            .map(|w| (w.limit_type.clone(), [w.usage_ratio, w.remaining_ratio, w.reset_time_unix].map(|v| v.map(z))))
    };
    let quota = g
        .quota
        .as_ref()
        .map(|q| (window(&q.five_hour), window(&q.weekly), q.sample_age_seconds.map(z), q.gate_open, q.enforcement));
    format!(
        "{:?}",
        (
            (map1(&c.requests), map4(&c.tokens), map4(&c.cost), map1(&c.upstream_errors), map1(&c.retries)),
            (z(c.rejections), c.adjustments.map(z), sc(&c.request_size), sc(&c.response_size)),
            (hist(&c.duration), hist(&c.ttft), hist(&c.tpot)),
            c.clients.iter().map(|(k, cc)| (k.to_string(), z(cc.rejections), hist(&cc.wait))).collect::<Vec<_>>(),
            [t.requests_2xx, t.requests_4xx, t.requests_5xx, t.rejections].map(z),
            [t.adj_increase, t.adj_decrease, t.upstream_errors, t.retry_attempts].map(z),
            (t.tokens.map(z), t.cost.map(z)),
            (gauge(&g.concurrent), gauge(&g.max_workers), gauge(&g.rate_limit_rps), quota),
        )
    )
}

// ---- a row from the fuzzer's choices ----

const SPECIAL: [f64; 16] = [
    -0.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    9_007_199_254_740_992.0,
    9_007_199_254_740_991.0,
    -9_007_199_254_740_992.0,
    -9_007_199_254_740_991.0,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
    0.1,
    0.0005,
    29.4,
    1e-9,
];

fn num(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => 0.0,
        1 => f64::from(u.arbitrary::<u16>()?),
        2 => f64::from(u.arbitrary::<u32>()?) / 1000.0,
        3 => -f64::from(u.arbitrary::<u16>()?),
        4 => *u.choose(&SPECIAL)?,
        _ => f64::from_bits(u.arbitrary()?),
    })
}

fn nums<const N: usize>(u: &mut Unstructured) -> Result<[f64; N]> {
    let mut out = [0.0; N];
    for v in &mut out {
        *v = num(u)?;
    }
    Ok(out)
}

/// Up to 24 bytes: labels held inline (up to 22) and shared ones both.
fn label(u: &mut Unstructured) -> Result<Label> {
    let len = u.int_in_range(0..=24usize)?;
    Ok(Label::from(String::from_utf8_lossy(u.bytes(len.min(u.len()))?).as_ref()))
}

fn map<V>(u: &mut Unstructured, mut value: impl FnMut(&mut Unstructured) -> Result<V>) -> Result<BTreeMap<Label, V>> {
    let n = u.int_in_range(0..=6usize)?;
    let mut m = BTreeMap::new();
    for _ in 0..n {
        m.insert(label(u)?, value(u)?);
    }
    Ok(m)
}

/// Either what a scrape produces (increasing bounds, integer counts) or any floats at all.
fn histogram(u: &mut Unstructured) -> Result<Histogram> {
    let n = u.int_in_range(0..=12usize)?;
    let mut buckets = Vec::with_capacity(n);
    if u.arbitrary::<bool>()? {
        let mut bounds = Vec::with_capacity(n);
        for _ in 0..n {
            bounds.push(num(u)?);
        }
        bounds.retain(|b| !b.is_nan());
        bounds.sort_by(f64::total_cmp);
        bounds.dedup_by(|a, b| a == b);
        for le in bounds {
            buckets.push((le, f64::from(u.arbitrary::<u32>()?)));
        }
    } else {
        for _ in 0..n {
            buckets.push((num(u)?, num(u)?));
        }
    }
    Ok(Histogram { buckets, sum: num(u)?, count: num(u)? })
}

fn gauge(u: &mut Unstructured) -> Result<Option<GaugeStat>> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => None,
        1 => Some(GaugeStat::single(num(u)?)),
        _ => {
            let [avg, min, max, last] = nums(u)?;
            Some(GaugeStat { avg, min, max, last })
        }
    })
}

fn opt_num(u: &mut Unstructured) -> Result<Option<f64>> {
    Ok(if u.arbitrary()? { Some(num(u)?) } else { None })
}

fn window(u: &mut Unstructured) -> Result<Option<QuotaWindow>> {
    if !u.arbitrary::<bool>()? {
        return Ok(None);
    }
    Ok(Some(QuotaWindow {
        limit_type: if u.arbitrary()? { Some(label(u)?.to_string()) } else { None },
        usage_ratio: opt_num(u)?,
        remaining_ratio: opt_num(u)?,
        reset_time_unix: opt_num(u)?,
    }))
}

fn gen_row(u: &mut Unstructured) -> Result<Row> {
    let [rs, rc, ps, pc] = nums(u)?;
    let counts = Counts {
        requests: map(u, num)?,
        tokens: map(u, nums::<4>)?,
        cost: map(u, nums::<4>)?,
        upstream_errors: map(u, num)?,
        retries: map(u, num)?,
        rejections: num(u)?,
        adjustments: nums(u)?,
        request_size: SumCount { sum: rs, count: rc },
        response_size: SumCount { sum: ps, count: pc },
        duration: histogram(u)?,
        ttft: histogram(u)?,
        tpot: histogram(u)?,
        clients: map(u, |u| Ok(ClientCounts { rejections: num(u)?, wait: histogram(u)? }))?,
    };
    let [r2, r4, r5] = nums(u)?;
    let [rejections, adj_increase, adj_decrease, upstream_errors, retry_attempts] = nums(u)?;
    let totals = Totals {
        requests_2xx: r2,
        requests_4xx: r4,
        requests_5xx: r5,
        tokens: nums(u)?,
        cost: nums(u)?,
        rejections,
        adj_increase,
        adj_decrease,
        upstream_errors,
        retry_attempts,
    };
    let quota = if u.arbitrary()? {
        Some(Quota {
            five_hour: window(u)?,
            weekly: window(u)?,
            sample_age_seconds: opt_num(u)?,
            gate_open: u.arbitrary()?,
            enforcement: u.arbitrary()?,
        })
    } else {
        None
    };
    let gauges = Gauges { concurrent: gauge(u)?, max_workers: gauge(u)?, rate_limit_rps: gauge(u)?, quota };
    Ok((counts, totals, gauges))
}

// ---- heap accounting: the largest live heap while decoding ----

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    if ARMED.load(Relaxed) {
        let live = LIVE.fetch_add(by, Relaxed) + by;
        PEAK.fetch_max(live, Relaxed);
    }
}

fn shrank(by: usize) {
    if ARMED.load(Relaxed) {
        // Saturating: memory allocated before arming may be freed while armed.
        let _ = LIVE.fetch_update(Relaxed, Relaxed, |l| Some(l.saturating_sub(by)));
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak heap it used (live bytes above the start).
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    ARMED.store(true, Relaxed);
    let out = f();
    ARMED.store(false, Relaxed);
    (out, PEAK.load(Relaxed))
}
