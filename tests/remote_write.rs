//! Remote write out against real receivers on loopback: Debian's `prometheus` with
//! `--web.enable-remote-write-receiver` and `victoria-metrics`, both started by the tests.
//!
//! The fake pods here number their answers: the `n`-th exposition a pod serves carries values
//! computed from `n` (requests `10n`, a histogram, a gauge `n % 5`), so every sample a receiver
//! stores says which scrape it came from, and the tests check each sample's value against the
//! exposition of that scrape, the labels against the exposition's (plus `variant` resolved and
//! `instance`), and the number of samples against zai-dash's own count of successful scrapes:
//! nothing lost, nothing twice.

mod common;
mod engines;
mod self_metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::*;
use engines::{Engine, Labels};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::remote::RemoteSettings;

/// A pod whose `n`-th answer is [`exposition`]`(n)`; answers 503 (without counting) when down.
struct CountingPod {
    url: String,
    instance: String,
    /// The `variant` label it exports.
    label: String,
    served: Arc<AtomicU64>,
    up: Arc<AtomicBool>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct PodState {
    label: String,
    served: Arc<AtomicU64>,
    up: Arc<AtomicBool>,
}

async fn pod_metrics(State(s): State<PodState>) -> axum::response::Response {
    if !s.up.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let n = s.served.fetch_add(1, Ordering::SeqCst) + 1;
    ([("content-type", "text/plain; version=0.0.4")], exposition(n, &s.label)).into_response()
}

impl CountingPod {
    async fn start(label: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state =
            PodState { label: label.into(), served: Arc::new(AtomicU64::new(0)), up: Arc::new(AtomicBool::new(true)) };
        let cancel = CancellationToken::new();
        let app = Router::new().route("/metrics", get(pod_metrics)).with_state(state.clone());
        let c = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/metrics"),
            instance: addr.to_string(),
            label: label.into(),
            served: state.served,
            up: state.up,
            cancel,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
    }
}

impl Drop for CountingPod {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `(family, type, sample name, labels, value)` of the `n`-th answer.
type Line = (&'static str, &'static str, String, Vec<(&'static str, String)>, f64);

fn lines(n: u64, label: &str) -> Vec<Line> {
    let n_f = n as f64;
    let v = || ("variant", label.to_owned());
    let hist = "zai_proxy_request_duration_seconds";
    let mut out: Vec<Line> = vec![
        ("go_goroutines", "gauge", "go_goroutines".into(), vec![], 7.0),
        ("zai_proxy_build_info", "gauge", "zai_proxy_build_info".into(), vec![v(), ("version", "1.2.3".into())], 1.0),
        ("zai_proxy_concurrent_requests", "gauge", "zai_proxy_concurrent_requests".into(), vec![v()], (n % 5) as f64),
        ("zai_proxy_max_workers", "gauge", "zai_proxy_max_workers".into(), vec![v()], 10.0),
        (
            "zai_proxy_requests_total",
            "counter",
            "zai_proxy_requests_total".into(),
            vec![("status_code", "200".into()), v()],
            10.0 * n_f,
        ),
        (
            "zai_proxy_requests_total",
            "counter",
            "zai_proxy_requests_total".into(),
            vec![("instance", "inner".into()), ("status_code", "500".into()), v()],
            n_f,
        ),
    ];
    for (le, count) in [("0.1", 4.0 * n_f), ("1", 9.0 * n_f), ("+Inf", 10.0 * n_f)] {
        out.push((hist, "histogram", format!("{hist}_bucket"), vec![("le", le.into()), v()], count));
    }
    out.push((hist, "histogram", format!("{hist}_sum"), vec![v()], 2.5 * n_f));
    out.push((hist, "histogram", format!("{hist}_count"), vec![v()], 10.0 * n_f));
    out
}

fn exposition(n: u64, label: &str) -> String {
    let mut text = String::new();
    let mut typed = BTreeSet::new();
    for (family, kind, name, labels, value) in lines(n, label) {
        if typed.insert(family) {
            text += &format!("# TYPE {family} {kind}\n");
        }
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        text += &format!("{name}{{{}}} {value}\n", pairs.join(","));
    }
    text
}

/// The series a receiver should hold for the `n`-th scrape: `zai_proxy_*` only, the resolved
/// variant, the pod's `instance`, its own `instance` label renamed.
fn expected(n: u64, pod: &CountingPod, variant: &str) -> BTreeMap<Labels, f64> {
    lines(n, &pod.label)
        .into_iter()
        .filter(|(family, ..)| family.starts_with("zai_proxy_"))
        .map(|(_, _, name, labels, value)| {
            let mut l: Labels = labels
                .into_iter()
                .map(|(k, v)| (if k == "instance" { "exported_instance" } else { k }.to_owned(), v))
                .collect();
            l.insert("__name__".into(), name);
            l.insert("variant".into(), variant.into());
            l.insert("instance".into(), pod.instance.clone());
            (l, value)
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Fast retries, a short gathering window: outages of a few seconds in tests.
fn remote(url: &str) -> RemoteSettings {
    let mut r = RemoteSettings::new(url.parse().unwrap());
    r.min_backoff = Duration::from_millis(100);
    r.max_backoff = Duration::from_millis(800);
    r.append_window = Duration::from_millis(50);
    r.timeout = Duration::from_secs(5);
    r
}

fn app_settings(dir: &tempfile::TempDir, entries: &[String], url: &str) -> zai_dash::config::Settings {
    let mut s = settings(dir, targets(entries));
    // Loopback answers in microseconds; a roomy timeout keeps a starved CI machine from
    // turning a served answer into a failed scrape.
    s.scrape_interval = Duration::from_millis(250);
    s.scrape_timeout = Duration::from_millis(240);
    s.remote = Some(remote(url));
    s
}

/// `zai_dash_*` samples from one `/metrics` answer (`name{labels}` as written there), read
/// together so they describe one moment; a missing series fails the test (it is never read as
/// 0, which would let `== 0` checks pass when a metric disappears).
async fn self_metrics<const N: usize>(app: &TestApp, series: [&str; N]) -> [f64; N] {
    self_metrics::read(&app.base, series).await
}

async fn self_metric(app: &TestApp, series: &str) -> f64 {
    self_metrics::read_one(&app.base, series).await
}

async fn successful_scrapes(app: &TestApp, pod: &CountingPod) -> u64 {
    self_metric(app, &format!("zai_dash_scrapes_total{{result=\"success\",target=\"{}\"}}", pod.url)).await as u64
}

/// Failed scrapes of `pod`, every kind of failure together (a kind appears once it happened,
/// so none is 0; the pod's success series must be there, or the pod is not scraped at all).
async fn failed_scrapes(app: &TestApp, pod: &CountingPod) -> u64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let success = format!("zai_dash_scrapes_total{{result=\"success\",target=\"{}\"}}", pod.url);
    assert!(self_metrics::value(&text, &success).is_some(), "{success} is missing from /metrics:\n{text}");
    let target = format!("target=\"{}\"}}", pod.url);
    text.lines()
        .filter(|l| {
            l.starts_with("zai_dash_scrapes_total{") && !l.contains("result=\"success\"") && l.contains(&target)
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

/// Takes the pods down and waits until zai-dash has recorded a failed scrape of each: a
/// target's scrapes run one after another, so every successful one before it is then counted
/// (and its samples offered to remote write). A fixed sleep was not enough on a loaded machine.
async fn stop_pods(app: &TestApp, pods: &[&CountingPod]) {
    for p in pods {
        let before = failed_scrapes(app, p).await;
        p.down();
        wait_for("a failed scrape of the stopped pod", Duration::from_secs(30), || async {
            failed_scrapes(app, p).await > before
        })
        .await;
    }
}

/// Stops the pods' traffic and waits until zai-dash has handed everything to the receiver.
async fn drain(app: &TestApp, pods: &[&CountingPod]) {
    stop_pods(app, pods).await;
    wait_for("the remote write queue to empty", Duration::from_secs(30), || async {
        self_metric(app, "zai_dash_remote_write_queue_samples").await == 0.0
            && self_metric(app, "zai_dash_remote_write_samples_sent_total").await > 0.0
    })
    .await;
}

/// Checks what `engine` holds for `pod`: exactly `scrapes` samples per series (one per
/// successful scrape), the series of the exposition, every value that of its scrape.
async fn verify_pod(engine: &Engine, pod: &CountingPod, variant: &str, scrapes: u64, since_ms: i64) {
    let held = engine.raw(&format!("{{instance=\"{}\"}}", pod.instance), since_ms, now_ms()).await;
    let counter = held
        .iter()
        .find(|(l, _)| {
            l["__name__"] == "zai_proxy_requests_total" && l.get("status_code").map(String::as_str) == Some("200")
        })
        .unwrap_or_else(|| panic!("{:?}: no requests series for {} in {held:?}", engine.kind, pod.instance));
    let scrape_at: BTreeMap<i64, u64> = counter.1.iter().map(|(t, v)| (*t, (*v / 10.0) as u64)).collect();
    let last = *scrape_at.values().max().unwrap();
    let want = expected(last, pod, variant);
    let got: BTreeSet<&Labels> = held.iter().map(|(l, _)| l).collect();
    assert_eq!(got, want.keys().collect::<BTreeSet<_>>(), "{:?}: series of {}", engine.kind, pod.instance);
    for (labels, samples) in &held {
        assert_eq!(samples.len() as u64, scrapes, "{:?}: samples of {labels:?} vs successful scrapes", engine.kind);
        for (t, v) in samples {
            let n = scrape_at[t];
            assert_eq!(*v, expected(n, pod, variant)[labels], "{:?}: {labels:?} at {t} (scrape {n})", engine.kind);
        }
    }
    let ns: Vec<u64> = scrape_at.values().copied().collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "{:?}: scrapes in time order: {ns:?}", engine.kind);
}

/// Every series of two pods (one with an explicit variant, one named by its label) arrives in
/// the receiver with the right labels and the value of its scrape.
async fn round_trip(engine: Engine) {
    let since = now_ms() - 1_000;
    let (labelled, explicit) = (CountingPod::start("Canary").await, CountingPod::start("production").await);
    let dir = tempfile::tempdir().unwrap();
    let entries = [labelled.url.clone(), format!("blue={}", explicit.url)];
    let app = TestApp::start(app_settings(&dir, &entries, &engine.write_url())).await;
    wait_for("a few scrapes of each pod", Duration::from_secs(30), || async {
        labelled.served() >= 8 && explicit.served() >= 8
    })
    .await;
    drain(&app, &[&labelled, &explicit]).await;
    let (a, b) = (successful_scrapes(&app, &labelled).await, successful_scrapes(&app, &explicit).await);
    verify_pod(&engine, &labelled, "canary", a, since).await;
    verify_pod(&engine, &explicit, "blue", b, since).await;
    let names = engine.label_values("__name__", "{__name__=~\".+\"}").await;
    assert!(!names.iter().any(|n| n.starts_with("go_")), "only zai_proxy_* series are shipped: {names:?}");
    assert_eq!(self_metric(&app, "zai_dash_remote_write_samples_failed_total").await, 0.0);
    assert_eq!(self_metric(&app, "zai_dash_remote_write_samples_dropped_total").await, 0.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_reaches_prometheus_with_its_labels_and_values() {
    round_trip(Engine::prometheus(&[], 1_000).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_reaches_victoria_metrics_with_its_labels_and_values() {
    round_trip(Engine::victoria().await).await;
}

/// The receiver is killed while zai-dash keeps scraping, then restarted on its data: the
/// samples of the outage arrive late, and the stored series has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_outage_leaves_no_gap() {
    let since = now_ms() - 1_000;
    let mut engine = Engine::prometheus(&[], 1_000).await;
    let pod = CountingPod::start("production").await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(app_settings(&dir, std::slice::from_ref(&pod.url), &engine.write_url())).await;
    wait_for("samples sent", Duration::from_secs(30), || async {
        self_metric(&app, "zai_dash_remote_write_samples_sent_total").await > 0.0
    })
    .await;
    engine.kill();
    let (killed_at, killed_ms) = (pod.served(), now_ms());
    // The outage lasts 12 scrapes (3 s at 250 ms; longer on a loaded machine), during which
    // scraping goes on and samples wait.
    wait_for("12 scrapes during the outage", Duration::from_secs(30), || async { pod.served() >= killed_at + 12 })
        .await;
    assert!(self_metric(&app, "zai_dash_remote_write_queue_samples").await > 0.0, "samples wait in the queue");
    wait_for("the queue to age past 1 s", Duration::from_secs(30), || async {
        self_metric(&app, "zai_dash_remote_write_queue_age_seconds").await > 1.0
    })
    .await;
    let page = reqwest::get(app.url("/targets")).await.unwrap().text().await.unwrap();
    assert!(page.contains("Remote write") && page.contains(&engine.write_url()), "the /targets block");
    assert!(page.contains("request failed"), "the last error is shown");
    let (outage_scrapes, restarted_ms) = (pod.served() - killed_at, now_ms());
    engine.restart().await;
    drain(&app, &[&pod]).await;
    let scrapes = successful_scrapes(&app, &pod).await;
    verify_pod(&engine, &pod, "production", scrapes, since).await;
    let held = engine.raw(&format!("zai_proxy_max_workers{{instance=\"{}\"}}", pod.instance), since, now_ms()).await;
    // No gap: the scrapes of the outage are stored (one or two at its edges may fall outside
    // the window the test measured).
    let during = held[0].1.iter().filter(|(t, _)| (killed_ms..restarted_ms).contains(t)).count() as u64;
    assert!(during + 2 >= outage_scrapes, "{during} samples stored from the outage's {outage_scrapes} scrapes");
    assert_eq!(self_metric(&app, "zai_dash_remote_write_samples_dropped_total").await, 0.0);
    app.stop().await;
}

/// Samples queued while the receiver was unreachable survive a restart of zai-dash and are
/// shipped by the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_samples_ship_after_a_restart() {
    let since = now_ms() - 1_000;
    let mut engine = Engine::victoria_not_started(engines::free_port());
    let pod = CountingPod::start("production").await;
    let dir = tempfile::tempdir().unwrap();
    let entries = [pod.url.clone()];
    let first = TestApp::start(app_settings(&dir, &entries, &engine.write_url())).await;
    wait_for("scrapes with the receiver down", Duration::from_secs(30), || async { pod.served() >= 8 }).await;
    stop_pods(&first, &[&pod]).await;
    let scrapes = successful_scrapes(&first, &pod).await;
    let queued = self_metric(&first, "zai_dash_remote_write_queue_samples").await;
    assert_eq!(queued, (scrapes * expected(1, &pod, "production").len() as u64) as f64, "all of it queued");
    first.stop().await;
    engine.restart().await;
    let second = TestApp::start(app_settings(&dir, &entries, &engine.write_url())).await;
    drain(&second, &[&pod]).await;
    assert_eq!(self_metric(&second, "zai_dash_remote_write_samples_sent_total").await, queued);
    verify_pod(&engine, &pod, "production", scrapes, since).await;
    second.stop().await;
}

/// What the scripted receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
    request: zai_dash::remote::wire::WriteRequest,
}

#[derive(Clone, Default)]
struct Script {
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// 429 with `Retry-After: 1`, then 400, then 200 for ever.
async fn scripted(State(s): State<Script>, headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    let request = zai_dash::remote::wire::decode_body(&body).unwrap();
    let mut seen = s.seen.lock().unwrap();
    seen.push(Seen { at: Instant::now(), headers, request });
    match seen.len() {
        1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response(),
        2 => (StatusCode::BAD_REQUEST, "out of order sample").into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

fn first_ts(s: &Seen) -> i64 {
    s.request.timeseries.iter().flat_map(|t| &t.samples).map(|x| x.timestamp).min().unwrap()
}

fn last_ts(s: &Seen) -> i64 {
    s.request.timeseries.iter().flat_map(|t| &t.samples).map(|x| x.timestamp).max().unwrap()
}

/// The protocol's headers and credentials, `Retry-After` honoured on 429, and a 400 dropping
/// its request instead of blocking the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_retry_after_and_refusals() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/push", listener.local_addr().unwrap());
    let script = Script::default();
    let app = Router::new().route("/api/v1/push", post(scripted)).with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let pod = CountingPod::start("production").await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = app_settings(&dir, std::slice::from_ref(&pod.url), &url);
    let r = s.remote.as_mut().unwrap();
    r.auth = zai_dash::remote::Auth::Bearer(zai_dash::setting::Secret::new("s3cret-token"));
    r.headers = vec![("X-Scope-OrgID".into(), zai_dash::setting::Secret::new("team-a"))];
    let app = TestApp::start(s).await;
    wait_for("four requests", Duration::from_secs(30), || async { script.seen.lock().unwrap().len() >= 4 }).await;
    let seen = script.seen.lock().unwrap().clone();
    let h = &seen[0].headers;
    for (name, value) in [
        ("content-encoding", "snappy"),
        ("content-type", "application/x-protobuf"),
        ("x-prometheus-remote-write-version", "0.1.0"),
        ("authorization", "Bearer s3cret-token"),
        ("x-scope-orgid", "team-a"),
    ] {
        assert_eq!(h.get(name).and_then(|v| v.to_str().ok()), Some(value), "header {name}");
    }
    let labels: Vec<&str> = seen[0].request.timeseries[0].labels.iter().map(|l| l.name()).collect();
    assert!(labels.windows(2).all(|w| w[0] < w[1]) && labels.contains(&"__name__"), "sorted labels: {labels:?}");
    // A lower bound only (the behaviour is a wait of at least 1 s); load can only lengthen it.
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 honoured (waited {waited:?})");
    assert_eq!(first_ts(&seen[1]), first_ts(&seen[0]), "the 429'd request is sent again");
    assert!(first_ts(&seen[2]) > last_ts(&seen[1]), "the refused request is dropped, the queue moves on");
    let refused: usize = seen[1].request.timeseries.len();
    wait_for("the refusal counted", Duration::from_secs(30), || async {
        self_metric(&app, "zai_dash_remote_write_samples_failed_total").await == refused as f64
    })
    .await;
    let page = reqwest::get(app.url("/targets")).await.unwrap().text().await.unwrap();
    assert!(page.contains("400 Bad Request: out of order sample"), "the last error is shown");
    assert!(!page.contains("s3cret-token") && !page.contains("team-a"), "no secret on the page");
    app.stop().await;
}

/// With the receiver gone for longer than `REMOTE_WRITE_MAX_BACKLOG`, the oldest samples are
/// dropped and counted: the queue stays within the limit and every sample is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_limit_drops_and_counts_the_oldest() {
    let pod = CountingPod::start("production").await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = app_settings(&dir, std::slice::from_ref(&pod.url), &dead_url().await);
    s.remote.as_mut().unwrap().max_backlog = Duration::from_secs(1);
    let started = Instant::now();
    let app = TestApp::start(s).await;
    wait_for("samples dropped by the backlog limit", Duration::from_secs(30), || async {
        self_metric(&app, "zai_dash_remote_write_samples_dropped_total").await > 0.0
    })
    .await;
    // Deliberate: scraping goes on until the first samples are 8 s old, twice the bound below,
    // so a queue that kept them would fail it.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    // The limit is the behaviour under test: the oldest queued sample is at most 1 s old plus
    // the time between two drop passes (one per retry, 800 ms at most here); 3 s more absorb a
    // loaded machine.
    let age = self_metric(&app, "zai_dash_remote_write_queue_age_seconds").await;
    assert!(age < 1.0 + 3.0, "the queue stays within the limit: its oldest sample is {age} s old");
    stop_pods(&app, &[&pod]).await;
    let per_scrape = expected(1, &pod, "production").len() as f64;
    let scraped = successful_scrapes(&app, &pod).await as f64 * per_scrape;
    let [queued, dropped] =
        self_metrics(&app, ["zai_dash_remote_write_queue_samples", "zai_dash_remote_write_samples_dropped_total"])
            .await;
    assert_eq!(queued + dropped, scraped, "every sample is queued or counted as dropped");
    assert_eq!(self_metric(&app, "zai_dash_remote_write_samples_sent_total").await, 0.0);
    app.stop().await;
}

#[derive(Clone, Default)]
struct Hanging {
    hang: Arc<AtomicBool>,
    taken: Arc<Mutex<Vec<zai_dash::remote::wire::WriteRequest>>>,
    arrived: Arc<AtomicU64>,
}

/// Hangs while `hang` is set (a receiver that stopped answering); else takes the request.
async fn hanging(State(s): State<Hanging>, body: axum::body::Bytes) -> StatusCode {
    s.arrived.fetch_add(1, Ordering::SeqCst);
    if s.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    s.taken.lock().unwrap().push(zai_dash::remote::wire::decode_body(&body).unwrap());
    StatusCode::NO_CONTENT
}

/// zai-dash stops while a request hangs: the samples of that request and those gathered in
/// memory since are written to the database, and the next start ships them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_request_keeps_its_samples() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    let receiver = Hanging::default();
    receiver.hang.store(true, Ordering::SeqCst);
    let app = Router::new().route("/api/v1/write", post(hanging)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let pod = CountingPod::start("production").await;
    let dir = tempfile::tempdir().unwrap();
    let entries = [pod.url.clone()];
    let first = TestApp::start(app_settings(&dir, &entries, &url)).await;
    wait_for("a request under way", Duration::from_secs(30), || async {
        receiver.arrived.load(Ordering::SeqCst) >= 1 && pod.served() >= 6
    })
    .await;
    stop_pods(&first, &[&pod]).await;
    let scrapes = successful_scrapes(&first, &pod).await;
    first.stop().await;
    receiver.hang.store(false, Ordering::SeqCst);
    let second = TestApp::start(app_settings(&dir, &entries, &url)).await;
    drain(&second, &[&pod]).await;
    let taken = receiver.taken.lock().unwrap().clone();
    let scrapes_seen: BTreeSet<i64> = taken
        .iter()
        .flat_map(|r| &r.timeseries)
        .filter(|t| t.labels.iter().any(|l| l.name == "status_code" && l.value == "200"))
        .flat_map(|t| t.samples.iter().map(|s| (s.value / 10.0) as i64))
        .collect();
    assert_eq!(scrapes_seen, (1..=scrapes as i64).collect(), "every scrape of the first run arrives after the restart");
    second.stop().await;
}
