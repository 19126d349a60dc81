//! Alerts (docs/decisions.md, Alerts): rules over the numbers the pages show, evaluated on each live
//! tick, kept in SQLite across restarts, and delivered to Alertmanager, a webhook or Slack.
//!
//! The subsystem depends on the core only. It reads window statistics through
//! [`crate::ports::read::DataSource`], the latest points through the [`Feed`] (a
//! [`crate::ports::ingest::PointSink`] the writer publishes to), target health from the
//! [`crate::health::HealthBoard`], and keeps its records through
//! [`crate::ports::alert_state::AlertStateStore`]; `app` plugs the store and the hub in.
//!
//! - [`rules`]: the rule file, the defaults, validation; [`metric`]: what a rule can watch;
//!   `nesting`: the file's nesting depth, counted before the YAML parser reads it.
//! - [`observe`]: the inputs of one evaluation and each rule's value; [`eval`]: the state machine.
//! - [`engine`]: the evaluation task; [`deliver`]: the receivers' tasks; [`notify`]: their formats.
//! - [`export`]: the same rules as a Prometheus rule file.
//! - [`runway`]: each variant's quota runway per evaluation (`quota_runway_seconds`,
//!   `/api/quota`); [`objectives`]: the `slos:` evaluated per evaluation, and their burn-rate
//!   alerts as generated rules.

pub mod costs;
pub(crate) mod deliver;
pub(crate) mod engine;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod metric;
mod nesting;
pub mod notify;
pub mod objectives;
pub mod observe;
pub mod rules;
pub mod runway;
mod windows;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::phase::AlertPhase;
use crate::setting::{ConfigError, bad, duration_ms};
pub use deliver::{Format, ReceiverStats};
pub(crate) use engine::{AlertView, Deps, Snapshot};
pub(crate) use observe::Feed;
pub(crate) use rules::{Rule, Scope};

/// How often Alertmanager hears a firing alert again.
pub(crate) const RESEND_INTERVAL: Duration = Duration::from_secs(30);

/// The alerts' part of the configuration; `config` composes it.
#[derive(Clone)]
pub struct AlertSettings {
    /// Validated rules (the built-in defaults without `ALERT_RULES`).
    pub rules: Vec<Rule>,
    /// Service level objectives of the rules file's `slos:` list (none built in).
    pub slos: Vec<crate::budget::slo::SloSpec>,
    /// `BUDGET_DAILY_USD` and `BUDGET_MONTHLY_USD` (each `None` when not set).
    pub budgets: crate::budget::spend::Budgets,
    /// Alertmanager's base URL (`ALERTMANAGER_URL`).
    pub alertmanager_url: Option<url::Url>,
    /// A webhook (`ALERT_WEBHOOK_URL`), in `webhook_format`.
    pub webhook_url: Option<url::Url>,
    /// Alertmanager's webhook JSON or Slack's text.
    pub webhook_format: Format,
    /// How often Alertmanager hears a firing alert again (30 s; tests shorten it).
    pub resend_interval: Duration,
    /// First retry delay after a failed delivery, doubled per failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl std::fmt::Debug for AlertSettings {
    /// A webhook URL may be a secret (Slack's are): only origins are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSettings")
            .field("rules", &self.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .field("slos", &self.slos.iter().map(|s| s.name.as_str()).collect::<Vec<_>>())
            .field("budgets", &self.budgets)
            .field("alertmanager", &self.alertmanager_url.as_ref().map(deliver::origin))
            .field("webhook", &self.webhook_url.as_ref().map(deliver::origin))
            .field("webhook_format", &self.webhook_format)
            .finish()
    }
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            rules: rules::default_rules(),
            slos: Vec::new(),
            budgets: Default::default(),
            alertmanager_url: None,
            webhook_url: None,
            webhook_format: Format::Webhook,
            resend_interval: RESEND_INTERVAL,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// The alert settings as given (flags or environment), before validation.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertArgs<'a> {
    /// `ALERT_RULES`: a YAML file; empty or absent means the built-in rules.
    pub rules_path: Option<&'a Path>,
    /// `ALERTMANAGER_URL`.
    pub alertmanager_url: Option<&'a str>,
    /// `ALERT_WEBHOOK_URL`.
    pub webhook_url: Option<&'a str>,
    /// `ALERT_WEBHOOK_FORMAT`: `alertmanager` (default) or `slack`.
    pub webhook_format: Option<&'a str>,
    /// `BUDGET_DAILY_USD`: empty or absent means none.
    pub budget_daily_usd: Option<&'a str>,
    /// `BUDGET_MONTHLY_USD`: empty or absent means none.
    pub budget_monthly_usd: Option<&'a str>,
}

