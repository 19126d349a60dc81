//! Spend at each evaluation: today's and this month's cost per variant and model, their
//! projections ([`spend::forecast`]) and the budgets' alerts.
//!
//! The costs come from window sums of the read contract (the store answers windows over a day
//! from its 10-minute rows): one read per stretch between the month's start, the day's start
//! and the start of the trailing 24 h the projection's rate is measured over. Each stretch of
//! each variant and model is one bucket of [`spend::forecast`], as wide as the variant's data
//! in it, so the forecast sees what the rows would have told it. Spend moves slowly: it is read
//! again once a minute (every tick while the month's data covers less than an hour).
//!
//! A source whose windows add up bucket by bucket (the store, which says so by giving a
//! generation) is not re-read whole at every refresh: a month's stretch was every 1 min row of
//! every target since the month began, once a minute (BENCHMARKS.md, issue 22: 109 ms per
//! refresh for 20 pods and 6 days of data). [`Kept`] keeps 10-minute buckets of the last day
//! and one sum of the month before them, reads each settled bucket once, and of what is newer
//! keeps the settled ticks too, reading only the seconds after them ([`Fresh`]); the
//! projection's rate window then starts at the 10-minute boundary at or before 24 h ago. A late row (the generation moves) or a new month starts it over. Sums are those of
//! a whole read; while the data's first day is in the rate window, where the data starts is
//! known to the width of the row that answered its bucket first (a minute at most).
//!
//! [`spend::forecast`]: crate::budget::spend::forecast

use std::collections::BTreeMap;

use super::metric::Metric;
use super::rules::{Expr, Op, Rule, Scope};
use crate::budget::spend::{Budgets, CostBucket, CostSeries, DEFAULT_RATE_WINDOW_MS, Periods, SpendReport, forecast};
use crate::ports::read::{DataSource, SourceError, WindowQuery};

/// The `variant` label of budget alerts: a budget is the whole account's.
pub const BUDGET_VARIANT: &str = "all";
/// Longest time a spend report is reused.
const REUSE_MS: i64 = 60_000;
/// The marks alerted on, percent of a budget.
const LEVELS: [f64; 3] = [80.0, 95.0, 100.0];

/// What the engine keeps between evaluations for spend.
#[derive(Debug, Default)]
pub struct Costs {
    budgets: Budgets,
    /// When read, how long the month's data covers, and the report.
    last: Option<(i64, i64, SpendReport)>,
    /// Settled buckets, for a source whose windows add up.
    kept: Kept,
}

impl Costs {
    /// Spend against `budgets`.
    pub fn new(budgets: Budgets) -> Self {
        Self { budgets, last: None, kept: Kept::default() }
    }

    /// The report at `now_ms` (reused while fresh); the last one, if any, when a read fails.
    pub async fn evaluate(&mut self, source: &dyn DataSource, now_ms: i64) -> Result<SpendReport, SourceError> {
        if let Some((at, covered, report)) = &self.last
            && now_ms - at < REUSE_MS.min(covered / 60)
        {
            return Ok(report.clone());
        }
        let kept = match source.strata_generation() {
            Some(generation) => self.kept.read(source, generation, now_ms).await?,
            None => None,
        };
        let (series, covered, rate_window_ms) = match kept {
            Some((series, covered)) => (series, covered, now_ms - Kept::rate_from(now_ms)),
            None => {
                let (series, covered) = read_costs(source, now_ms, now_ms - DEFAULT_RATE_WINDOW_MS).await?;
                (series, covered, DEFAULT_RATE_WINDOW_MS)
            }
        };
        let report = forecast(&series, now_ms, &self.budgets, rate_window_ms);
        self.last = Some((now_ms, covered, report.clone()));
        Ok(report)
    }
}

