//! The alert engine: one task that evaluates every rule on each tick (each published live
//! point set, or after two point intervals without one, so that alerts still move when every
//! target is down), keeps each alert's record, persists changes, announces them on the live
//! stream and posts notifications to the receivers' mailboxes.
//!
//! Nothing here waits for a receiver: posting to a mailbox returns at once. Receivers report
//! what they delivered; the record keeps it per receiver, so a restart resends only what a
//! receiver has not acknowledged (a firing alert it never heard of, or the resolution of one it
//! did), and never a resolution it already has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::deliver::{Ack, Mailbox, ReceiverStats};
use super::eval::{advance, new_record};
use super::notify::Notification;
use super::observe::{Feed, Inputs, Medians};
use super::rules::Rule;
use crate::clock::{SharedClock, rfc3339_ms};
use crate::health::HealthBoard;
use crate::phase::AlertPhase;
use crate::ports::alert_state::{AlertRecord, AlertStateStore, Announcer};
use crate::ports::read::DataSource;
use crate::telemetry::LogThrottle;

/// An alert's identity: rule and variant.
pub(crate) type Key = (String, String);

/// What the engine reads from and writes to.
#[derive(Debug, Clone)]
pub(crate) struct Deps {
    /// Window statistics and histories (the store, or an engine-backed source).
    pub stats: Arc<dyn DataSource>,
    /// Target health.
    pub health: HealthBoard,
    /// Latest live points and ticks.
    pub feed: Arc<Feed>,
    /// Persistence of records.
    pub store: Arc<dyn AlertStateStore>,
    /// The live stream.
    pub announcer: Arc<dyn Announcer>,
    /// Wall clock.
    pub clock: SharedClock,
    /// Canary analysis settings (`canary_verdict`).
    pub canary: Arc<crate::canary::CanaryConfig>,
    /// `stats` answers a window with the sum of its buckets' answers (the store: raw rows are
    /// keyed by their bucket's end), so the rules' windows are read bucket by bucket and kept
    /// between evaluations ([`super::windows`]); not in source mode.
    pub bucket_sums: bool,
}

/// A receiver as the engine sees it: its mailbox and how often firing alerts are repeated.
#[derive(Debug)]
pub(crate) struct Outlet {
    /// The receiver's counters (its name among them).
    pub stats: Arc<ReceiverStats>,
    /// Where notifications go.
    pub mailbox: Arc<Mailbox>,
    /// Alertmanager wants firing alerts re-sent this often; webhooks are told once.
    pub repeat_ms: Option<i64>,
    /// When each firing alert was last posted.
    posted_ms: BTreeMap<Key, i64>,
}

impl Outlet {
    /// An outlet for a receiver.
    pub(crate) fn new(stats: Arc<ReceiverStats>, mailbox: Arc<Mailbox>, repeat_ms: Option<i64>) -> Self {
        Self { stats, mailbox, repeat_ms, posted_ms: BTreeMap::new() }
    }

    fn post(&mut self, n: Notification, now_ms: i64) {
        self.posted_ms.insert(n.key.clone(), now_ms);
        if !self.mailbox.post(n) {
            // Re-posted every tick while the receiver is down: at most one line a minute.
            static FULL: LogThrottle = LogThrottle::new();
            self.stats.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(suppressed) = FULL.admit() {
                tracing::warn!(
                    receiver = self.stats.name,
                    suppressed,
                    "Alert mailbox full; a notification was dropped."
                );
            }
        }
    }
}

/// What the page and the API show, rebuilt after each evaluation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Time of the last evaluation.
    pub evaluated_ms: Option<i64>,
    /// Evaluations since start (`zai_dash_alert_evaluations_total`): a test or an operator
    /// that must know a rule has had its chance (its `for` passed and it was evaluated after
    /// that) counts evaluations instead of guessing from wall time.
    pub evaluations: u64,
    /// Why window statistics could not be read at the last evaluation.
    pub error: Option<String>,
    /// Every alert evaluated, in rule then variant order.
    pub alerts: Vec<AlertView>,
    /// Each variant's quota runway at the last evaluation (`None`: not read).
    pub quota: Option<crate::budget::quota::QuotaReport>,
    /// Every objective for each variant it covers, at the last evaluation.
    pub slos: Vec<crate::budget::slo::SloStatus>,
    /// The objectives' chart samples since start.
    pub slo_history: Arc<super::objectives::SloHistory>,
    /// Spend today and this month at the last evaluation (`None`: not read).
    pub spend: Option<crate::budget::spend::SpendReport>,
}

