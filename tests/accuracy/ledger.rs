//! Every comparison the suite makes, kept (not asserted one by one), so a run shows the whole
//! picture: a table of what was compared and passed, and each failure with both values, the
//! allowance and the review finding it maps to.

use std::collections::BTreeMap;
use std::fmt::Write;

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
    /// Review finding (1-5) whose regression this check catches, if any; 8 marks decisions
    /// section 8's "same sum order everywhere, so REST and SSE agree to the bit".
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
}

/// Context shared by the checks of one bucket.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub finding: Option<u8>,
    pub area: String,
    pub scenario: String,
    pub at: String,
}

/// How a failure is labelled.
pub fn tag(finding: Option<u8>) -> String {
    match finding {
        None => "[steady-state accuracy]".into(),
        Some(8) => "[decisions §8: REST = live to the bit]".into(),
        Some(f) => format!("[finding {f}]"),
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |x| format!("{x:.6}"))
}

impl Ledger {
    /// One value against a reference: `|a - b| <= tol(b) + spread`.
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
        let (ok, allowed) = match (dash, reference) {
            (None, None) => (true, 0.0),
            (Some(d), Some(r)) if d.is_finite() && r.is_finite() => {
                let allowed = tol.of(r) + spread + 1e-9 * r.abs().max(1.0);
                ((d - r).abs() <= allowed, allowed)
            }
            _ => (false, spread),
        };
        let detail = format!(
            "{a_name} {} vs {what} {} (allowed ±{allowed:.6}, of which {spread:.6} is the explained difference)",
            fmt(dash),
            fmt(reference)
        );
        self.push(ctx, group, field, ok, detail);
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
            let tag = tag(c.finding);
            let _ = writeln!(out, "{tag} {} | {} | {} | {} | {}", c.area, c.scenario, c.field, c.at, c.detail);
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
        out
    }
}
