//! Every comparison the suite makes, kept (not asserted one by one), so a run shows the whole
//! picture: a table of what was compared and passed, and each failure with both values, the
//! allowance and the review finding it maps to.
//!
//! Nothing passes for want of a value: [`Ledger::num`] fails when either side is missing or
//! not finite, and a value the model says must be absent is checked with [`Ledger::absent`]
//! (both sides without a value; a NaN from PromQL, such as the quantile of an empty bucket,
//! counts as no value there and only there). The explained spread a comparison allows must be
//! finite and at most [`MAX_EXPLAINED`] of the reference: a model that cannot bound a
//! difference fails the check instead of allowing anything. And each kind of check must run at
//! least as often as the run's length says it should ([`Ledger::require`]): a reader or a
//! verifier that stopped early shows up as too few checks, not as a pass.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The largest explained spread a comparison may allow, as a share of the reference value.
/// A pod entering or leaving a 2 s bucket is the widest legitimate case (its traffic over up to
/// two scrape intervals, per edge); a bug that doubles, halves or drops a pod is not explained.
pub const MAX_EXPLAINED: f64 = 0.5;

/// How far two numbers may be apart besides the explained spread.
#[derive(Debug, Clone, Copy)]
pub enum Tol {
    /// Relative to the reference value.
    Rel(f64),
    /// Absolute (percentage points of an error share).
    Abs(f64),
}

impl Tol {
    pub fn of(self, reference: f64) -> f64 {
        match self {
            Tol::Rel(r) => r * reference.abs(),
            Tol::Abs(a) => a,
        }
    }
}

/// One comparison.
#[derive(Debug, Clone)]
pub struct Check {
    /// Review finding (1-5) whose regression this check catches, if any; 8 marks the "one sum
    /// order, so REST and the live stream agree to the bit" of docs/decisions.md, Point semantics.
    pub finding: Option<u8>,
    /// Where: resolution or endpoint (`5s table (2 s)`, `rollup (20 s)`, `/api/compare`, ...).
    pub area: String,
    /// Which part of the run: `steady`, `churn`, `death`, `reset`, `first sight`, ...
    pub scenario: String,
    /// Field group for the summary (`rates`, `quantiles`, ...).
    pub group: String,
    pub field: String,
    /// Variant, bucket and other details of this comparison.
    pub at: String,
    pub ok: bool,
    pub detail: String,
}

/// All checks of a run.
#[derive(Default)]
pub struct Ledger {
    pub checks: Vec<Check>,
    /// How many checks of each kind the run must have made.
    minimums: Vec<Minimum>,
    /// Largest explained spread allowed per area, as a share of the reference.
    widest: BTreeMap<String, f64>,
}

/// At least `min` checks whose area starts with `kind`, derived from `why`.
#[derive(Debug, Clone)]
pub struct Minimum {
    pub kind: String,
    pub min: usize,
    pub why: String,
}

/// Context shared by the checks of one bucket.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub finding: Option<u8>,
    pub area: String,
    pub scenario: String,
    pub at: String,
}

impl Check {
    /// The check as one line of the report: its tag, where, what and why.
    pub fn line(&self) -> String {
        format!(
            "{} {} | {} | {} | {} | {}",
            tag(self.finding),
            self.area,
            self.scenario,
            self.field,
            self.at,
            self.detail
        )
    }
}

/// How a failure is labelled.
pub fn tag(finding: Option<u8>) -> String {
    match finding {
        None => "[steady-state accuracy]".into(),
        Some(8) => "[point semantics: REST = live to the bit]".into(),
        Some(f) => format!("[finding {f}]"),
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |x| format!("{x:.6}"))
}