/// One alert, ready to show.
#[derive(Debug, Clone)]
pub(crate) struct AlertView {
    /// The record.
    pub record: AlertRecord,
    /// Summary with its placeholders filled.
    pub summary: String,
    /// The value in the metric's terms.
    pub value: String,
    /// The threshold in the metric's terms, with its operator (`> 5`).
    pub threshold: String,
    /// Per receiver, the last acknowledged delivery, Unix ms.
    pub delivered: BTreeMap<&'static str, i64>,
}

/// The engine's state; owned by its task.
#[derive(Debug)]
pub(crate) struct Engine {
    rules: Arc<Vec<Rule>>,
    deps: Deps,
    outlets: Vec<Outlet>,
    records: BTreeMap<Key, AlertRecord>,
    dirty: BTreeSet<Key>,
    medians: Medians,
    delivered: BTreeMap<Key, BTreeMap<&'static str, i64>>,
    shared: Arc<RwLock<Snapshot>>,
    /// Latest points older than this many ms are a stopped variant's, not current.
    stale_ms: i64,
    failing: bool,
    /// Evaluations since start.
    evaluations: u64,
    /// Saving records failed last time (the database refuses writes): logged once, and the
    /// alerts keep firing and reaching receivers from memory meanwhile.
    saves_failing: bool,
    /// Quota samples kept between evaluations.
    runways: super::runway::Runways,
    /// The objectives, their window sums and chart samples.
    objectives: super::objectives::Objectives,
    /// Per (baseline, candidate): when its canary verdict was judged, and the verdict with the
    /// candidate's requests. Judging reads every tick since the rollout began, so it is redone
    /// once per `stale_ms` (three evaluations), not at every one; an always-valid verdict a few
    /// seconds old is still valid.
    verdicts: BTreeMap<(String, String), (i64, (crate::canary::Verdict, f64))>,
    /// The last spend report and the budgets.
    costs: super::costs::Costs,
    /// The rules' window sums, bucket by bucket (when `deps.bucket_sums`).
    windows: super::windows::BucketSums,
}

impl Engine {
    /// An engine over `rules`, publishing its snapshot to `shared`.
    pub(crate) fn new(
        rules: Arc<Vec<Rule>>,
        deps: Deps,
        outlets: Vec<Outlet>,
        shared: Arc<RwLock<Snapshot>>,
        stale_ms: i64,
    ) -> Self {
        Self {
            rules,
            deps,
            outlets,
            records: BTreeMap::new(),
            dirty: BTreeSet::new(),
            medians: Medians::default(),
            delivered: BTreeMap::new(),
            shared,
            stale_ms,
            failing: false,
            evaluations: 0,
            saves_failing: false,
            runways: Default::default(),
            objectives: Default::default(),
            verdicts: BTreeMap::new(),
            costs: Default::default(),
            windows: Default::default(),
        }
    }

    /// The engine with spend read at each evaluation against these budgets (their alerts are
    /// among `rules`, see [`super::costs::budget_rules`]).
    pub fn with_budgets(mut self, budgets: crate::budget::spend::Budgets) -> Self {
        self.costs = super::costs::Costs::new(budgets);
        self
    }

    /// The engine with the rules file's objectives evaluated at each tick (their alerts are
    /// among `rules`, see [`super::objectives::burn_rules`]).
    pub fn with_objectives(mut self, slos: Vec<crate::budget::slo::SloSpec>) -> Self {
        self.objectives = super::objectives::Objectives::new(slos);
        self
    }

