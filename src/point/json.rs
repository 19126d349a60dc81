//! A point's JSON written directly, byte for byte what `serde_json` makes of its derived
//! `Serialize`.
//!
//! A chart's first request serializes every point it reads: an hour's 1,440 points are 2 MB of
//! JSON, about 50 numbers and their keys each. Serializing them was a fifth of a cold request's
//! CPU, a third of that `serde_json` escaping each constant key and checking its map
//! serializer's state per field (BENCHMARKS.md, "Memory and first request, fifteenth stop"): an
//! hour's points took 2.8 ms, 1.0 here. The keys here are constants; the numbers are written by
//! `serde_json`'s own formatter, so they are the same digits, and whole numbers (most of a
//! point's: counts, totals, limits, zeroes) as the integer and `.0`, as that formatter writes
//! them. `tests` compare both ways over every optional field present and absent, so a field
//! added to [`Point`] and not here fails them.

use serde_json::ser::{CompactFormatter, Formatter};

use super::{Point, Quota, QuotaWindow};

impl Point {
    /// Appends this point's JSON to `out`: the bytes `serde_json::to_writer(out, self)` gives.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":");
        int(out, self.timestamp);
        out.extend_from_slice(b",\"variant\":");
        string(out, &self.variant);
        opt(out, b",\"requests_2xx\":", self.requests_2xx);
        opt(out, b",\"requests_4xx\":", self.requests_4xx);
        opt(out, b",\"requests_5xx\":", self.requests_5xx);
        opt(out, b",\"tokens_input\":", self.tokens_input);
        opt(out, b",\"tokens_output\":", self.tokens_output);
        opt(out, b",\"tokens_cache_read\":", self.tokens_cache_read);
        opt(out, b",\"tokens_cache_write\":", self.tokens_cache_write);
        opt(out, b",\"estimated_cost_usd_input\":", self.estimated_cost_usd_input);
        opt(out, b",\"estimated_cost_usd_output\":", self.estimated_cost_usd_output);
        opt(out, b",\"estimated_cost_usd_cache_read\":", self.estimated_cost_usd_cache_read);
        opt(out, b",\"estimated_cost_usd_cache_write\":", self.estimated_cost_usd_cache_write);
        num(out, b",\"concurrent_requests\":", self.concurrent_requests);
        num(out, b",\"max_workers\":", self.max_workers);
        num(out, b",\"rate_limit_rps\":", self.rate_limit_rps);
        opt(out, b",\"rate_limit_rejections\":", self.rate_limit_rejections);
        opt(out, b",\"rate_limit_adj_increase\":", self.rate_limit_adj_increase);
        opt(out, b",\"rate_limit_adj_decrease\":", self.rate_limit_adj_decrease);
        opt(out, b",\"upstream_errors\":", self.upstream_errors);
        opt(out, b",\"retry_attempts\":", self.retry_attempts);
        opt(out, b",\"latency_p50\":", self.latency_p50);
        opt(out, b",\"latency_p95\":", self.latency_p95);
        opt(out, b",\"latency_p99\":", self.latency_p99);
        opt(out, b",\"request_size_avg\":", self.request_size_avg);
        opt(out, b",\"response_size_avg\":", self.response_size_avg);
        num(out, b",\"token_rate_in\":", self.token_rate_in);
        num(out, b",\"token_rate_out\":", self.token_rate_out);
        num(out, b",\"token_rate_cache_read\":", self.token_rate_cache_read);
        num(out, b",\"token_rate_cache_write\":", self.token_rate_cache_write);
        num(out, b",\"req_rate\":", self.req_rate);
        opt(out, b",\"error_rate_pct\":", self.error_rate_pct);
        num(out, b",\"worker_utilization\":", self.worker_utilization);
        if !self.status_code_rates.is_empty() {
            out.extend_from_slice(b",\"status_code_rates\":{");
            for (i, (code, rate)) in self.status_code_rates.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, code);
                num(out, b":", *rate);
            }
            out.push(b'}');
        }
        if let Some(q) = &self.quota {
            out.extend_from_slice(b",\"quota\":");
            quota(out, q);
        }
        num(out, b",\"requests\":", self.requests);
        num(out, b",\"cost_rate_usd\":", self.cost_rate_usd);
        num(out, b",\"rejection_rate\":", self.rejection_rate);
        num(out, b",\"retry_rate\":", self.retry_rate);
        num(out, b",\"upstream_error_rate\":", self.upstream_error_rate);
        opt(out, b",\"ttft_p50\":", self.ttft_p50);
        opt(out, b",\"ttft_p95\":", self.ttft_p95);
        opt(out, b",\"ttft_p99\":", self.ttft_p99);
        opt(out, b",\"tpot_p50\":", self.tpot_p50);
        opt(out, b",\"tpot_p95\":", self.tpot_p95);
        opt(out, b",\"tpot_p99\":", self.tpot_p99);
        out.extend_from_slice(b",\"pods\":");
        int(out, i64::from(self.pods));
        out.push(b'}');
    }
}