impl Ledger {
    /// One value against a reference: `|a - b| <= tol(b) + spread`. Both must be there and
    /// finite, and `spread` finite and at most [`MAX_EXPLAINED`] of the reference.
    #[allow(clippy::too_many_arguments)]
    pub fn num(
        &mut self,
        ctx: &Ctx,
        group: &str,
        field: &str,
        a: (&str, Option<f64>),
        b: (&str, Option<f64>),
        tol: Tol,
        spread: f64,
    ) {
        let ((a_name, dash), (what, reference)) = (a, b);
        let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
        let (ok, allowed, why) = match (finite(dash), finite(reference)) {
            (Some(d), Some(r)) => {
                let cap = MAX_EXPLAINED * r.abs() + 1e-9;
                if !(spread.is_finite() && spread <= cap) {
                    (false, spread, format!(": the explained spread is unbounded (more than {cap:.6})"))
                } else {
                    if r.abs() > 1e-9 {
                        let w = self.widest.entry(ctx.area.clone()).or_default();
                        *w = w.max(spread / r.abs());
                    }
                    let allowed = tol.of(r) + spread + 1e-9 * r.abs().max(1.0);
                    ((d - r).abs() <= allowed, allowed, String::new())
                }
            }
            _ => (false, spread, ": a value is missing or not finite where the model expects one".to_owned()),
        };
        let detail = format!(
            "{a_name} {} vs {what} {} (allowed ±{allowed:.6}, of which {spread:.6} is the explained difference){why}",
            fmt(dash),
            fmt(reference)
        );
        self.push(ctx, group, field, ok, detail);
    }

    /// A value the model says must be absent (a status code no pod of the variant exports, the
    /// latency of a bucket without requests): neither side may have one. PromQL's NaN (`0/0`) is
    /// no value here.
    pub fn absent(&mut self, ctx: &Ctx, group: &str, field: &str, a: (&str, Option<f64>), b: (&str, Option<f64>)) {
        let none = |v: Option<f64>| v.is_none_or(f64::is_nan);
        let ok = none(a.1) && none(b.1);
        let detail = format!("{} {} vs {} {} (the model says no value)", a.0, fmt(a.1), b.0, fmt(b.1));
        self.push(ctx, group, field, ok, detail);
    }

    /// [`Self::num`] where the model has a value, [`Self::absent`] where it says there is none.
    #[allow(clippy::too_many_arguments)]
    pub fn expect(
        &mut self,
        ctx: &Ctx,
        group: &str,
        field: &str,
        model_has_value: bool,
        a: (&str, Option<f64>),
        b: (&str, Option<f64>),
        tol: Tol,
        spread: f64,
    ) {
        if model_has_value {
            self.num(ctx, group, field, a, b, tol, spread);
        } else {
            self.absent(ctx, group, field, a, b);
        }
    }

    /// A yes/no fact.
    pub fn fact(&mut self, ctx: &Ctx, group: &str, field: &str, ok: bool, detail: String) {
        self.push(ctx, group, field, ok, detail);
    }

