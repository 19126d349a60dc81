//! Compact binary encoding of a row's payload (increases, totals, gauges).
//!
//! Rows are small and mostly zeros or small integers, so numbers are tagged: zero costs one
//! byte, an integer or a value with at most three decimals costs a byte plus a varint, anything
//! else nine bytes. Histogram buckets are stored as per-bucket increments (mostly zero) and
//! summed back to cumulative counts on decode. This keeps a target-day at 5 s in the low
//! megabytes (see BENCHMARKS.md) where the Go dashboard's JSON blobs took 40-60 MB. The first
//! byte is a format version, so a later format can be read side by side.

use std::collections::BTreeMap;

use crate::point::{Counts, GaugeStat, Gauges, Histogram, Quota, QuotaWindow, SumCount, Totals};

const VERSION: u8 = 1;
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// A payload that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt row payload: {0}")]
pub struct CodecError(&'static str);

/// Encodes the payload of a row.
pub fn encode(counts: &Counts, totals: &Totals, gauges: &Gauges) -> Vec<u8> {
    let mut w = Enc(Vec::with_capacity(128));
    w.0.push(VERSION);
    w.counts(counts);
    w.totals(totals);
    for g in [&gauges.concurrent, &gauges.max_workers, &gauges.rate_limit_rps] {
        w.gauge(g);
    }
    w.quota(gauges.quota.as_ref());
    w.0
}

/// Decodes a payload written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<(Counts, Totals, Gauges), CodecError> {
    let mut r = Dec(bytes);
    if r.u8()? != VERSION {
        return Err(CodecError("unknown format version"));
    }
    let counts = r.counts()?;
    let totals = r.totals()?;
    let gauges =
        Gauges { concurrent: r.gauge()?, max_workers: r.gauge()?, rate_limit_rps: r.gauge()?, quota: r.quota()? };
    Ok((counts, totals, gauges))
}

struct Enc(Vec<u8>);

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
        } else {
            self.0.push(3);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn map<V>(&mut self, m: &BTreeMap<String, V>, mut put: impl FnMut(&mut Self, &V)) {
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

    fn hist(&mut self, h: &Histogram) {
        if h.is_empty() {
            self.varint(0);
            return;
        }
        self.varint(h.buckets.len() as u64);
        let mut below = 0.0;
        for &(le, c) in &h.buckets {
            self.num(le);
            self.num(c - below);
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
            Some(t) => {
                self.0.push(1);
                self.str(t);
            }
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

/// `v` as an exact count of thousandths, when that round-trips bit for bit.
fn as_millis(v: f64) -> Option<u64> {
    let m = (v * 1000.0).round();
    (v > 0.0 && m < MAX_EXACT && m / 1000.0 == v).then_some(m as u64)
}

struct Dec<'a>(&'a [u8]);

const TRUNCATED: CodecError = CodecError("truncated");

impl Dec<'_> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.0.split_first().ok_or(TRUNCATED)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
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

    fn str(&mut self) -> Result<String, CodecError> {
        let n = self.len()?;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| CodecError("label is not UTF-8"))
    }

    fn map<V>(
        &mut self,
        mut get: impl FnMut(&mut Self) -> Result<V, CodecError>,
    ) -> Result<BTreeMap<String, V>, CodecError> {
        let n = self.len()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            m.insert(k, get(self)?);
        }
        Ok(m)
    }

    fn hist(&mut self) -> Result<Histogram, CodecError> {
        let n = self.len()?;
        if n == 0 {
            return Ok(Histogram::default());
        }
        let mut buckets = Vec::with_capacity(n);
        let mut cum = 0.0;
        for _ in 0..n {
            let le = self.num()?;
            cum += self.num()?;
            buckets.push((le, cum));
        }
        Ok(Histogram { buckets, sum: self.num()?, count: self.num()? })
    }

    fn counts(&mut self) -> Result<Counts, CodecError> {
        let requests = self.map(Self::num)?;
        let tokens = self.map(Self::nums::<4>)?;
        let cost = self.map(Self::nums::<4>)?;
        let upstream_errors = self.map(Self::num)?;
        let retries = self.map(Self::num)?;
        let rejections = self.num()?;
        let adjustments = self.nums::<3>()?;
        let [rs, rc, ps, pc] = self.nums::<4>()?;
        Ok(Counts {
            requests,
            tokens,
            cost,
            upstream_errors,
            retries,
            rejections,
            adjustments,
            request_size: SumCount { sum: rs, count: rc },
            response_size: SumCount { sum: ps, count: pc },
            duration: self.hist()?,
            ttft: self.hist()?,
            tpot: self.hist()?,
        })
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
            _ => Some(self.str()?),
        };
        Ok(Some(QuotaWindow {
            limit_type,
            usage_ratio: self.opt_num()?,
            remaining_ratio: self.opt_num()?,
            reset_time_unix: self.opt_num()?,
        }))
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
mod tests {
    use super::*;
    use crate::scrape::{increase::TargetState, parse::parse, reading::read};

    const SAMPLE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");

    fn fixture_row() -> (Counts, Totals, Gauges) {
        // A reset from nothing makes every fixture value an increase: the busiest possible row.
        let mut st = TargetState { last_scrape_ms: Some(0), ..TargetState::default() };
        let row = st.advance(&read(&parse(SAMPLE).unwrap()), 5_000, 1, "production");
        (row.counts, row.totals, row.gauges)
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
    fn an_idle_row_is_small() {
        let (_, t, mut g) = fixture_row();
        g.quota = None;
        let bytes = encode(&Counts::default(), &t, &g);
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (c, t, g) = fixture_row();
        let bytes = encode(&c, &t, &g);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        assert!(decode(&[9, 9, 9]).is_err());
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode(&flipped);
            flipped[i] ^= 0x5a;
        }
    }
}
