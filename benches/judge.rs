//! What one canary judgement costs as a rollout ages: judged afresh (every stratum since the
//! rollout began read and folded) against with the evidence kept (`ports::judge_cache`: only
//! the strata after the last judgement read).
//!
//! `cargo bench --bench judge` prints one table row per rollout age. `JUDGE_BENCH_PODS` pods per
//! variant (default 10; production and canary) are scraped every 5 s into a real SQLite file,
//! rolled every minute, for `JUDGE_BENCH_HOURS` (default 24) hours; at each age the pair is
//! judged since the rollout began, as the alerts, the minutely history and every open
//! `/compare` page judge it: once to fill the keeper, then `ROUNDS` times after one more tick
//! and its downsample, afresh and kept in turn. Medians of the rounds. Ages stay under the 7-day
//! `RETENTION_1M` (the bench does not run the downsampler task that forgets judgements whose
//! rows retention deleted).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use zai_dash::clock::ManualClock;
use zai_dash::point::Point;
use zai_dash::ports::BoxFuture;
use zai_dash::ports::judge_cache::JudgeCache;
use zai_dash::ports::read::{
    ChartData, DataSource, PointQuery, RolloutStart, SettledStrata, SourceError, StrataQuery, Stratum, WindowQuery,
    WindowSums,
};
use zai_dash::ports::rollout::{self, Chosen, Interval};
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::{parse::parse, reading::read};
use zai_dash::store::Store;
use zai_dash::store::downsample::{self, Plan};
use zai_dash::store::query;
use zai_dash::store::source::StoreSource;
use zai_dash::store::write::{self, WriteBatch};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const T0: i64 = 1_800_000_000_000;
const ROUNDS: usize = 5;

/// The store source with its judge cache hidden: every judgement reads the whole rollout.
#[derive(Debug)]
struct Afresh<'a>(&'a StoreSource);

impl DataSource for Afresh<'_> {
    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>> {
        self.0.variants()
    }
    fn grid_ms(&self, window: (i64, i64), min_step_ms: i64, now_ms: i64) -> i64 {
        self.0.grid_ms(window, min_step_ms, now_ms)
    }
    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        self.0.points(q)
    }
    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>> {
        self.0.window(q)
    }
    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>> {
        self.0.chart(q)
    }
    fn strata(&self, q: StrataQuery) -> BoxFuture<'_, Result<Option<Vec<Stratum>>, SourceError>> {
        self.0.strata(q)
    }
    fn settled_strata(
        &self,
        q: StrataQuery,
        after_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettledStrata>, SourceError>> {
        self.0.settled_strata(q, after_ms)
    }
    fn judge_cache(&self) -> Option<&JudgeCache> {
        None
    }
    fn rollout_start(&self, variant: &str, end_ms: i64) -> BoxFuture<'_, Result<Option<RolloutStart>, SourceError>> {
        self.0.rollout_start(variant, end_ms)
    }
    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        self.0.series(end_ms, range_ms, step_ms)
    }
}

fn expo(i: i64, pod: i64) -> String {
    let total = 500 + 9 * i + pod;
    let err = total / 40;
    let fast = total * 19 / 20;
    format!(
        "# TYPE zai_proxy_requests_total counter\n\
         zai_proxy_requests_total{{status_code=\"200\"}} {}\n\
         zai_proxy_requests_total{{status_code=\"503\"}} {err}\n\
         # TYPE zai_proxy_request_duration_seconds histogram\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"0.5\"}} {fast}\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"5\"}} {total}\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
         zai_proxy_request_duration_seconds_sum {}\n\
         zai_proxy_request_duration_seconds_count {total}\n",
        total - err,
        total / 2,
    )
}

struct Pods {
    store: Store,
    ids: Vec<(i64, &'static str)>,
    states: Vec<TargetState>,
    tick: i64,
}

impl Pods {
    fn tick(&mut self) {
        self.tick += 1;
        let t = T0 + self.tick * 5_000;
        let rows = self
            .ids
            .iter()
            .zip(self.states.iter_mut())
            .map(|(&(id, variant), st)| st.advance(&read(&parse(&expo(self.tick, id)).unwrap()), t - 300, id, variant))
            .collect();
        let batch = WriteBatch { bucket_end_ms: t, rows, states: vec![], points: vec![], events: vec![], late: false };
        write::write_batch(&mut self.store.conn().unwrap(), &batch, MIN).unwrap();
        if self.tick % 12 == 0 {
            let plan = Plan {
                point_ms: 5_000,
                rollup_ms: MIN,
                settle_ms: 11_000,
                retention_raw_ms: 24 * HOUR,
                retention_rollup_ms: 7 * 24 * HOUR,
                retention_coarse_ms: 30 * 24 * HOUR,
            };
            downsample::run_once(&mut self.store.conn().unwrap(), t, plan).unwrap();
        }
    }