    /// Restores the records, then evaluates on every tick (or `fallback` after the last
    /// evaluation) until `stop`; acknowledgements are recorded as they come.
    pub(crate) async fn run(mut self, mut acks: mpsc::Receiver<Ack>, stop: CancellationToken, fallback: Duration) {
        self.restore().await;
        let feed = self.deps.feed.clone();
        let mut deadline = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(ack) = acks.recv() => {
                    self.acknowledge(ack);
                    self.save_dirty().await;
                    continue;
                }
                () = feed.ticked() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            if !self.evaluate_unless_stopped(&stop).await {
                break;
            }
            deadline = tokio::time::Instant::now() + fallback;
        }
        // Receivers stop with the same token; what they delivered just before is recorded, so
        // the next start does not send it again. The channel closes when the last one exits.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(ack)) = tokio::time::timeout_at(deadline, acks.recv()).await {
            self.acknowledge(ack);
        }
        self.save_dirty().await;
    }

    fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Loads the records kept, resolves those whose rule is gone, and posts what each receiver
    /// has not acknowledged.
    pub(crate) async fn restore(&mut self) {
        let now = self.deps.clock.now_ms();
        let loaded = self.deps.store.load().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Alert state could not be read; starting with none.");
            Vec::new()
        });
        for mut rec in loaded {
            let key = (rec.rule.clone(), rec.variant.clone());
            if self.rule(&rec.rule).is_some() {
                self.records.insert(key, rec);
            } else if rec.phase == AlertPhase::Firing {
                // Its rule left ALERT_RULES: the episode ends now, and receivers hear so.
                rec.phase = AlertPhase::Resolved;
                rec.resolved_ms = Some(now);
                rec.updated_ms = now;
                self.post_missing(None, &rec, now);
                self.dirty.insert(key.clone());
                self.records.insert(key, rec);
            }
        }
        let keys: Vec<Key> = self.records.keys().cloned().collect();
        for key in keys {
            let rec = self.records[&key].clone();
            let rule = self.rule(&rec.rule).cloned();
            self.post_missing(rule.as_ref(), &rec, now);
        }
        self.save_dirty().await;
        self.records.retain(|(rule, _), _| self.rules.iter().any(|r| r.name == *rule));
    }

    /// Posts to each receiver what it lacks of `rec`: a firing alert it has not acknowledged,
    /// or the resolution of one it acknowledged firing.
    fn post_missing(&mut self, rule: Option<&Rule>, rec: &AlertRecord, now_ms: i64) {
        for outlet in &mut self.outlets {
            let told = rec.notified.get(outlet.stats.name).copied();
            let lacks = match rec.phase {
                AlertPhase::Firing => told != Some(AlertPhase::Firing),
                AlertPhase::Resolved => told == Some(AlertPhase::Firing),
                _ => false,
            };
            if lacks {
                outlet.post(notification(rule, rec), now_ms);
            }
        }
    }

    /// Records a receiver's acknowledgement.
    pub(crate) fn acknowledge(&mut self, ack: Ack) {
        let Some(rec) = self.records.get_mut(&ack.key) else { return };
        rec.notified.insert(ack.receiver.to_owned(), ack.phase);
        self.delivered.entry(ack.key.clone()).or_default().insert(ack.receiver, ack.at_ms);
        self.dirty.insert(ack.key);
    }

    /// One evaluation of every rule at the clock's time: what the loop runs, never stopped
    /// (tests step the engine with it).
    #[cfg(test)]
    pub(crate) async fn evaluate(&mut self) {
        self.evaluate_unless_stopped(&CancellationToken::new()).await;
    }

    /// [`Engine::evaluate`], unless `stop` fires while the inputs are read (`false`). Reading
    /// can take long (source mode judges every canary pair with PromQL), and shutdown must not
    /// wait for it; nothing is decided, saved or sent before the reading ends, so an abandoned
    /// evaluation leaves no half-recorded notification.
    async fn evaluate_unless_stopped(&mut self, stop: &CancellationToken) -> bool {
        let now = self.deps.clock.now_ms();
        let read = tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            read = self.read_inputs(now) => read,
        };
        self.apply(now, read).await;
        true
    }

    /// Advances every record on what was read, then saves and publishes.
    async fn apply(&mut self, now: i64, (inputs, error): (Inputs, Option<String>)) {
        let rules = self.rules.clone();
        let mut changed = Vec::new();
        for rule in rules.iter() {
            let known = self.records.keys().filter(|(r, _)| *r == rule.name).map(|(_, v)| v.clone());
            for variant in inputs.variants_of(rule, known.collect::<Vec<_>>().into_iter()) {
                let Some(observation) = inputs.observe(rule, &variant) else { continue };
                let key = (rule.name.clone(), variant);
                let rec = self.records.entry(key.clone()).or_insert_with(|| new_record(rule, &key.1, now));
                if advance(rec, observation, now, rule.for_ms).is_some() {
                    changed.push((rule.clone(), key));
                }
            }
        }
        for (rule, key) in changed {
            self.on_change(&rule, &key, now);
        }
        self.repeat_firing(now);
        self.save_dirty().await;
        self.publish_snapshot(now, error, inputs);
    }

    /// Everything one evaluation reads, and why window statistics were missing, if they were.
    async fn read_inputs(&mut self, now: i64) -> (Inputs, Option<String>) {
        let mut inputs = Inputs::default();
        let error = if self.deps.bucket_sums {
            inputs.read_windows_by_bucket(&self.rules, self.deps.stats.as_ref(), &mut self.windows, now).await
        } else {
            inputs.read_windows(&self.rules, self.deps.stats.as_ref(), now).await
        };
        match (&error, self.failing) {
            (Some(e), false) => {
                tracing::warn!(error = %e, "Alert rules over windows are not evaluated until statistics can be read.")
            }
            (None, true) => tracing::info!("Window statistics readable again; every alert rule is evaluated."),
            _ => {}
        }
        self.failing = error.is_some();
        inputs.latest = self.deps.feed.fresh(now - self.stale_ms);
        inputs.read_health(&self.deps.health.snapshot());
        inputs.storage_failing = self.deps.health.storage().is_some();
        self.read_verdicts(&mut inputs, now).await;
        self.medians.refresh(&self.rules, self.deps.stats.as_ref(), now, &mut inputs).await;
        let variants = inputs.variants();
        match self.runways.read(self.deps.stats.as_ref(), &variants, now).await {
            Ok(report) => inputs.quota = Some(report),
            Err(e) => tracing::debug!(error = %e, "Quota samples unavailable this evaluation."),
        }
        let (slos, slo_error) = self.objectives.evaluate(self.deps.stats.as_ref(), &variants, now).await;
        if let Some(e) = slo_error {
            tracing::debug!(error = %e, "Objective windows unavailable this evaluation; their last sums are used.");
        }
        inputs.slos = slos;
        match self.costs.evaluate(self.deps.stats.as_ref(), now).await {
            Ok(report) => inputs.spend = Some(report),
            Err(e) => tracing::debug!(error = %e, "Spend unavailable this evaluation."),
        }
        (inputs, error.map(|e| format!("window statistics unavailable: {e}")))
    }

    /// The canary verdicts the rules need: those judged within `stale_ms` from memory, the
    /// others judged now.
    async fn read_verdicts(&mut self, inputs: &mut Inputs, now: i64) {
        self.verdicts.retain(|_, (at, _)| now - *at < self.stale_ms && *at <= now);
        inputs.verdicts = self.verdicts.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
        let canary = self.deps.canary.clone();
        if let Some(e) = inputs.read_verdicts(&self.rules, self.deps.stats.as_ref(), &canary, now).await {
            tracing::debug!(error = %e, "Canary verdicts unavailable this tick.");
        }
        for (key, v) in &inputs.verdicts {
            self.verdicts.entry(key.clone()).or_insert((now, *v));
        }
    }

    /// A phase change: persisted, announced, and posted when it fires or resolves.
    fn on_change(&mut self, rule: &Rule, key: &Key, now_ms: i64) {
        let Some(rec) = self.records.get(key).cloned() else { return };
        self.dirty.insert(key.clone());
        self.deps.announcer.announce("alert", alert_event(rule, &rec));
        let log =
            |what: &str| tracing::info!(rule = %rule.name, variant = %rec.variant, value = ?rec.value, "Alert {what}.");
        match rec.phase {
            AlertPhase::Firing => log("firing"),
            AlertPhase::Resolved => log("resolved"),
            _ => return,
        }
        for outlet in &mut self.outlets {
            outlet.post(notification(Some(rule), &rec), now_ms);
        }
    }

    /// Re-posts firing alerts to receivers that want them repeated (Alertmanager).
    fn repeat_firing(&mut self, now_ms: i64) {
        for outlet in &mut self.outlets {
            let Some(every) = outlet.repeat_ms else { continue };
            for (key, rec) in self.records.iter().filter(|(_, r)| r.phase == AlertPhase::Firing) {
                let due = outlet.posted_ms.get(key).is_none_or(|t| now_ms - t >= every);
                if let (true, Some(rule)) = (due, self.rules.iter().find(|r| r.name == rec.rule)) {
                    outlet.post(notification(Some(rule), rec), now_ms);
                }
            }
        }
    }

    async fn save_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let batch: Vec<AlertRecord> = self.dirty.iter().filter_map(|k| self.records.get(k).cloned()).collect();
        match self.deps.store.save(batch).await {
            Ok(()) => {
                self.dirty.clear();
                if std::mem::take(&mut self.saves_failing) {
                    tracing::info!("Alert state saved again.");
                }
            }
            Err(e) if !self.saves_failing => {
                self.saves_failing = true;
                tracing::warn!(error = %e, "Alert state not saved; kept in memory and retried at each evaluation.");
            }
            Err(_) => {}
        }
    }

    fn publish_snapshot(&mut self, now_ms: i64, error: Option<String>, inputs: Inputs) {
        self.evaluations += 1;
        let alerts = self
            .records
            .iter()
            .filter_map(|(key, rec)| {
                let rule = self.rule(&rec.rule)?;
                Some(AlertView {
                    summary: rule.summary_for(&rec.variant, rec.value),
                    value: rule.format_value(rec.value),
                    threshold: format!("{} {}", rule.op.as_str(), rule.format_threshold()),
                    delivered: self.delivered.get(key).cloned().unwrap_or_default(),
                    record: rec.clone(),
                })
            })
            .collect();
        if let Ok(mut s) = self.shared.write() {
            *s = Snapshot {
                evaluated_ms: Some(now_ms),
                evaluations: self.evaluations,
                error,
                alerts,
                quota: inputs.quota,
                slos: inputs.slos.map(|o| o.statuses).unwrap_or_default(),
                spend: inputs.spend,
                slo_history: self.objectives.history(),
            };
        }
    }
}

