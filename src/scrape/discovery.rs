//! Pod discovery: a `dns+http://NAME:PORT/path` target re-resolves `NAME` every scrape interval
//! and scrapes every A/AAAA address as its own target (`http://ADDR:PORT/path`), stored and
//! shown per address. Behind a headless Service this reaches every replica; a normal Service
//! would hit a random pod per scrape and mix their counters.
//!
//! One supervisor task per entry owns the address set: it registers a new address in the
//! database, adds it to the health board and spawns its scrape task on a child token; when the
//! address vanishes it cancels that task and retires the health entry. A failed lookup keeps
//! the current set (a DNS hiccup must not make every pod vanish and come back as a gap).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use url::Url;

use super::increase::TargetState;
use super::target::{DNS_SCHEME_PREFIX, TargetSpec};
use super::{Ctx, Scraped, Target, scrape_loop};
use crate::health::TargetHealth;
pub use crate::ports::BoxFuture;
use crate::ports::ingest::{RegistryError, TargetRegistry};
use crate::redact::RedactedUrl;

/// Turns a host name into addresses. The seam that lets tests replace DNS.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// Every address of `host`, sorted and without duplicates.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

/// Most addresses scraped per `dns+` name.
pub const MAX_ADDRESSES: usize = 256;

/// A resolver shared between supervisors.
pub type SharedResolver = Arc<dyn Resolver>;

/// The system resolver (`getaddrinfo` through `tokio::net::lookup_host`): honours
/// `/etc/hosts` and the pod's DNS search domains.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, port)).await?;
            let set: BTreeSet<IpAddr> = addrs.map(|a| a.ip()).collect();
            Ok(set.into_iter().collect())
        })
    }
}

/// A resolver answering what the test set last; for tests.
#[derive(Debug)]
pub struct StaticResolver {
    answer: Mutex<Result<Vec<IpAddr>, String>>,
    /// Lookups answered so far: a test that checks what a lookup did *not* change waits for
    /// one to happen instead of sleeping.
    lookups: std::sync::atomic::AtomicU64,
}

impl StaticResolver {
    /// A resolver answering `addrs`.
    pub fn new(addrs: Vec<IpAddr>) -> Self {
        Self { answer: Mutex::new(Ok(addrs)), lookups: Default::default() }
    }

    /// Lookups answered so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answer `addrs` from now on.
    pub fn set(&self, addrs: Vec<IpAddr>) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Ok(addrs);
        }
    }

    /// Fail every lookup from now on with `message`.
    pub fn fail(&self, message: &str) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Err(message.to_owned());
        }
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer = match self.answer.lock() {
            Ok(a) => a.clone(),
            Err(_) => Err("resolver state poisoned".to_owned()),
        };
        Box::pin(async move {
            let mut addrs = answer.map_err(std::io::Error::other)?;
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    }
}

/// The scrape URL of one address of a `dns+` entry: scheme without `dns+`, the entry's
/// credentials, the address as host, the entry's port, path and query.
pub fn address_url(entry: &Url, ip: IpAddr) -> Option<Url> {
    let scheme = entry.scheme().strip_prefix(DNS_SCHEME_PREFIX)?;
    let port = entry.port()?;
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let query = entry.query().map(|q| format!("?{q}")).unwrap_or_default();
    // The entry's credentials (`dns+http://user:pass@name:port/...`) are every address's.
    let userinfo = match (entry.username(), entry.password()) {
        ("", None) => String::new(),
        (user, None) => format!("{user}@"),
        (user, Some(password)) => format!("{user}:{password}@"),
    };
    Url::parse(&format!("{scheme}://{userinfo}{host}:{port}{}{query}", entry.path())).ok()
}

/// What discovery needs besides the scrape context.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The `dns+` entries.
    pub entries: Vec<TargetSpec>,
    /// How names are resolved.
    pub resolver: SharedResolver,
    /// Where discovered addresses are registered.
    pub registry: Arc<dyn TargetRegistry>,
}

/// One running per-address scrape task.
struct Running {
    idx: usize,
    cancel: CancellationToken,
}

/// Everything a supervisor holds.
pub(super) struct Supervisor {
    pub(super) ctx: Arc<Ctx>,
    pub(super) entry: TargetSpec,
    pub(super) resolver: SharedResolver,
    pub(super) registry: Arc<dyn TargetRegistry>,
    pub(super) tx: mpsc::Sender<Scraped>,
    pub(super) tracker: TaskTracker,
    pub(super) cancel: CancellationToken,
}