/// Each variant's and model's cost buckets, and how long the month's data covers; the rate
/// window starts at `rate_from`.
async fn read_costs(
    source: &dyn DataSource,
    now_ms: i64,
    rate_from: i64,
) -> Result<(Vec<CostSeries>, i64), SourceError> {
    let p = Periods::at(now_ms);
    let mut edges = vec![p.month_start, p.day_start, rate_from, now_ms];
    edges.sort_unstable();
    edges.dedup();
    let mut series: BTreeMap<(String, String), Vec<CostBucket>> = BTreeMap::new();
    let mut covered = 0;
    for pair in edges.windows(2) {
        let (start_ms, end_ms) = (pair[0], pair[1]);
        let sums = source.window(WindowQuery { start_ms, end_ms, target_url: None }).await?;
        for (variant, s) in sums {
            let from = s.data_from_ms.max(start_ms);
            covered = covered.max(now_ms - from);
            for (model, usd) in &s.counts.cost {
                let bucket = CostBucket { end_ms, width_ms: end_ms - from, usd: usd.iter().sum() };
                series.entry((variant.clone(), model.to_string())).or_default().push(bucket);
            }
        }
    }
    let series = series.into_iter().map(|((variant, model), buckets)| CostSeries { variant, model, buckets }).collect();
    Ok((series, covered))
}

/// Width of a kept bucket: day and month starts are whole multiples of it.
const BUCKET_MS: i64 = 600_000;
/// Buckets read at most per refresh while filling.
const FILL_PER_REFRESH: usize = 12;
/// Buckets ending this long before a refresh are settled (as the rules' windows').
const SETTLED_MS: i64 = super::windows::SETTLED_MS;

/// Cost sums per variant and model, with where each variant's data starts.
type Sums = BTreeMap<(String, String), (f64, i64)>;

/// The month's spend kept between refreshes: one sum from the month's start up to the rate
/// window's start, then a bucket per [`BUCKET_MS`] up to the last settled one.
#[derive(Debug, Default)]
struct Kept {
    /// The source's generation and month start the buckets were read at.
    read_at: Option<(u64, i64)>,
    /// Sums over `(month_start, base_until]`.
    base: Sums,
    base_until: i64,
    /// Whether `base` was read (once every bucket since `first` was).
    base_read: bool,
    /// Where the buckets start: after the month's sum, or with the rate window on a month's
    /// first day (the day before still counts in the rate).
    first: i64,
    /// Buckets after `base_until`, by end.
    buckets: BTreeMap<i64, Sums>,
    /// Sums over `(from, until]` after the newest bucket, `until` the last settled tick: a
    /// refresh adds the ticks settled since and reads only the unsettled seconds after them.
    /// While the month's data covers less than an hour spend is refreshed at every tick, and
    /// reading the whole stretch after the newest bucket each time (up to 10 minutes of every
    /// target's raw rows) was the largest window read of a young process (issue 22's profile).
    fresh: Option<Fresh>,
}

/// The settled part of the stretch after the newest kept bucket.
#[derive(Debug)]
struct Fresh {
    from: i64,
    until: i64,
    sums: Sums,
}

impl Kept {
    /// Start of the projection's rate window: the bucket boundary at or before 24 h ago.
    fn rate_from(now_ms: i64) -> i64 {
        (now_ms - DEFAULT_RATE_WINDOW_MS).div_euclid(BUCKET_MS) * BUCKET_MS
    }