    fn now(&self) -> i64 {
        T0 + self.tick * 5_000
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_number(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let pods = env_number("JUDGE_BENCH_PODS", 10);
    let hours = env_number("JUDGE_BENCH_HOURS", 24);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Store::open(&dir.path().join("judge.db")).unwrap();
    let specs: Vec<(String, String)> = (0..2 * pods)
        .map(|k| (format!("http://pod{k}/metrics"), if k < pods { "production" } else { "canary" }.to_owned()))
        .collect();
    let registered = query::register_targets(&store.conn().unwrap(), &specs, T0).unwrap();
    let ids = registered
        .iter()
        .zip(&specs)
        .map(|(t, (_, v))| (t.id, if v == "production" { "production" } else { "canary" }))
        .collect();
    let mut fleet =
        Pods { store: store.clone(), ids, states: vec![TargetState::default(); (2 * pods) as usize], tick: 0 };
    let clock = Arc::new(ManualClock::new(T0));
    let mut settings = zai_dash::config::Settings::for_tests(vec![], "unused.db".into()).store();
    settings.point_width = std::time::Duration::from_secs(5);
    settings.rollup_width = std::time::Duration::from_secs(60);
    settings.retention_5s = std::time::Duration::from_secs(24 * 3600);
    settings.retention_1m = std::time::Duration::from_secs(7 * 24 * 3600);
    let source = StoreSource::new(store.clone(), settings, clock.clone());
    let cfg = zai_dash::canary::CanaryConfig::default();
    let since = T0 + 10 * MIN;

    println!(
        "| rollout age | strata | judged afresh (median of {ROUNDS}) | evidence kept (median of {ROUNDS}) | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let ages: Vec<i64> = [1, 2, 6, 12, 24, 48, 96, 144].into_iter().filter(|&h| h <= hours).collect();
    for age in ages {
        while fleet.now() < since + age * HOUR {
            fleet.tick();
        }
        let judge = |source: &dyn DataSource, now: i64| {
            let interval = Interval { since_ms: since, until_ms: now, chosen: Chosen::Since, started: None };
            rt.block_on(rollout::judge(source, ("production", "canary"), interval, &cfg)).unwrap()
        };
        clock.advance_ms(fleet.now() - clock.now_ms());
        judge(&source, fleet.now()); // fills the keeper
        let (mut afresh, mut kept, mut strata) = (Vec::new(), Vec::new(), 0);
        for _ in 0..ROUNDS {
            for _ in 0..12 {
                fleet.tick();
            }
            clock.advance_ms(fleet.now() - clock.now_ms());
            let t = Instant::now();
            let a = judge(&Afresh(&source), fleet.now());
            afresh.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let b = judge(&source, fleet.now());
            kept.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(a.judgement, b.judgement, "kept and afresh disagree");
            strata = a.strata;
        }
        let (a, k) = (median(afresh), median(kept));
        println!("| {age} h | {strata} | {a:.2} ms | {k:.2} ms | {:.0}x |", a / k);
    }
    println!(
        "\n{pods} pods per variant, scraped every 5 s, rolled every minute; judged since the rollout began (minute 10)."
    );
    spend_reads(&rt, &source, fleet.now(), fleet.now() - T0);
}

/// What the spend report's refresh (`alerts::costs`, at most once a minute) reads at `now`: the
/// windows its edges cut (month start, day start, the 24 h rate window, now), each timed.
fn spend_reads(rt: &tokio::runtime::Runtime, source: &StoreSource, now: i64, data_ms: i64) {
    let p = zai_dash::budget::spend::Periods::at(now);
    let rate_from = now - zai_dash::budget::spend::DEFAULT_RATE_WINDOW_MS;
    let mut edges = vec![p.month_start, p.day_start, rate_from, now];
    edges.sort_unstable();
    edges.dedup();
    println!(
        "\nThe spend report's reads at the last age ({:.0} h of data), median of {ROUNDS}:\n",
        data_ms as f64 / 3.6e6
    );
    println!("| window | read in |");
    println!("|---|---:|");
    let mut total = 0.0;
    for pair in edges.windows(2) {
        let q = WindowQuery { start_ms: pair[0], end_ms: pair[1], target_url: None };
        let times = (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(rt.block_on(source.window(q.clone())).unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let ms = median(times);
        total += ms;
        println!(
            "| now - {:.1} h to now - {:.1} h | {ms:.2} ms |",
            (now - pair[0]) as f64 / 3.6e6,
            (now - pair[1]) as f64 / 3.6e6
        );
    }
    println!("| all (one refresh, read whole) | {total:.2} ms |");
    // The engine's refresh keeps settled 10-minute buckets, filling at most 12 per refresh
    // (reading whole meanwhile): the first refreshes fill them, later ones read what is newer.
    let budgets = zai_dash::budget::spend::Budgets { daily_usd: Some(100.0), monthly_usd: Some(1000.0) };
    let mut costs = zai_dash::alerts::costs::Costs::new(budgets);
    let refresh = |costs: &mut zai_dash::alerts::costs::Costs, at: i64| {
        let t = Instant::now();
        rt.block_on(costs.evaluate(source, at)).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let first = refresh(&mut costs, now);
    const FILLED_AFTER: i64 = 13; // refreshes, a minute apart, until a day's buckets are read
    for minute in 1..=FILLED_AFTER {
        refresh(&mut costs, now + minute * 61_000);
    }
    let times = (1..=ROUNDS as i64).map(|k| refresh(&mut costs, now + (FILLED_AFTER + k) * 61_000)).collect();
    println!("| the engine's first refresh, filling 12 buckets kept (`alerts::costs`) | {first:.2} ms |");
    println!("| a refresh once the buckets are filled (a minute apart) | {:.2} ms |", median(times));
}

use zai_dash::clock::Clock as _;