/// The quota block: every field is left out when absent, so the first one present opens it
/// without a comma.
fn quota(out: &mut Vec<u8>, q: &Quota) {
    let mut fields = Fields::open(out);
    if let Some(w) = &q.five_hour {
        fields.key(b"\"five_hour\":");
        window(fields.out, w);
    }
    if let Some(w) = &q.weekly {
        fields.key(b"\"weekly\":");
        window(fields.out, w);
    }
    if let Some(age) = q.sample_age_seconds {
        fields.key(b"\"sample_age_seconds\":");
        float(fields.out, age);
    }
    if let Some(open) = q.gate_open {
        fields.key(b"\"gate_open\":");
        boolean(fields.out, open);
    }
    if let Some(on) = q.enforcement {
        fields.key(b"\"enforcement\":");
        boolean(fields.out, on);
    }
    fields.close();
}

fn window(out: &mut Vec<u8>, w: &QuotaWindow) {
    let mut fields = Fields::open(out);
    if let Some(kind) = &w.limit_type {
        fields.key(b"\"limit_type\":");
        string(fields.out, kind);
    }
    for (key, value) in [
        (&b"\"usage_ratio\":"[..], w.usage_ratio),
        (b"\"remaining_ratio\":", w.remaining_ratio),
        (b"\"reset_time_unix\":", w.reset_time_unix),
    ] {
        if let Some(v) = value {
            fields.key(key);
            float(fields.out, v);
        }
    }
    fields.close();
}