    /// The series [`read_costs`] gives, from the kept buckets and one read of what is newer;
    /// `None` while the buckets are still being filled (the caller reads whole meanwhile). At
    /// most [`FILL_PER_REFRESH`] buckets are read per refresh, so starting over (a late row
    /// moves the generation, which a busy process may do often) costs about one whole read,
    /// not a day of bucket reads at once.
    async fn read(
        &mut self,
        source: &dyn DataSource,
        generation: u64,
        now_ms: i64,
    ) -> Result<Option<(Vec<CostSeries>, i64)>, SourceError> {
        let p = Periods::at(now_ms);
        let rate_from = Self::rate_from(now_ms);
        let settled = (now_ms - SETTLED_MS).div_euclid(BUCKET_MS) * BUCKET_MS;
        if self.read_at != Some((generation, p.month_start)) {
            *self = Kept { read_at: Some((generation, p.month_start)), ..Kept::default() };
            self.base_until = p.month_start.max(rate_from);
            self.first = if rate_from < p.month_start { rate_from } else { self.base_until };
        }
        let newest = self.buckets.last_key_value().map_or(self.first, |(end, _)| *end);
        let mut end = newest + BUCKET_MS;
        for _ in 0..FILL_PER_REFRESH {
            if end > settled {
                break;
            }
            let sums = sums_of(source, (end - BUCKET_MS, end)).await?;
            self.buckets.insert(end, sums);
            end += BUCKET_MS;
        }
        if end <= settled {
            return Ok(None);
        }
        if !self.base_read {
            if self.base_until > p.month_start {
                self.base = sums_of(source, (p.month_start, self.base_until)).await?;
            }
            self.base_read = true;
        }
        // Buckets the rate window left: into the month's sum, or gone (before the month).
        while let Some(entry) = self.buckets.first_entry().filter(|e| *e.key() <= rate_from) {
            let (end, sums) = entry.remove_entry();
            if end > p.month_start {
                add_sums(&mut self.base, &sums);
                self.base_until = end;
            }
        }
        // Without buckets the stretch starts where the month's sum ends (never before `first`).
        let fresh_from = self.buckets.last_key_value().map_or(self.base_until, |(end, _)| *end);
        let fresh = self.fresh_stretch(source, fresh_from, now_ms).await?;
        let mut series: BTreeMap<(String, String), Vec<CostBucket>> = BTreeMap::new();
        let mut covered = 0;
        let parts = std::iter::once((self.base_until, p.month_start, &self.base))
            .chain(self.buckets.iter().map(|(end, sums)| (*end, end - BUCKET_MS, sums)))
            .chain(std::iter::once((now_ms, fresh_from, &fresh)));
        for (end_ms, start_ms, sums) in parts {
            for ((variant, model), (usd, data_from)) in sums {
                let from = (*data_from).max(start_ms);
                covered = covered.max(now_ms - from);
                let bucket = CostBucket { end_ms, width_ms: end_ms - from, usd: *usd };
                series.entry((variant.clone(), model.clone())).or_default().push(bucket);
            }
        }
        let series =
            series.into_iter().map(|((variant, model), buckets)| CostSeries { variant, model, buckets }).collect();
        Ok(Some((series, covered)))
    }

    /// Sums over `(from, now_ms]`: the kept settled ticks after `from` (started over when
    /// `from` moves, as a bucket settles), the ticks settled since, and a read of the rest.
    /// A source that seals its buckets ([`DataSource::sealed_through`]) has its ticks kept
    /// from when they are sealed rather than [`SETTLED_MS`] old: its generation moving starts
    /// everything kept over ([`Kept::read`]), and a late batch still held (the sealed bound
    /// below what is kept) starts this stretch over.
    async fn fresh_stretch(&mut self, source: &dyn DataSource, from: i64, now_ms: i64) -> Result<Sums, SourceError> {
        let step = source.grid_ms((now_ms - 1, now_ms), 0, now_ms);
        if step <= 0 {
            return sums_of(source, (from, now_ms)).await;
        }
        let settled = (now_ms - SETTLED_MS).div_euclid(step) * step;
        let sealed =
            source.sealed_through(now_ms).map_or(i64::MIN, |ms| ms.min(now_ms).div_euclid(step).saturating_mul(step));
        let fresh = match &mut self.fresh {
            Some(f) if f.from == from && f.until <= settled.max(sealed) => f,
            slot => slot.insert(Fresh { from, until: from, sums: Sums::new() }),
        };
        let settled = settled.max(sealed);
        if settled > fresh.until {
            add_sums(&mut fresh.sums, &sums_of(source, (fresh.until, settled)).await?);
            fresh.until = settled;
        }
        let mut sums = fresh.sums.clone();
        add_sums(&mut sums, &sums_of(source, (fresh.until, now_ms)).await?);
        Ok(sums)
    }
}

/// Each variant's and model's cost over `(start_ms, end_ms]`, with where its data starts.
async fn sums_of(source: &dyn DataSource, (start_ms, end_ms): (i64, i64)) -> Result<Sums, SourceError> {
    let mut out = Sums::new();
    if end_ms <= start_ms {
        return Ok(out);
    }
    for (variant, s) in source.window(WindowQuery { start_ms, end_ms, target_url: None }).await? {
        for (model, usd) in &s.counts.cost {
            out.insert((variant.clone(), model.to_string()), (usd.iter().sum(), s.data_from_ms.max(start_ms)));
        }
    }
    Ok(out)
}

fn add_sums(into: &mut Sums, from: &Sums) {
    for (key, (usd, data_from)) in from {
        let entry = into.entry(key.clone()).or_insert((0.0, *data_from));
        entry.0 += usd;
        entry.1 = entry.1.min(*data_from);
    }
}