impl AlertSettings {
    /// Reads the rule file and checks every value; each problem is one sentence naming the
    /// setting (and for a rule, the rule and its field).
    pub(crate) fn validate(args: &AlertArgs<'_>) -> Result<Self, ConfigError> {
        let rules::RulesFile { rules, slos } = match args.rules_path.filter(|p| !p.as_os_str().is_empty()) {
            None => rules::RulesFile { rules: rules::default_rules(), slos: Vec::new() },
            Some(path) => rules::parse_rules_file(&read_rules_file(path)?, &path.display().to_string())?,
        };
        let webhook_format = match args.webhook_format.map(str::trim).filter(|s| !s.is_empty()) {
            None | Some("alertmanager") => Format::Webhook,
            Some("slack") => Format::Slack,
            Some(other) => {
                return Err(bad(format!("ALERT_WEBHOOK_FORMAT {other:?} is not one of alertmanager, slack.")));
            }
        };
        let budgets = crate::budget::spend::Budgets {
            daily_usd: budget_usd("BUDGET_DAILY_USD", args.budget_daily_usd)?,
            monthly_usd: budget_usd("BUDGET_MONTHLY_USD", args.budget_monthly_usd)?,
        };
        Ok(Self {
            rules,
            slos,
            budgets,
            alertmanager_url: http_url("ALERTMANAGER_URL", args.alertmanager_url)?,
            webhook_url: http_url("ALERT_WEBHOOK_URL", args.webhook_url)?,
            webhook_format,
            ..Self::default()
        })
    }
}

/// The rules file's text, read no further than one byte past [`rules::MAX_FILE_BYTES`] (a
/// file that grows, or a device, is not read whole to find out).
fn read_rules_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| bad(format!("ALERT_RULES {}: cannot read the file ({e}).", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(rules::MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() > rules::MAX_FILE_BYTES {
        return Err(rules::too_large(&path.display().to_string()));
    }
    String::from_utf8(bytes)
        .map_err(|_| bad(format!("ALERT_RULES {}: cannot read the file (it is not UTF-8 text).", path.display())))
}

/// An optional budget in USD: a positive, finite number.
fn budget_usd(setting: &str, value: Option<&str>) -> Result<Option<f64>, ConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    match v.parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 => Ok(Some(usd)),
        _ => Err(bad(format!("{setting} {v:?} is not an amount of US dollars above 0, like 250 or 49.90."))),
    }
}

/// An optional http(s) URL setting; the message never repeats a value that may be a secret.
fn http_url(setting: &str, value: Option<&str>) -> Result<Option<url::Url>, ConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Some(u)),
        _ => Err(bad(format!("{setting} is not an http:// or https:// URL."))),
    }
}

/// One receiver as the page shows it.
#[derive(Debug, Clone)]
pub(crate) struct ReceiverView {
    /// `alertmanager` or `webhook`.
    pub name: &'static str,
    /// `alertmanager`, `webhook` or `slack`.
    pub format: &'static str,
    /// Scheme, host and port.
    pub origin: String,
    /// Notifications delivered.
    pub sent: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Notifications dropped (mailbox full).
    pub dropped: u64,
    /// Waiting to be sent.
    pub queued: usize,
    /// Last success, Unix ms.
    pub last_success_ms: Option<i64>,
    /// Last failure, Unix ms, and why.
    pub last_error: Option<(i64, String)>,
}

/// Handle on the alerts: the web layer reads it, `app` starts its tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Alerts {
    rules: Arc<Vec<Rule>>,
    settings: Arc<AlertSettings>,
    shared: Arc<RwLock<Snapshot>>,
    receivers: Vec<(Arc<ReceiverStats>, Arc<deliver::Mailbox>)>,
    feed: Arc<Feed>,
}

