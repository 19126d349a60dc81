//! A real Prometheus process for the suite: generated config, temporary TSDB, loopback only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::process::{self, ChildGuard};

/// Labels of one result series.
pub type Labels = BTreeMap<String, String>;

/// A running Prometheus.
pub struct Prometheus {
    pub base: String,
    /// Killed (with anything it started) on drop, also when the test panics.
    _child: ChildGuard,
    /// The config and TSDB, removed on drop.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

const MISSING: &str = "Prometheus is not installed (no `prometheus` binary on PATH). The accuracy suite compares \
zai-dash with a real Prometheus: run scripts/test, which installs Debian's `prometheus` package, or \
`apt-get install -y prometheus`.";

fn binary() -> PathBuf {
    match process::run(Command::new("prometheus").arg("--version"), None, Duration::from_secs(30)) {
        Ok(out) if out.status.success() => PathBuf::from("prometheus"),
        _ => panic!("{MISSING}"),
    }
}

fn ms_to_s(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

impl Prometheus {
    /// Starts Prometheus scraping `instances` (`host:port`, path `/metrics`) every `interval_ms`.
    #[allow(dead_code)] // tests/source.rs's fakes answer on `/metrics`
    pub async fn start(instances: &[String], interval_ms: u64, timeout_ms: u64) -> Self {
        Self::start_at(instances, "/metrics", interval_ms, timeout_ms).await
    }

    /// Starts Prometheus scraping `instances` on `metrics_path` every `interval_ms`.
    pub async fn start_at(instances: &[String], metrics_path: &str, interval_ms: u64, timeout_ms: u64) -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = instances.iter().map(|i| format!("'{i}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {interval_ms}ms\n  scrape_timeout: {timeout_ms}ms\n\
             scrape_configs:\n  - job_name: zai\n    honor_timestamps: true\n    metrics_path: '{metrics_path}'\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        for attempt in 0..3 {
            // Prometheus cannot report a port it chose itself: take a free one and hand it over.
            // If another process grabs it in between, Prometheus exits and we try another.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = std::fs::File::create(dir.path().join(format!("prometheus-{attempt}.log"))).unwrap();
            let mut child = process::spawn(
                Command::new(&bin)
                    .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
                    .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--storage.tsdb.retention.time=1d")
                    .arg("--log.level=warn")
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}. {MISSING}"));
            let base = format!("http://127.0.0.1:{port}");
            if wait_ready(&http, &base, &mut child).await {
                return Self { base, _child: child, _dir: dir, http };
            }
            let log = std::fs::read_to_string(dir.path().join(format!("prometheus-{attempt}.log"))).unwrap_or_default();
            eprintln!("prometheus attempt {attempt} did not become ready:\n{log}");
            child.kill();
        }
        panic!("Prometheus did not start (see the logs above)");
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> Value {
        let url = format!("{}{path}", self.base);
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success() && body["status"] == "success", "Prometheus {path} {params:?}: {status} {body}");
        body["data"].clone()
    }

    /// `query_range` from `start_ms` to `end_ms` every `step_ms`: series -> (Unix ms, value).
    pub async fn range(&self, expr: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", ms_to_s(start_ms)),
                    ("end", ms_to_s(end_ms)),
                    ("step", ms_to_s(step_ms)),
                ],
            )
            .await;
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                (labels, r["values"].as_array().unwrap().iter().map(point).collect())
            })
            .collect()
    }

    /// Instant query at `t_ms`: a vector (series -> value) or, for a range selector, raw samples.
    pub async fn instant(&self, expr: &str, t_ms: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let data = self.api("/api/v1/query", &[("query", expr.to_owned()), ("time", ms_to_s(t_ms))]).await;
        let matrix = data["resultType"] == "matrix";
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let values = if matrix {
                    r["values"].as_array().unwrap().iter().map(point).collect()
                } else {
                    vec![point(&r["value"])]
                };
                (labels, values)
            })
            .collect()
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str, child: &mut ChildGuard) -> bool {
    for _ in 0..200 {
        if !child.running() {
            return false;
        }
        if let Ok(r) = http.get(format!("{base}/-/ready")).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn point(v: &Value) -> (i64, f64) {
    let t = v[0].as_f64().unwrap();
    let x = match v[1].as_str().unwrap() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    };
    ((t * 1000.0).round() as i64, x)
}