/// The budgets' alerts: for each budget set, the actual spend and its projection at 80, 95
/// and 100 % (`DailySpend80`, `DailySpendProjected95`, `MonthlySpend100`, ...), labelled
/// `variant="all"`; 100 % is `critical`, the others `warning`.
pub fn budget_rules(budgets: &Budgets) -> Vec<Rule> {
    let mut out = Vec::new();
    for (monthly, budget) in [(false, budgets.daily_usd), (true, budgets.monthly_usd)] {
        let Some(budget) = budget.filter(|b| b.is_finite() && *b > 0.0) else { continue };
        let (period, setting) = if monthly { ("Monthly", "BUDGET_MONTHLY_USD") } else { ("Daily", "BUDGET_DAILY_USD") };
        for projected in [false, true] {
            for level in LEVELS {
                let what = if projected { "projected spend" } else { "spend" };
                let span = if monthly { "this month" } else { "today" };
                out.push(Rule {
                    name: format!("{period}Spend{}{level}", if projected { "Projected" } else { "" }),
                    scope: Scope::One(BUDGET_VARIANT.to_owned()),
                    expr: Expr {
                        metric: Metric::SpendShare { monthly, projected },
                        median_range_ms: None,
                        text: format!("{what} {span} / {setting}"),
                    },
                    op: Op::Ge,
                    threshold: level / 100.0,
                    window_ms: 0,
                    for_ms: 0,
                    min_requests: 0.0,
                    severity: if level >= 100.0 { "critical" } else { "warning" }.to_owned(),
                    summary: format!(
                        "The {what} {span} is {{{{ value }}}} times the {budget} USD budget ({setting}); alerting at {}",
                        crate::alerts::rules::format_number(level / 100.0)
                    ),
                    baseline: "production".to_owned(),
                });
            }
        }
    }
    out
}

