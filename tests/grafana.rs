//! The Grafana dashboard: the committed `k8s/grafana/zai-dash.json` is what `zai-dash grafana`
//! generates from the overview's panels and the PromQL catalog, and every panel's query, with
//! the template variables filled in as Grafana does, parses and returns data on a real
//! Prometheus scraping fake pods that export every family the panels read.

mod engines;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use engines::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const COMMITTED: &str = include_str!("../k8s/grafana/zai-dash.json");
const FIXTURE: &str = include_str!("fixtures/zai-proxy-sample.prom");

#[test]
fn the_committed_dashboard_is_the_generated_one() {
    let generated = zai_dash::web::grafana::dashboard_json().unwrap();
    assert!(
        COMMITTED == generated,
        "k8s/grafana/zai-dash.json is out of date with the panels or the PromQL catalog; regenerate it:\n  \
         cargo run -- grafana > k8s/grafana/zai-dash.json"
    );
}

/// A real zai-proxy exposition (the fixture) plus a TTFT histogram, for variant `variant`,
/// every counter and histogram grown by 5 % of its fixture value per scrape: every rate the
/// panels draw is positive.
fn exposition(variant: &str, n: u64) -> String {
    let grown = 1.0 + 0.05 * n as f64;
    let ttft = "# TYPE zai_proxy_time_to_first_token_seconds histogram\n\
                zai_proxy_time_to_first_token_seconds_bucket{model=\"glm-4.7\",variant=\"production\",le=\"0.5\"} 10\n\
                zai_proxy_time_to_first_token_seconds_bucket{model=\"glm-4.7\",variant=\"production\",le=\"1\"} 20\n\
                zai_proxy_time_to_first_token_seconds_bucket{model=\"glm-4.7\",variant=\"production\",le=\"+Inf\"} 25\n\
                zai_proxy_time_to_first_token_seconds_sum{model=\"glm-4.7\",variant=\"production\"} 15\n\
                zai_proxy_time_to_first_token_seconds_count{model=\"glm-4.7\",variant=\"production\"} 25\n";
    let mut out = String::new();
    for line in FIXTURE.lines().chain(ttft.lines()) {
        let line = line.replace("variant=\"production\"", &format!("variant=\"{variant}\""));
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let cumulative = ["_total", "_bucket", "_sum", "_count"].iter().any(|s| name.ends_with(s));
        match line.rsplit_once(' ') {
            Some((series, value)) if !line.starts_with('#') && cumulative => {
                let v: f64 = value.parse().unwrap();
                out += &format!("{series} {}\n", v * grown);
            }
            _ => out += &format!("{line}\n"),
        }
    }
    out
}

struct Pod {
    instance: String,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct PodState {
    variant: &'static str,
    served: Arc<AtomicU64>,
}

async fn metrics(State(s): State<PodState>) -> String {
    exposition(s.variant, s.served.fetch_add(1, Ordering::SeqCst))
}

impl Pod {
    async fn start(variant: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let instance = listener.local_addr().unwrap().to_string();
        let state = PodState { variant, served: Arc::new(AtomicU64::new(0)) };
        let cancel = CancellationToken::new();
        let app = Router::new().route("/metrics", get(metrics)).with_state(state);
        let c = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await.unwrap();
        });
        Self { instance, cancel }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What Grafana puts in place of the variables: `All` is the `allValue` `.*`; a rate window of
/// four 1 s scrapes (Grafana's `$__rate_interval` floor); a 1 s step.
fn fill(expr: &str, variant: &str, pod: &str) -> String {
    expr.replace("$__rate_interval", "4s")
        .replace("$__interval", "1s")
        .replace("$variant", variant)
        .replace("$pod", pod)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_parses_and_returns_data_on_prometheus() {
    let (production, canary) = (Pod::start("production").await, Pod::start("canary").await);
    let prom = Engine::prometheus(&[production.instance.clone(), canary.instance.clone()], 1_000).await;
    // The panels' rates look 4 s back from each step of the last 4 s: wait until Prometheus
    // holds a dense 8 s of scrapes of both pods (later on a loaded machine, never too early).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for pod in [&production, &canary] {
        loop {
            let now = now_ms();
            let held = prom.raw(&format!("up{{instance=\"{}\"}}", pod.instance), now - 8_000, now).await;
            if held.first().is_some_and(|(_, samples)| samples.len() >= 7) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "Prometheus holds no 8 s of scrapes of {}", pod.instance);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let dashboard = zai_dash::web::grafana::dashboard().unwrap();
    let end = now_ms();
    let selections = [(".*", ".*", vec!["canary", "production"]), ("canary", canary.instance.as_str(), vec!["canary"])];
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let template = target["expr"].as_str().unwrap();
            for (variant, pod, want) in &selections {
                let expr = fill(template, variant, pod);
                let result = prom.range(&expr, end - 4_000, end, 1_000).await;
                let variants: Vec<&str> = result.iter().map(|(l, _)| l["variant"].as_str()).collect();
                assert_eq!(&variants, want, "{}: {expr} answered series {result:?}", panel["title"]);
                for (labels, values) in &result {
                    assert!(
                        values.iter().any(|(_, v)| v.is_finite()),
                        "{}: {expr} has no number for {labels:?}: {values:?}",
                        panel["title"]
                    );
                }
            }
        }
    }
    // The variables, as Grafana runs `label_values(selector, label)` (a label values call).
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let listed = |name: &str| {
        let v = vars.iter().find(|v| v["name"] == name).unwrap();
        let call = v["definition"].as_str().unwrap().strip_prefix("label_values(").unwrap().strip_suffix(')').unwrap();
        let (selector, label) = call.rsplit_once(", ").unwrap();
        (selector.to_owned(), label.to_owned())
    };
    let (selector, label) = listed("variant");
    let mut variants = prom.label_values(&label, &fill(&selector, ".*", ".*")).await;
    variants.sort();
    assert_eq!(variants, ["canary", "production"], "the variant variable lists both");
    let (selector, label) = listed("pod");
    let pods = prom.label_values(&label, &fill(&selector, "canary", ".*")).await;
    assert_eq!(pods, vec![canary.instance.clone()], "the pod variable follows the chosen variants");
}
