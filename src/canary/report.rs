//! The JSON shape of a judgement, with each row's one-line `reason` and `needed_requests`
//! computed here, at serialization, so judging stays free of string formatting.

use std::fmt::Write;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::judge::{Classification, Judgement, METHOD, MIN_TICKS_FOR_AMOUNTS, Row, Why};
use super::spec::{Allowed, Worse};
use super::verdict::Verdict;

/// A number with about four significant digits, no exponent for everyday sizes.
fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// A signed number (`+0.26`, `-1.3`).
fn signed(v: f64) -> String {
    if v >= 0.0 { format!("+{}", num(v)) } else { num(v) }
}

impl Row {
    /// The allowed degradation as written in a reason (`+1 point`, `+50 %`, `±20 %`).
    fn allowed_text(&self) -> String {
        let sign = match self.worse {
            Worse::Higher => "+",
            Worse::Lower => "-",
            Worse::Either => "±",
        };
        match self.allowed {
            Allowed::Absolute(v) if self.metric.is_share() => {
                format!("{sign}{v} point{}", if v == 1.0 { "" } else { "s" })
            }
            Allowed::Absolute(v) => format!("{sign}{v} {}", self.metric.unit()),
            Allowed::Relative(pct) => format!("{sign}{pct} %"),
        }
    }

    /// `2.31 % (231 of 10000)` or `412.3 tokens/request (n = 10000)`.
    fn side_text(&self, s: usize) -> String {
        let value = if s == 0 { self.baseline } else { self.candidate };
        let Some(v) = value else { return format!("no data (n = {})", num(self.n[s])) };
        if self.metric.is_share() {
            format!("{} % ({} of {})", num(v), num(self.y[s]), num(self.n[s]))
        } else {
            format!("{} {} (n = {})", num(v), self.metric.unit(), num(self.n[s]))
        }
    }

    /// The row's one-line reason: both values with their sample sizes, the estimate with its
    /// sequence, and what decided the row.
    pub(crate) fn reason(&self) -> String {
        let mut out = self.metric.label().to_owned();
        if let Some(b) = self.bound_ms {
            let _ = write!(out, " (above {} ms)", num(b));
        }
        let _ = write!(out, ": candidate {} vs baseline {}", self.side_text(1), self.side_text(0));
        if let (Some(d), Some([lo, hi])) = (self.delta, self.delta_ci) {
            let unit = self.delta_unit();
            // One-way metrics: each end is a one-sided bound at the level (the ends decide).
            let ends = if self.worse == Worse::Either { "" } else { "each end " };
            let _ = write!(
                out,
                "; change {}{unit}, sequence [{}, {}]{unit}, {ends}at level {}",
                signed(d),
                signed(lo),
                signed(hi),
                num(self.level)
            );
        }
        let _ = write!(out, ": {}", self.verdict_text());
        out
    }

    /// What the decision clause says.
    fn verdict_text(&self) -> String {
        let allowed = self.allowed_text();
        match self.why {
            Why::NoData => "no data on a side (no requests, or the family is not exported)".to_owned(),
            Why::Untested => {
                "not tested: no data on both sides when testing began (a family not exported), so no share of alpha"
                    .to_owned()
            }
            Why::TooFewRequests => "fewer than the minimum requests on a side".to_owned(),
            Why::TooFewTicks => format!("fewer than {MIN_TICKS_FOR_AMOUNTS} ticks with both sides"),
            Why::NoRatio => "recorded on one side only, so there is no ratio".to_owned(),
            Why::Within => format!("within the allowed {allowed}"),
            Why::Beyond => format!("beyond the allowed {allowed}"),
            Why::AboveCeiling => {
                let [lo, hi] = self.ceiling_ci.unwrap_or([f64::NAN; 2]);
                format!(
                    "the candidate's share, sequence [{}, {}] %, is above the {} % ceiling",
                    num(lo),
                    num(hi),
                    self.ceiling.unwrap_or(f64::NAN)
                )
            }
            Why::Significant => {
                let side = if self.classification == Classification::Low { "lower" } else { "higher" };
                format!("significantly {side} (p = {}, Holm), not yet beyond the allowed {allowed}", num(self.p_value))
            }
            Why::Open => format!("not decided yet against the allowed {allowed}"),
        }
    }

    /// Unit of `delta` and `delta_ci`: points for shares with absolute margins, percent for
    /// relative ones, else the metric's unit.
    pub(crate) fn delta_unit(&self) -> &'static str {
        match self.allowed {
            Allowed::Relative(_) => " %",
            Allowed::Absolute(_) if self.metric.is_share() => " points",
            Allowed::Absolute(_) => match self.metric.unit() {
                "tokens/request" => " tokens/request",
                "USD/request" => " USD/request",
                "retries/request" => " retries/request",
                _ => " errors/request",
            },
        }
    }

    /// Candidate requests until the row decides, `None` once decided.
    pub(crate) fn needed_requests(&self) -> Option<f64> {
        self.need.and_then(|n| n.requests())
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Row", 17)?;
        st.serialize_field("metric", &self.metric)?;
        st.serialize_field("label", self.metric.label())?;
        st.serialize_field("unit", self.metric.unit())?;
        st.serialize_field("baseline", &self.baseline)?;
        st.serialize_field("candidate", &self.candidate)?;
        st.serialize_field("delta", &self.delta)?;
        st.serialize_field("delta_unit", self.delta_unit().trim())?;
        st.serialize_field("delta_ci", &self.delta_ci)?;
        st.serialize_field("classification", &self.classification)?;
        st.serialize_field("verdict", &self.verdict)?;
        st.serialize_field("reason", &self.reason())?;
        st.serialize_field("needed_requests", &self.needed_requests())?;
        st.serialize_field("critical", &self.critical)?;
        st.serialize_field("weight", &self.weight)?;
        st.serialize_field("level", &self.level)?;
        st.serialize_field("p_value", &self.p_value)?;
        st.serialize_field("bound_ms", &self.bound_ms)?;
        st.end()
    }
}

impl Judgement {
    /// One line per metric that warns or fails, then per critical metric not yet passed; or
    /// one line saying everything passed.
    pub(crate) fn reasons(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Warn | Verdict::Fail))
            .chain(self.rows.iter().filter(|r| r.critical && r.verdict == Verdict::InsufficientData))
            .map(Row::reason)
            .collect();
        if out.is_empty() {
            let score = self.score.map_or_else(|| "none".to_owned(), num);
            out.push(format!("every critical metric passes; score {score}"));
        }
        out
    }
}

impl Serialize for Judgement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Judgement", 9)?;
        st.serialize_field("verdict", &self.verdict)?;
        st.serialize_field("score", &self.score)?;
        st.serialize_field("reasons", &self.reasons())?;
        st.serialize_field("method", METHOD)?;
        st.serialize_field("alpha", &self.alpha)?;
        st.serialize_field("level", &self.level)?;
        st.serialize_field("hypotheses", &self.hypotheses)?;
        st.serialize_field("min_requests", &self.min_requests)?;
        st.serialize_field("metrics", &self.rows)?;
        st.end()
    }
}