/// The share a spend rule watches in a report.
pub fn share(report: &SpendReport, monthly: bool, projected: bool) -> Option<f64> {
    let status = if monthly { report.budgets.monthly } else { report.budgets.daily }?;
    if projected { status.projected_share } else { Some(status.actual_share) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use crate::point::{Point, TargetRow};
    use crate::ports::BoxFuture;
    use crate::ports::ingest::WriteBatch;
    use crate::ports::read::{ChartData, PointQuery, WindowSums};
    use crate::store::{Store, downsample, query, source::StoreSource, write};

    #[test]
    fn a_budget_makes_six_rules_and_none_makes_none() {
        assert!(budget_rules(&Budgets::default()).is_empty());
        let rules = budget_rules(&Budgets { daily_usd: Some(50.0), monthly_usd: None });
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DailySpend80",
                "DailySpend95",
                "DailySpend100",
                "DailySpendProjected80",
                "DailySpendProjected95",
                "DailySpendProjected100"
            ]
        );
        assert_eq!(rules[2].severity, "critical");
        assert_eq!(rules[0].threshold, 0.8);
        assert!(rules[3].summary.contains("projected spend today"), "{}", rules[3].summary);
    }

    /// The store source, adding up how long the windows it is asked for are.
    #[derive(Debug)]
    struct Spans<'a>(&'a StoreSource, AtomicI64);
    impl DataSource for Spans<'_> {
        fn variants(&self) -> BoxFuture<'_, Result<std::collections::BTreeSet<String>, SourceError>> {
            self.0.variants()
        }
        fn grid_ms(&self, window: (i64, i64), min_step_ms: i64, now_ms: i64) -> i64 {
            self.0.grid_ms(window, min_step_ms, now_ms)
        }
        fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
            self.0.points(q)
        }
        fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>> {
            self.1.fetch_add(q.end_ms - q.start_ms, Ordering::SeqCst);
            self.0.window(q)
        }
        fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>> {
            self.0.chart(q)
        }
        fn strata_generation(&self) -> Option<u64> {
            self.0.strata_generation()
        }
        fn sealed_through(&self, now_ms: i64) -> Option<i64> {
            self.0.sealed_through(now_ms)
        }
        fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
            self.0.series(end_ms, range_ms, step_ms)
        }
    }

    /// A store with `pairs` registered at `t0`, read through the server's source with 5 s points
    /// and 1 min rollups on a clock at `t0`; `plan`: the downsampler's, as the server runs it.
    struct SpendStore {
        _dir: tempfile::TempDir,
        store: Store,
        ids: Vec<i64>,
        clock: Arc<ManualClock>,
        source: StoreSource,
        plan: downsample::Plan,
    }

    impl SpendStore {
        fn new(pairs: &[(String, String)], t0: i64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("spend.db")).unwrap();
            let ids =
                query::register_targets(&store.conn().unwrap(), pairs, t0).unwrap().iter().map(|t| t.id).collect();
            let clock = Arc::new(ManualClock::new(t0));
            let mut settings = crate::config::Settings::for_tests(vec![], "unused.db".into()).store();
            settings.point_width = std::time::Duration::from_secs(5);
            settings.rollup_width = std::time::Duration::from_secs(60);
            let plan = settings.downsample_plan();
            let source = StoreSource::new(store.clone(), settings, clock.clone());
            Self { _dir: dir, store, ids, clock, source, plan }
        }
    }

    /// A refresh at `now_ms` (the last report dropped), the report a whole read over the same
    /// rate window gives, and how long the windows the refresh read were in all.
    async fn refresh_and_read_whole(
        kept: &mut Costs,
        spans: &Spans<'_>,
        now_ms: i64,
        budgets: &Budgets,
    ) -> (SpendReport, SpendReport, i64) {
        kept.last = None;
        spans.1.store(0, Ordering::SeqCst);
        let got = kept.evaluate(spans, now_ms).await.unwrap();
        let read = spans.1.load(Ordering::SeqCst);
        let rate_from = now_ms - (got.rate_window_seconds * 1000.0).round() as i64;
        let (series, _) = read_costs(spans.0, now_ms, rate_from).await.unwrap();
        let want = forecast(&series, now_ms, budgets, now_ms - rate_from);
        (got, want, read)
    }

    /// Kept buckets give the report a whole read gives (over the same rate window), across a
    /// month's end, day ends and a late row, and a refresh reads only the newest stretch.
    #[tokio::test]
    async fn kept_spend_reports_as_a_whole_read_across_days_months_and_late_rows() {
        const MIN: i64 = 60_000;
        // 2027-01-30 00:00 UTC: three and a half days across the end of January.
        let t0: i64 = 1_801_267_200_000;
        let pairs =
            [("http://a/m".to_owned(), "production".to_owned()), ("http://b/m".to_owned(), "canary".to_owned())];
        let SpendStore { _dir, store, ids, clock, source, plan } = SpendStore::new(&pairs, t0);
        let spans = Spans(&source, AtomicI64::new(0));
        let row = |k: usize, ts_ms: i64, usd: f64| {
            let mut r = TargetRow {
                target_id: ids[k],
                ts_ms,
                variant: pairs[k].1.clone(),
                elapsed_ms: 5_000,
                ..Default::default()
            };
            r.counts.cost.insert(if k == 0 { "glm-4.7" } else { "glm-4.5-air" }.into(), [usd, usd / 4.0, 0.0, 0.0]);
            r
        };
        let write = |rows: Vec<TargetRow>, late: bool| {
            let bucket_end_ms = rows[0].ts_ms;
            let batch = WriteBatch { bucket_end_ms, rows, states: vec![], points: vec![], events: vec![], late };
            if write::write_batch(&mut store.conn().unwrap(), &batch, MIN).unwrap() || late {
                store.cache().invalidate();
            }
            store.note_committed(bucket_end_ms);
        };
        let budgets = Budgets { daily_usd: Some(10.0), monthly_usd: Some(200.0) };
        let mut kept = Costs::new(budgets);
        let (mut refreshes, mut steady) = (0, 0);
        // A row every 5 minutes per pod (sparse, so three days stay quick), more at night.
        let mut t = t0;
        while t < t0 + 84 * 60 * MIN {
            t += 5 * MIN;
            let hour = (t / 3_600_000) % 24;
            let usd = if hour < 6 { 0.03 } else { 0.01 } + (t / (5 * MIN) % 7) as f64 * 0.001;
            write(vec![row(0, t, usd), row(1, t, usd / 2.0)], false);
            if t % (20 * MIN) == 0 {
                downsample::run_once(&mut store.conn().unwrap(), t, plan).unwrap();
            }
            if t == t0 + 70 * 60 * MIN {
                // A late scrape into a settled bucket of today (February's first day).
                write(vec![row(0, t0 + 51 * 60 * MIN + 5_000, 0.5)], true);
            }
            if t % (35 * MIN) != 0 {
                continue;
            }
            let now = t + 20_000;
            clock.advance_ms(now - clock.now_ms());
            // Against a whole read over the rate window the report used (whole while filling).
            let (got, want, read) = refresh_and_read_whole(&mut kept, &spans, now, &budgets).await;
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
            let line = |r: &SpendReport| {
                let l = &r.total;
                [l.today_usd, l.month_usd, l.projected_day_usd.unwrap_or(-1.0), l.projected_month_usd.unwrap_or(-1.0)]
            };
            // Where data starts in the rate window is known to the width of the row that
            // answered first (a 5 s row, or its 1 min rollup later): with a row every 5 minutes
            // here, each bucket's first, so the rate may differ by up to a minute's share of the
            // data (2 % in the first hour, 0.07 % after a day); sums exactly.
            let first_day = now - t0 < 24 * 3_600_000 + 10 * MIN;
            for (i, (a, b)) in line(&got).into_iter().zip(line(&want)).enumerate() {
                let share = if first_day { 0.02 } else { 0.001 };
                let near = if i >= 2 { (a - b).abs() <= share * b.abs() } else { close(a, b) };
                assert!(near, "at {} min: kept {:?}, whole {:?}", (now - t0) / MIN, line(&got), line(&want));
            }
            assert_eq!(got.variants.keys().collect::<Vec<_>>(), want.variants.keys().collect::<Vec<_>>());
            refreshes += 1;
            // Once a day is kept, a refresh reads the newest bucket or two, not the month.
            if now - t0 > 25 * 3_600_000 && read < 3 * 3_600_000 {
                steady += 1;
            }
        }
        assert!(refreshes > 100, "{refreshes}");
        // Each start (the first, the new month, the late row) fills for 12 refreshes first.
        assert!(steady > refreshes / 3, "{steady} of {refreshes} refreshes read little");
    }

    /// A young process refreshes spend at every tick: each refresh reads only the ticks
    /// sealed since the last one and the unsealed seconds after them (about 11 s at the store;
    /// 30 s when ticks were kept only once settled), not the stretch since the newest
    /// 10-minute bucket, and reports what a whole read over the same window does.
    #[tokio::test]
    async fn a_refresh_each_tick_reads_only_the_seconds_after_the_last_sealed_tick() {
        const TICK: i64 = 5_000;
        // 2027-01-12 00:00 UTC, on a 10-minute boundary.
        let t0: i64 = 1_799_712_000_000;
        let pairs = [("http://a/m".to_owned(), "production".to_owned())];
        let SpendStore { _dir, store, ids, clock, source, .. } = SpendStore::new(&pairs, t0);
        let id = ids[0];
        let spans = Spans(&source, AtomicI64::new(0));
        let budgets = Budgets { daily_usd: Some(10.0), monthly_usd: None };
        let mut kept = Costs::new(budgets);
        let (mut looked, mut small) = (0, 0);
        let mut t = t0;
        while t < t0 + 40 * 60_000 {
            t += TICK;
            let mut row = TargetRow {
                target_id: id,
                ts_ms: t,
                variant: pairs[0].1.clone(),
                elapsed_ms: TICK,
                ..Default::default()
            };
            row.counts.cost.insert("glm-4.7".into(), [0.001 * ((t / TICK) % 5) as f64, 0.0, 0.0, 0.0]);
            let batch = WriteBatch {
                bucket_end_ms: t,
                rows: vec![row],
                states: vec![],
                points: vec![],
                events: vec![],
                late: false,
            };
            write::write_batch(&mut store.conn().unwrap(), &batch, 60_000).unwrap();
            store.note_committed(t);
            let now = t + 500;
            clock.advance_ms(now - clock.now_ms());
            let buckets_before = kept.kept.buckets.len();
            // A refresh at every tick, as while the data covers under an hour.
            let (got, want, read) = refresh_and_read_whole(&mut kept, &spans, now, &budgets).await;
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
            assert!(
                close(got.total.today_usd, want.total.today_usd) && close(got.total.month_usd, want.total.month_usd),
                "at {} s: kept {:?}, whole {:?}",
                (now - t0) / 1000,
                got.total,
                want.total
            );
            // Once filled, a refresh that settles no bucket reads a tick and the unsealed seconds.
            if kept.kept.base_read && kept.kept.buckets.len() == buckets_before {
                looked += 1;
                if read <= 4 * TICK + 1_000 {
                    small += 1;
                }
            }
        }
        assert!(looked > 400, "{looked} refreshes after the fill");
        assert_eq!(small, looked, "every refresh that settled no bucket read a few seconds");
    }
}