impl Supervisor {
    /// Resolves every interval until cancelled, keeping one scrape task per address.
    pub(super) async fn run(self) {
        let host = self.entry.url.host_str().unwrap_or_default().to_owned();
        let port = self.entry.url.port().unwrap_or(0);
        let mut running: BTreeMap<IpAddr, Running> = BTreeMap::new();
        let mut failing = false;
        let mut capped = false;
        let mut interval = tokio::time::interval(self.ctx.settings.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            match self.resolver.resolve(&host, port).await {
                Ok(addrs) => {
                    if failing {
                        tracing::info!(name = %host, addresses = addrs.len(), "Name resolves again.");
                        failing = false;
                    }
                    self.reconcile(&mut running, &addrs, &mut capped).await;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(name = %host, error = %e, "Cannot resolve name; keeping the known addresses.");
                        failing = true;
                    }
                }
            }
        }
        for r in running.values() {
            r.cancel.cancel();
        }
    }

    /// Starts tasks for new addresses and stops those of vanished ones; at most
    /// [`MAX_ADDRESSES`] per name (a DNS answer must not be able to start thousands of tasks).
    async fn reconcile(&self, running: &mut BTreeMap<IpAddr, Running>, addrs: &[IpAddr], capped: &mut bool) {
        if addrs.len() > MAX_ADDRESSES && !*capped {
            tracing::warn!(entry = %RedactedUrl::from(&self.entry.url), addresses = addrs.len(), kept = MAX_ADDRESSES, "Name resolves to more addresses than are scraped; the rest are left out.");
        }
        *capped = addrs.len() > MAX_ADDRESSES;
        let wanted: BTreeSet<IpAddr> = addrs.iter().take(MAX_ADDRESSES).copied().collect();
        let gone: Vec<IpAddr> = running.keys().filter(|ip| !wanted.contains(ip)).copied().collect();
        for ip in gone {
            if let Some(r) = running.remove(&ip) {
                r.cancel.cancel();
                self.ctx.health.retire(r.idx);
                tracing::info!(address = %ip, entry = %RedactedUrl::from(&self.entry.url), "Address vanished; no longer scraped.");
            }
        }
        let interval = self.ctx.settings.interval;
        let new: Vec<IpAddr> = wanted.iter().filter(|ip| !running.contains_key(ip)).copied().collect();
        let n = new.len().max(1) as u32;
        for (i, ip) in new.into_iter().enumerate() {
            match self.start(ip, interval * i as u32 / n).await {
                Ok(r) => {
                    tracing::info!(address = %ip, entry = %RedactedUrl::from(&self.entry.url), "Address discovered; scraping it.");
                    running.insert(ip, r);
                }
                // Retried on the next resolution, because the address is still not running: at
                // most one line a minute while storage refuses.
                Err(e) => {
                    static NOT_REGISTERED: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();
                    if let Some(suppressed) = NOT_REGISTERED.admit() {
                        tracing::warn!(address = %ip, error = %e, suppressed, "Cannot register a discovered address.");
                    }
                }
            }
        }
    }

    /// Registers an address and spawns its scrape task.
    async fn start(&self, ip: IpAddr, offset: Duration) -> Result<Running, DiscoveryError> {
        let url = address_url(&self.entry.url, ip).ok_or(DiscoveryError::Url(ip))?;
        let variant = self.entry.initial_variant();
        let now = self.ctx.clock.now_ms();
        let stored = self.registry.register(url.as_str(), &variant, now).await.map_err(DiscoveryError::Store)?;
        let state = match super::persist::consolidate(stored.state.as_deref(), &stored.journal) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(address = %ip, error = %e, "Stored scrape state is unreadable; the next scrape is a new baseline.");
                TargetState::default()
            }
        };
        let spec = TargetSpec { url: url.clone(), variant: self.entry.variant.clone() };
        let idx = self
            .ctx
            .health
            .add(TargetHealth::new(stored.id, RedactedUrl::from(&url).to_string(), variant))
            .ok_or(DiscoveryError::NotRegistered(ip))?;
        let cancel = self.cancel.child_token();
        let target = Target {
            id: stored.id,
            spec,
            state,
            fallback_variant: Some(self.entry.initial_variant()),
            last_variant: None,
            last_success: None,
        };
        let span = tracing::info_span!("scrape", target_url = %RedactedUrl::from(&url));
        self.tracker.spawn(
            scrape_loop(self.ctx.clone(), idx, target, offset, self.tx.clone(), cancel.clone()).instrument(span),
        );
        Ok(Running { idx, cancel })
    }
}

/// Why a discovered address could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The address does not make a URL with the entry's parts.
    #[error("no scrape URL for address {0}")]
    Url(IpAddr),
    /// Storage refused the target.
    #[error("cannot register the address: {0}")]
    Store(RegistryError),
    /// The target was not found after registering it.
    #[error("address {0} was not registered")]
    NotRegistered(IpAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_urls_keep_credentials_port_path_and_query() {
        let entry = Url::parse("dns+http://zai-proxy:8080/metrics?x=1").unwrap();
        let v4 = address_url(&entry, "10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(v4.as_str(), "http://10.1.2.3:8080/metrics?x=1");
        let v6 = address_url(&entry, "fd00::1".parse().unwrap()).unwrap();
        assert_eq!(v6.as_str(), "http://[fd00::1]:8080/metrics?x=1");
        let https = Url::parse("dns+https://p:443/m").unwrap();
        assert_eq!(address_url(&https, "10.0.0.1".parse().unwrap()).unwrap().as_str(), "https://10.0.0.1/m");
        let secured = Url::parse("dns+http://u%40x:p%3Aw@zai-proxy:8080/metrics?token=t").unwrap();
        let addr = address_url(&secured, "10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(addr.as_str(), "http://u%40x:p%3Aw@10.1.2.3:8080/metrics?token=t", "credentials are kept");
        assert_eq!((addr.username(), addr.password()), ("u%40x", Some("p%3Aw")));
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let addrs = SystemResolver.resolve("localhost", 80).await.unwrap();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }

    #[tokio::test]
    async fn static_resolver_answers_what_was_set() {
        let r = StaticResolver::new(vec!["10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()]);
        assert_eq!(
            r.resolve("x", 1).await.unwrap(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "10.0.0.2".parse().unwrap()]
        );
        r.fail("NXDOMAIN");
        assert!(r.resolve("x", 1).await.is_err());
    }
}