/// Labels of an alert: `alertname`, `variant`, `severity`.
pub(crate) fn labels(rec: &AlertRecord) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("alertname".to_owned(), rec.rule.clone()),
        ("severity".to_owned(), rec.severity.clone()),
        ("variant".to_owned(), rec.variant.clone()),
    ])
}

/// Annotations: `summary`, `description`, `value`, `threshold` (a rule that left the file has
/// only a summary saying so).
pub(crate) fn annotations(rule: Option<&Rule>, rec: &AlertRecord) -> BTreeMap<String, String> {
    let Some(rule) = rule else {
        return BTreeMap::from([("summary".to_owned(), format!("{} was removed from ALERT_RULES", rec.rule))]);
    };
    let window = if rule.window_ms > 0 {
        format!(" over {}", humantime::format_duration(Duration::from_millis(rule.window_ms.unsigned_abs())))
    } else {
        String::new()
    };
    BTreeMap::from([
        ("summary".to_owned(), rule.summary_for(&rec.variant, rec.value)),
        (
            "description".to_owned(),
            format!("{}{window} on {}: value {}", rule.condition(), rec.variant, rule.format_value(rec.value)),
        ),
        ("value".to_owned(), rule.format_value(rec.value)),
        ("threshold".to_owned(), format!("{} {}", rule.op.as_str(), rule.format_threshold())),
    ])
}