/// An object whose fields may all be absent: a comma before every key but the first.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Fields<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &[u8]) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(key);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// `key` (with its leading comma and colon) and `v`, or `null`.
fn opt(out: &mut Vec<u8>, key: &[u8], v: Option<f64>) {
    out.extend_from_slice(key);
    match v {
        Some(v) => float(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn num(out: &mut Vec<u8>, key: &[u8], v: f64) {
    out.extend_from_slice(key);
    float(out, v);
}

/// As `serde_json` writes an `f64`: its formatter's digits, `null` for a non-finite value
/// (points never hold one, `point::bounded`; kept the same all the same).
fn float(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v.abs() < INTEGRAL_BELOW && !(v == 0.0 && v.is_sign_negative()) {
        // Counts, totals, limits and zeroes, most of a point's numbers: the formatter's digits
        // for a whole number below 1e15 are the integer's, then `.0`.
        int(out, v as i64);
        out.extend_from_slice(b".0");
    } else if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if CompactFormatter.write_f64(out, v).is_err() {
        unreachable!("writing into a Vec<u8> cannot fail");
    }
}

/// Whole numbers below this are written as integers with `.0` (`float`); `serde_json` writes
/// them so up to 1e16, where it turns to exponents.
const INTEGRAL_BELOW: f64 = 1e15;

fn int(out: &mut Vec<u8>, v: i64) {
    if CompactFormatter.write_i64(out, v).is_err() {
        unreachable!("writing into a Vec<u8> cannot fail");
    }
}

fn boolean(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// A string, escaped as `serde_json` escapes it (variant names and status labels come from the
/// targets).
fn string(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        unreachable!("a str always serializes into a Vec<u8>");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn written(p: &Point) -> String {
        let mut out = Vec::new();
        p.write_json(&mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    fn serde(p: &Point) -> String {
        serde_json::to_string(p).expect("a point serializes")
    }

    /// Every optional field present, with values that exercise the formatter: integers,
    /// fractions, tiny and huge magnitudes, negative zero.
    fn full(seed: f64) -> Point {
        let v = |k: f64| seed * k + k / 7.0;
        Point {
            timestamp: -1_700_000_000_123 + seed as i64,
            variant: "can\"ary\\\u{1}é".into(),
            requests_2xx: Some(v(1.0)),
            requests_4xx: Some(-0.0),
            requests_5xx: Some(1e15),
            tokens_input: Some(1e-300),
            tokens_output: Some(123_456_789.0),
            tokens_cache_read: Some(v(3.0)),
            tokens_cache_write: Some(0.1 + 0.2),
            estimated_cost_usd_input: Some(v(5.0)),
            estimated_cost_usd_output: Some(5e-7),
            estimated_cost_usd_cache_read: Some(v(0.5)),
            estimated_cost_usd_cache_write: Some(2.0),
            concurrent_requests: v(11.0),
            max_workers: 64.0,
            rate_limit_rps: 1e21,
            rate_limit_rejections: Some(v(13.0)),
            rate_limit_adj_increase: Some(1.0),
            rate_limit_adj_decrease: Some(v(17.0)),
            upstream_errors: Some(v(19.0)),
            retry_attempts: Some(v(23.0)),
            latency_p50: Some(v(29.0)),
            latency_p95: Some(v(31.0)),
            latency_p99: Some(v(37.0)),
            request_size_avg: Some(v(41.0)),
            response_size_avg: Some(v(43.0)),
            token_rate_in: v(47.0),
            token_rate_out: v(53.0),
            token_rate_cache_read: v(59.0),
            token_rate_cache_write: v(61.0),
            req_rate: v(67.0),
            error_rate_pct: Some(v(71.0)),
            worker_utilization: v(73.0),
            status_code_rates: BTreeMap::from([("200".into(), v(2.0)), ("50\"3".into(), 0.0), ("other".into(), 1e-9)]),
            quota: Some(Quota {
                five_hour: Some(QuotaWindow {
                    limit_type: Some("tokens_limit".into()),
                    usage_ratio: Some(v(0.01)),
                    remaining_ratio: Some(0.25),
                    reset_time_unix: Some(1_767_225_600.0),
                }),
                weekly: Some(QuotaWindow {
                    limit_type: Some("credit\n".into()),
                    usage_ratio: Some(1.0),
                    remaining_ratio: Some(0.0),
                    reset_time_unix: Some(v(1e9)),
                }),
                sample_age_seconds: Some(v(0.3)),
                gate_open: Some(true),
                enforcement: Some(false),
            }),
            requests: v(79.0),
            cost_rate_usd: v(83.0),
            rejection_rate: v(89.0),
            retry_rate: v(97.0),
            upstream_error_rate: v(101.0),
            ttft_p50: Some(v(103.0)),
            ttft_p95: Some(v(107.0)),
            ttft_p99: Some(v(109.0)),
            tpot_p50: Some(v(113.0)),
            tpot_p95: Some(v(127.0)),
            tpot_p99: Some(v(131.0)),
            pods: 3,
        }
    }

    #[test]
    fn every_field_present_is_written_as_serde_json_writes_it() {
        for seed in [0.0, 1.0, 0.123_456_789, 98_765.432_1, -3.5, 1e-12] {
            let p = full(seed);
            assert_eq!(written(&p), serde(&p), "seed {seed}");
        }
    }

    #[test]
    fn every_field_absent_is_written_as_serde_json_writes_it() {
        assert_eq!(written(&Point::default()), serde(&Point::default()));
        let p = Point { quota: Some(Quota::default()), ..Point::default() };
        assert_eq!(written(&p), serde(&p), "an empty quota block");
    }

    /// Each optional part of the full point left out alone: a comma or a key out of place
    /// shows here, whichever field it follows.
    #[test]
    fn each_optional_field_left_out_alone_is_written_as_serde_json_writes_it() {
        let base = full(2.5);
        let mut cases: Vec<(&str, Point)> = Vec::new();
        macro_rules! without {
            ($($field:ident),*) => {$(
                cases.push((stringify!($field), Point { $field: None, ..base.clone() }));
            )*};
        }
        without!(
            requests_2xx,
            requests_4xx,
            requests_5xx,
            tokens_input,
            tokens_output,
            tokens_cache_read,
            tokens_cache_write,
            estimated_cost_usd_input,
            estimated_cost_usd_output,
            estimated_cost_usd_cache_read,
            estimated_cost_usd_cache_write,
            rate_limit_rejections,
            rate_limit_adj_increase,
            rate_limit_adj_decrease,
            upstream_errors,
            retry_attempts,
            latency_p50,
            latency_p95,
            latency_p99,
            request_size_avg,
            response_size_avg,
            error_rate_pct,
            quota,
            ttft_p50,
            ttft_p95,
            ttft_p99,
            tpot_p50,
            tpot_p95,
            tpot_p99
        );
        cases.push(("status_code_rates", Point { status_code_rates: BTreeMap::new(), ..base.clone() }));
        let quota = base.quota.clone().unwrap_or_default();
        let with_quota = |q: Quota| Point { quota: Some(q), ..base.clone() };
        cases.push(("five_hour", with_quota(Quota { five_hour: None, ..quota.clone() })));
        cases.push(("weekly", with_quota(Quota { weekly: None, ..quota.clone() })));
        cases.push(("sample_age_seconds", with_quota(Quota { sample_age_seconds: None, ..quota.clone() })));
        cases.push(("gate_open", with_quota(Quota { gate_open: None, ..quota.clone() })));
        cases.push(("enforcement", with_quota(Quota { enforcement: None, ..quota.clone() })));
        let window = quota.five_hour.clone().unwrap_or_default();
        let with_window = |w: QuotaWindow| with_quota(Quota { five_hour: Some(w), ..quota.clone() });
        cases.push(("limit_type", with_window(QuotaWindow { limit_type: None, ..window.clone() })));
        cases.push(("usage_ratio", with_window(QuotaWindow { usage_ratio: None, ..window.clone() })));
        cases.push(("remaining_ratio", with_window(QuotaWindow { remaining_ratio: None, ..window.clone() })));
        cases.push(("reset_time_unix", with_window(QuotaWindow { reset_time_unix: None, ..window.clone() })));
        cases.push((
            "only reset_time_unix",
            with_window(QuotaWindow { reset_time_unix: Some(1.5), ..Default::default() }),
        ));
        cases.push(("only enforcement", with_quota(Quota { enforcement: Some(true), ..Quota::default() })));
        for (left_out, p) in cases {
            assert_eq!(written(&p), serde(&p), "without {left_out}");
        }
    }

    /// The whole-number shortcut (`float`) against the formatter, around its edges.
    #[test]
    fn whole_numbers_are_written_as_serde_json_writes_them() {
        let mut values = vec![0.0, -0.0, 1.0, -1.0, 1e15, -1e15, 1e15 - 1.0, 1e16, 2f64.powi(53), 0.5, -0.5];
        values.extend((0..2_000).map(f64::from));
        values.extend((0..16).flat_map(|e| [10f64.powi(e), 10f64.powi(e) - 1.0, -(10f64.powi(e) + 1.0)]));
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x % 2_000_000_000_000_000) as f64 - 1e15);
        }
        for v in values {
            let mut out = Vec::new();
            float(&mut out, v);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), serde_json::to_string(&v).expect("a number"), "{v}");
        }
    }

    #[test]
    fn non_finite_numbers_are_null_as_in_serde_json() {
        let p = Point { req_rate: f64::NAN, latency_p50: Some(f64::INFINITY), ..full(1.0) };
        assert_eq!(written(&p), serde(&p));
    }
}