impl Alerts {
    /// The alerts of `settings`, with no task running yet (see [`Alerts::spawn`]).
    pub fn new(settings: &AlertSettings) -> Self {
        let mut receivers = Vec::new();
        let mut add = |name, format, url: &Option<url::Url>| {
            if let Some(u) = url {
                let stats = ReceiverStats {
                    name,
                    format,
                    origin: deliver::origin(u),
                    sent: Default::default(),
                    failures: Default::default(),
                    dropped: Default::default(),
                    last: Mutex::default(),
                };
                receivers.push((Arc::new(stats), Arc::new(deliver::Mailbox::default())));
            }
        };
        add("alertmanager", Format::Alertmanager, &settings.alertmanager_url);
        add("webhook", settings.webhook_format, &settings.webhook_url);
        let mut rules = settings.rules.clone();
        rules.extend(objectives::burn_rules(&settings.slos));
        rules.extend(costs::budget_rules(&settings.budgets));
        Self {
            rules: Arc::new(rules),
            settings: Arc::new(settings.clone()),
            shared: Arc::default(),
            receivers,
            feed: Arc::default(),
        }
    }

    /// Where the writer publishes live points (the engine's ticks).
    pub(crate) fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    /// The rules, in file order.
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The last evaluation's view.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.shared.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Alerts firing now.
    pub(crate) fn firing(&self) -> Vec<AlertView> {
        self.snapshot().alerts.into_iter().filter(|a| a.record.phase == AlertPhase::Firing).collect()
    }

    /// Every receiver's counters and last outcomes.
    pub(crate) fn receivers(&self) -> Vec<ReceiverView> {
        self.receivers
            .iter()
            .map(|(s, mailbox)| {
                let last = s.last.lock().map(|l| l.clone()).unwrap_or_default();
                ReceiverView {
                    name: s.name,
                    format: match s.format {
                        Format::Alertmanager => "alertmanager",
                        Format::Webhook => "webhook",
                        Format::Slack => "slack",
                    },
                    origin: s.origin.clone(),
                    sent: s.sent.load(Ordering::Relaxed),
                    failures: s.failures.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    queued: mailbox.len(),
                    last_success_ms: last.success_ms,
                    last_error: last.error,
                }
            })
            .collect()
    }

    /// Pending and firing alerts in Prometheus' `/api/v1/alerts` shape.
    pub(crate) fn prometheus_json(&self) -> serde_json::Value {
        let alerts: Vec<serde_json::Value> = self
            .snapshot()
            .alerts
            .iter()
            .filter(|a| matches!(a.record.phase, AlertPhase::Pending | AlertPhase::Firing))
            .filter_map(|a| {
                self.rules.iter().find(|r| r.name == a.record.rule).map(|r| engine::prometheus_alert(r, &a.record))
            })
            .collect();
        serde_json::json!({ "status": "success", "data": { "alerts": alerts } })
    }

    /// Starts the engine and one task per receiver on `tracker`; they stop with `stop`.
    /// `interval` is the live point interval: evaluations happen on each tick, or two intervals
    /// after the last one when no tick comes.
    pub(crate) fn spawn(
        &self,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        deps: Deps,
        interval: Duration,
    ) -> Result<(), reqwest::Error> {
        let (ack_tx, ack_rx) = tokio::sync::mpsc::channel(deliver::MAILBOX_ALERTS);
        let s = &self.settings;
        let timing =
            deliver::Timing { retry_base: s.retry_base, retry_max: s.retry_max, valid_for: 4 * s.resend_interval };
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let mut outlets = Vec::new();
        for (stats, mailbox) in &self.receivers {
            let url = match stats.name {
                "alertmanager" => s.alertmanager_url.clone(),
                _ => s.webhook_url.clone(),
            };
            let Some(url) = url else { continue };
            let receiver = deliver::Receiver {
                stats: stats.clone(),
                mailbox: mailbox.clone(),
                url,
                client: client.clone(),
                timing,
                acks: ack_tx.clone(),
                clock: deps.clock.clone(),
            };
            tracker.spawn(receiver.run(stop.clone()));
            let repeat = (stats.format == Format::Alertmanager).then(|| duration_ms(s.resend_interval));
            outlets.push(engine::Outlet::new(stats.clone(), mailbox.clone(), repeat));
        }
        let stale_ms = 3 * duration_ms(interval);
        let engine = engine::Engine::new(self.rules.clone(), deps, outlets, self.shared.clone(), stale_ms)
            .with_objectives(s.slos.clone())
            .with_budgets(s.budgets);
        tracker.spawn(engine.run(ack_rx, stop.clone(), 2 * interval));
        Ok(())
    }
}