/// The notification of a record's current phase.
pub(crate) fn notification(rule: Option<&Rule>, rec: &AlertRecord) -> Notification {
    Notification {
        key: (rec.rule.clone(), rec.variant.clone()),
        phase: rec.phase,
        labels: labels(rec),
        annotations: annotations(rule, rec),
        starts_ms: rec.fired_ms.or(rec.active_ms).unwrap_or(rec.updated_ms),
        ends_ms: (rec.phase == AlertPhase::Resolved).then(|| rec.resolved_ms.unwrap_or(rec.updated_ms)),
    }
}

/// A float as Go's `strconv.FormatFloat(v, 'e', -1, 64)`, which Prometheus' API uses for
/// alert values (`1.25e+01`).
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() };
    }
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// An alert in Prometheus' `/api/v1/alerts` shape.
pub(crate) fn prometheus_alert(rule: &Rule, rec: &AlertRecord) -> Value {
    let active = rec.active_ms.or(rec.fired_ms).unwrap_or(rec.updated_ms);
    json!({
        "labels": labels(rec),
        "annotations": annotations(Some(rule), rec),
        "state": rec.phase.as_str(),
        "activeAt": rfc3339_ms(active),
        "value": go_float(rec.value.unwrap_or(f64::NAN)),
    })
}

