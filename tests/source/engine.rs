//! Debian's `prometheus` and `victoria-metrics` scraping the fake pods, each in its own process
//! group on a loopback port with a temporary data directory, killed (group and all) when the
//! handle drops, also when a test panics; and the test's own reader of their HTTP API, which
//! fails the test on any error rather than returning one.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::process::{self, ChildGuard};

/// Labels of one result series.
pub type Labels = BTreeMap<String, String>;
/// One result series: labels and `(Unix ms, value)` samples (`NaN` kept as such).
pub type Series = (Labels, Vec<(i64, f64)>);

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prometheus,
    Victoria,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prometheus => "Prometheus",
            Kind::Victoria => "VictoriaMetrics",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Victoria => "victoria-metrics",
        }
    }
}

/// A running engine scraping the pods.
pub struct Engine {
    pub kind: Kind,
    pub base: String,
    _process: ChildGuard,
    /// Config and data, removed after the process is killed (fields drop in order).
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn scrape_config(instances: &[String], scrape_ms: u64) -> String {
    let targets: Vec<String> = instances.iter().map(|i| format!("'{i}'")).collect();
    format!(
        "global:\n  scrape_interval: {scrape_ms}ms\n  scrape_timeout: {}ms\n\
         scrape_configs:\n  - job_name: zai\n    static_configs:\n      - targets: [{}]\n",
        scrape_ms * 4 / 5,
        targets.join(", ")
    )
}

fn command(kind: Kind, dir: &std::path::Path, port: u16) -> Command {
    let mut c = Command::new(kind.binary());
    let config = dir.join("scrape.yml");
    let data = dir.join("data");
    match kind {
        Kind::Prometheus => {
            c.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1d")
                .arg("--log.level=warn");
        }
        Kind::Victoria => {
            // The newest samples are searchable at once (`-search.latencyOffset`, 30 s by
            // default, hides them: see README, "Source mode"); no answer is served from a cache.
            c.arg(format!("-storageDataPath={}", data.display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-promscrape.config={}", config.display()))
                .arg("-search.latencyOffset=0s")
                .arg("-search.disableCache")
                .arg("-loggerLevel=ERROR");
        }
    }
    c
}

impl Engine {
    /// Starts `kind` scraping `instances` (`host:port`, path `/metrics`) every `scrape_ms`.
    pub async fn start(kind: Kind, instances: &[String], scrape_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scrape.yml"), scrape_config(instances, scrape_ms)).unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        for attempt in 0..3 {
            // An engine cannot report a port it chose itself: take a free one and hand it over.
            // If another process grabs it in between, the engine exits and we try another.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = std::fs::File::create(dir.path().join(format!("log-{attempt}"))).unwrap();
            let mut process = process::spawn(command(kind, dir.path(), port).stdout(Stdio::null()).stderr(log))
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e}. Run scripts/test, which installs Debian's `prometheus` and \
                         `victoria-metrics` packages",
                        kind.binary()
                    )
                });
            let base = format!("http://127.0.0.1:{port}");
            if ready(&http, kind, &base, &mut process).await {
                return Self { kind, base, _process: process, _dir: dir, http };
            }
            let log = std::fs::read_to_string(dir.path().join(format!("log-{attempt}"))).unwrap_or_default();
            eprintln!("{} attempt {attempt} did not become ready:\n{log}", kind.name());
        }
        panic!("{} did not start (see the logs above)", kind.name());
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> Value {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {path} {params:?}: {e}", self.kind.name()));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} {path} {params:?}: {status} {e}: {text}", self.kind.name()));
        assert!(
            status.is_success() && body["status"] == "success",
            "{} {path} {params:?}: {status} {body}",
            self.kind.name()
        );
        body["data"].clone()
    }

    /// `query_range` from `start_ms` to `end_ms` every `step_ms`.
    pub async fn range(&self, expr: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Vec<Series> {
        let params = [
            ("query", expr.to_owned()),
            ("start", seconds(start_ms)),
            ("end", seconds(end_ms)),
            ("step", seconds(step_ms)),
        ];
        series(&self.api("/api/v1/query_range", &params).await)
    }

    /// An instant query at `at_ms`.
    pub async fn instant(&self, expr: &str, at_ms: i64) -> Vec<Series> {
        series(&self.api("/api/v1/query", &[("query", expr.to_owned()), ("time", seconds(at_ms))]).await)
    }
}

/// Polls the engine's readiness endpoint for up to 20 s; `false` when it exited or never got
/// ready (it is then killed).
async fn ready(http: &reqwest::Client, kind: Kind, base: &str, process: &mut ChildGuard) -> bool {
    let path = match kind {
        Kind::Prometheus => "/-/ready",
        Kind::Victoria => "/health",
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if process.try_wait().is_some() {
            return false;
        }
        if let Ok(r) = http.get(format!("{base}{path}")).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process.kill();
    false
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn series(data: &Value) -> Vec<Series> {
    let matrix = data["resultType"] == "matrix";
    let result = data["result"].as_array().unwrap_or_else(|| panic!("no result in {data}"));
    result
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let values = if matrix {
                r["values"].as_array().unwrap().iter().map(sample).collect()
            } else {
                vec![sample(&r["value"])]
            };
            (labels, values)
        })
        .collect()
}

fn sample(v: &Value) -> (i64, f64) {
    let t = v[0].as_f64().unwrap_or_else(|| panic!("a sample without a time: {v}"));
    let x = match v[1].as_str().unwrap_or_else(|| panic!("a sample without a value: {v}")) {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or_else(|e| panic!("sample value {s:?}: {e}")),
    };
    ((t * 1000.0).round() as i64, x)
}