    fn push(&mut self, ctx: &Ctx, group: &str, field: &str, ok: bool, detail: String) {
        self.checks.push(Check {
            finding: ctx.finding,
            area: ctx.area.clone(),
            scenario: ctx.scenario.clone(),
            group: group.to_owned(),
            field: field.to_owned(),
            at: ctx.at.clone(),
            ok,
            detail,
        });
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// The run must make at least `min` checks whose area starts with `kind` (`why`: how the
    /// minimum follows from the run).
    pub fn require(&mut self, kind: &str, min: usize, why: String) {
        self.minimums.push(Minimum { kind: kind.to_owned(), min, why });
    }

    /// Checks every [`Self::require`]: a kind with fewer checks than its minimum is a failure of
    /// the harness. Returns the table of counts.
    pub fn check_minimums(&mut self) -> String {
        let mut out = String::from("\n=== checks per kind (minimum from the run length) ===\n");
        let minimums = std::mem::take(&mut self.minimums);
        for m in &minimums {
            let n = self.checks.iter().filter(|c| c.area.starts_with(&m.kind)).count();
            let _ = writeln!(out, "{:<52} {n:>7} checks, minimum {:>7} ({})", m.kind, m.min, m.why);
            let ctx = Ctx {
                finding: None,
                area: "harness: checks per kind".into(),
                scenario: "-".into(),
                at: m.kind.clone(),
            };
            self.fact(
                &ctx,
                "count",
                "checks",
                n >= m.min,
                format!("{n} checks, at least {} expected ({})", m.min, m.why),
            );
        }
        self.minimums = minimums;
        out
    }

    /// The summary: per area and scenario, each field group's passed/total; then the failures,
    /// at most `per_key` per (finding, area, scenario, field).
    pub fn report(&self, per_key: usize) -> String {
        let mut table: BTreeMap<(String, String), BTreeMap<String, (usize, usize)>> = BTreeMap::new();
        for c in &self.checks {
            let e = table.entry((c.area.clone(), c.scenario.clone())).or_default().entry(c.group.clone()).or_default();
            e.1 += 1;
            if c.ok {
                e.0 += 1;
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n=== accuracy summary: {} checks, {} failed ===",
            self.checks.len(),
            self.failures().count()
        );
        for ((area, scenario), groups) in &table {
            let cells: Vec<String> = groups
                .iter()
                .map(|(g, (ok, n))| if ok == n { format!("{g} ok {n}") } else { format!("{g} FAIL {}/{n}", n - ok) })
                .collect();
            let _ = writeln!(out, "{area:<28} {scenario:<22} {}", cells.join(", "));
        }
        let mut shown: BTreeMap<(Option<u8>, String, String, String), usize> = BTreeMap::new();
        let mut hidden = 0;
        for c in self.failures() {
            let n = shown.entry((c.finding, c.area.clone(), c.scenario.clone(), c.field.clone())).or_default();
            *n += 1;
            if *n > per_key {
                hidden += 1;
                continue;
            }
            let _ = writeln!(out, "{}", c.line());
        }
        if hidden > 0 {
            let _ = writeln!(out, "... and {hidden} more failures of the same kinds");
        }
        let mut by_finding: BTreeMap<Option<u8>, usize> = BTreeMap::new();
        for c in self.failures() {
            *by_finding.entry(c.finding).or_default() += 1;
        }
        for (f, n) in by_finding {
            let _ = writeln!(out, "failures {}: {n}", tag(f));
        }
        let _ = writeln!(
            out,
            "widest explained spread allowed, as a share of the reference (bound {:.0} %):",
            MAX_EXPLAINED * 100.0
        );
        for (area, share) in self.widest.iter().filter(|(_, share)| **share > 0.0) {
            let _ = writeln!(out, "  {area:<60} {:>5.1} %", share * 100.0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx { finding: None, area: "test".into(), scenario: "-".into(), at: "-".into() }
    }

    fn num(a: Option<f64>, b: Option<f64>, spread: f64) -> bool {
        let mut l = Ledger::default();
        l.num(&ctx(), "g", "f", ("a", a), ("b", b), Tol::Rel(0.01), spread);
        l.checks[0].ok
    }

    fn absent(a: Option<f64>, b: Option<f64>) -> bool {
        let mut l = Ledger::default();
        l.absent(&ctx(), "g", "f", ("a", a), ("b", b));
        l.checks[0].ok
    }

    #[test]
    fn a_value_missing_on_either_side_fails_where_the_model_expects_one() {
        assert!(num(Some(100.0), Some(100.5), 0.0));
        assert!(!num(None, None, 0.0), "both sides silent is no pass");
        assert!(!num(Some(1.0), None, 0.0));
        assert!(!num(None, Some(1.0), 0.0));
        assert!(!num(Some(100.0), Some(102.0), 0.0));
    }

    #[test]
    fn non_finite_values_are_compared_not_dropped() {
        assert!(!num(Some(1.0), Some(f64::NAN), 0.0));
        assert!(!num(None, Some(f64::NAN), 0.0), "NaN for null only where the model says empty");
        assert!(!num(Some(1.0), Some(f64::INFINITY), 0.0));
        assert!(absent(None, Some(f64::NAN)), "PromQL's 0/0 is no value in an empty bucket");
        assert!(absent(None, None));
        assert!(!absent(Some(0.0), None), "a value where the model says none");
        assert!(!absent(None, Some(0.0)));
        assert!(!absent(None, Some(f64::INFINITY)));
    }

    #[test]
    fn an_unbounded_explained_spread_fails() {
        assert!(num(Some(140.0), Some(100.0), 40.0));
        assert!(!num(Some(100.0), Some(100.0), f64::INFINITY));
        assert!(!num(Some(100.0), Some(100.0), f64::NAN));
        assert!(!num(Some(100.0), Some(100.0), MAX_EXPLAINED * 100.0 + 1.0), "more than the bound");
    }

    #[test]
    fn too_few_checks_of_a_kind_fail() {
        let mut l = Ledger::default();
        l.fact(&ctx(), "g", "f", true, String::new());
        l.require("test", 2, "two expected".into());
        l.require("te", 1, "one expected".into());
        l.check_minimums();
        let counts: Vec<bool> = l.checks.iter().filter(|c| c.area.contains("checks per kind")).map(|c| c.ok).collect();
        assert_eq!(counts, [false, true]);
    }
}