/// The live stream's `{"type":"alert","data":...}` payload: the Prometheus shape, with the
/// times of the episode.
pub(crate) fn alert_event(rule: &Rule, rec: &AlertRecord) -> Value {
    let mut v = prometheus_alert(rule, rec);
    if let Value::Object(m) = &mut v {
        m.insert("firedAt".into(), rec.fired_ms.map(rfc3339_ms).into());
        m.insert(
            "resolvedAt".into(),
            rec.resolved_ms.filter(|_| rec.phase == AlertPhase::Resolved).map(rfc3339_ms).into(),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::alerts::deliver::Format;
    use crate::alerts::observe::FixedStats;
    use crate::alerts::rules::parse_rules;
    use crate::clock::{Clock, ManualClock};
    use crate::ports::BoxFuture;
    use crate::ports::read::SideStats;
    use crate::ports::read::WindowStats;

    #[derive(Debug, Default)]
    struct MemoryStore(Mutex<BTreeMap<Key, AlertRecord>>);

    impl AlertStateStore for MemoryStore {
        fn load(&self) -> BoxFuture<'_, Result<Vec<AlertRecord>, crate::ports::alert_state::AlertStoreError>> {
            let all = self.0.lock().unwrap().values().cloned().collect();
            Box::pin(std::future::ready(Ok(all)))
        }

        fn save(
            &self,
            records: Vec<AlertRecord>,
        ) -> BoxFuture<'_, Result<(), crate::ports::alert_state::AlertStoreError>> {
            let mut m = self.0.lock().unwrap();
            for r in records {
                m.insert((r.rule.clone(), r.variant.clone()), r);
            }
            Box::pin(std::future::ready(Ok(())))
        }
    }

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Value>>);

    impl Announcer for Recorder {
        fn announce(&self, kind: &'static str, data: Value) {
            assert_eq!(kind, "alert");
            self.0.lock().unwrap().push(data);
        }
    }

    struct Harness {
        clock: Arc<ManualClock>,
        store: Arc<MemoryStore>,
        announced: Arc<Recorder>,
        mailbox: Arc<Mailbox>,
    }

    const RULES: &str = "rules:\n  - {name: E, variant: canary, expr: error_rate_pct, threshold: 5, window: 1m, for: 1m, min_requests: 100}\n";

    fn stats(errors: f64) -> Arc<FixedStats> {
        let side = SideStats { requests: 500.0, error_rate_pct: Some(errors), ..Default::default() };
        let w = BTreeMap::from([("canary".to_owned(), WindowStats { side, rejection_rate: 0.0 })]);
        Arc::new(FixedStats { windows: BTreeMap::from([(60_000, w)]), ..Default::default() })
    }

    impl Harness {
        fn new() -> Self {
            Self {
                clock: Arc::new(ManualClock::new(1_000_000)),
                store: Arc::default(),
                announced: Arc::default(),
                mailbox: Arc::default(),
            }
        }

        /// What an engine over the harness' store and clock needs, reading `stats`.
        fn deps(&self, stats: Arc<FixedStats>) -> Deps {
            Deps {
                stats,
                health: HealthBoard::default(),
                feed: Arc::default(),
                store: self.store.clone(),
                announcer: self.announced.clone(),
                clock: self.clock.clone(),
                canary: Arc::default(),
                bucket_sums: false,
            }
        }

        /// A fresh engine (a restart) over the same store, reading `errors` % 5xx.
        fn engine(&self, errors: f64, format: Format, repeat_ms: Option<i64>) -> Engine {
            let receiver = ReceiverStats {
                name: "webhook",
                format,
                origin: "http://127.0.0.1:1".into(),
                sent: Default::default(),
                failures: Default::default(),
                dropped: Default::default(),
                last: Default::default(),
            };
            let deps = self.deps(stats(errors));
            let outlet = Outlet::new(Arc::new(receiver), self.mailbox.clone(), repeat_ms);
            let rules = Arc::new(parse_rules(RULES, "t").unwrap());
            Engine::new(rules, deps, vec![outlet], Arc::default(), 15_000)
        }

        async fn sent(&self) -> Vec<AlertPhase> {
            let mut out = Vec::new();
            while !self.mailbox.is_empty() {
                out.extend(self.mailbox.take(64).await.into_iter().map(|n| n.phase));
            }
            out
        }

        fn ack(&self, engine: &mut Engine, phase: AlertPhase) {
            let key = ("E".to_owned(), "canary".to_owned());
            engine.acknowledge(Ack { receiver: "webhook", key, phase, at_ms: self.clock.now_ms() });
        }
    }

    /// The canary verdict reads every tick since the rollout began: it is judged again once per
    /// `stale_ms`, not at every evaluation, and fires from the cached verdict meanwhile.
    #[tokio::test]
    async fn the_canary_verdict_is_judged_once_per_staleness_interval() {
        use std::sync::atomic::Ordering;

        use crate::canary::SideTick;
        use crate::ports::read::Stratum;
        let h = Harness::new();
        let tick = |e: f64| SideTick { requests: 100.0, errors_5xx: e, ok_2xx: 100.0 - e, ..Default::default() };
        let strata = (0..200).map(|k| Stratum { end_ms: k * 5_000, sides: [tick(0.5), tick(12.0)] }).collect();
        let source = Arc::new(FixedStats { strata: Some(strata), ..Default::default() });
        let deps = h.deps(source.clone());
        let rules = "rules:\n  - {name: C, variant: canary, expr: canary_verdict, op: '==', threshold: fail}\n";
        let mut e = Engine::new(Arc::new(parse_rules(rules, "t").unwrap()), deps, Vec::new(), Arc::default(), 15_000);
        e.evaluate().await;
        let key = ("C".to_owned(), "canary".to_owned());
        assert_eq!(h.store.0.lock().unwrap()[&key].phase, AlertPhase::Firing, "12 % against 0.5 % fails");
        h.clock.advance_ms(5_000);
        e.evaluate().await;
        assert_eq!(source.strata_reads.load(Ordering::Relaxed), 1, "judged once within 15 s");
        assert_eq!(h.store.0.lock().unwrap()[&key].phase, AlertPhase::Firing);
        h.clock.advance_ms(10_000);
        e.evaluate().await;
        assert_eq!(source.strata_reads.load(Ordering::Relaxed), 2, "judged again after 15 s");
    }

    /// Shutdown does not wait for an evaluation whose reads hang (source mode judging many
    /// canary pairs against a slow engine): the loop stops as soon as it is told to.
    #[tokio::test]
    async fn a_hanging_read_does_not_hold_up_shutdown() {
        let h = Harness::new();
        let deps = h.deps(Arc::new(FixedStats { stalled: true, ..Default::default() }));
        let rules = "rules:\n  - {name: E, variant: canary, expr: error_rate_pct, op: '>', threshold: 5, window: 5m}\n";
        let e = Engine::new(Arc::new(parse_rules(rules, "t").unwrap()), deps, Vec::new(), Arc::default(), 15_000);
        let stop = CancellationToken::new();
        let (_tx, acks) = mpsc::channel(1);
        let task = tokio::spawn(e.run(acks, stop.clone(), Duration::from_secs(60)));
        // Let the first evaluation start and block on its read.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the loop stopped").unwrap();
    }

    #[tokio::test]
    async fn a_receiver_hears_firing_and_resolved_once_and_a_restart_sends_nothing_it_has() {
        let h = Harness::new();
        let mut e = h.engine(12.0, Format::Webhook, None);
        e.restore().await;
        e.evaluate().await;
        assert_eq!(h.store.0.lock().unwrap()[&("E".into(), "canary".into())].phase, AlertPhase::Pending);
        h.clock.advance_ms(60_000);
        e.evaluate().await;
        assert_eq!(h.sent().await, [AlertPhase::Firing]);
        h.ack(&mut e, AlertPhase::Firing);
        e.save_dirty().await;
        h.clock.advance_ms(5_000);
        e.evaluate().await;
        assert!(h.sent().await.is_empty(), "a webhook is told once");

        let mut restarted = h.engine(12.0, Format::Webhook, None);
        restarted.restore().await;
        restarted.evaluate().await;
        assert!(h.sent().await.is_empty(), "a restart does not re-notify a firing alert");

        let mut recovered = h.engine(1.0, Format::Webhook, None);
        recovered.restore().await;
        recovered.evaluate().await;
        assert_eq!(h.sent().await, [AlertPhase::Resolved]);
        h.ack(&mut recovered, AlertPhase::Resolved);
        recovered.save_dirty().await;

        let mut again = h.engine(1.0, Format::Webhook, None);
        again.restore().await;
        again.evaluate().await;
        assert!(h.sent().await.is_empty(), "a restart does not re-send a resolved alert");
        let states: Vec<String> =
            h.announced.0.lock().unwrap().iter().map(|v| v["state"].as_str().unwrap_or("").to_owned()).collect();
        assert_eq!(states, ["pending", "firing", "resolved"]);
    }

    #[tokio::test]
    async fn an_unacknowledged_notification_is_sent_after_a_restart() {
        let h = Harness::new();
        let mut e = h.engine(12.0, Format::Webhook, None);
        e.restore().await;
        e.evaluate().await;
        h.clock.advance_ms(60_000);
        e.evaluate().await;
        assert_eq!(h.sent().await, [AlertPhase::Firing], "lost: the process stops before the receiver answers");
        let mut restarted = h.engine(12.0, Format::Webhook, None);
        restarted.restore().await;
        assert_eq!(h.sent().await, [AlertPhase::Firing]);
    }

    #[tokio::test]
    async fn alertmanager_hears_a_firing_alert_again_every_resend_interval() {
        let h = Harness::new();
        let mut e = h.engine(12.0, Format::Alertmanager, Some(30_000));
        e.restore().await;
        e.evaluate().await;
        h.clock.advance_ms(60_000);
        e.evaluate().await;
        assert_eq!(h.sent().await, [AlertPhase::Firing]);
        h.clock.advance_ms(10_000);
        e.evaluate().await;
        assert!(h.sent().await.is_empty());
        h.clock.advance_ms(20_000);
        e.evaluate().await;
        assert_eq!(h.sent().await, [AlertPhase::Firing], "30 s later");
    }

    #[test]
    fn values_in_go_float_form() {
        assert_eq!(go_float(12.5), "1.25e+01");
        assert_eq!(go_float(0.0), "0e+00");
        assert_eq!(go_float(0.00123), "1.23e-03");
        assert_eq!(go_float(f64::NAN), "NaN");
    }
}
