//! Real time-series engines for the remote write and Grafana tests: Debian's `prometheus`
//! (as a remote-write receiver, optionally scraping) and `victoria-metrics`, each started on a
//! loopback port with a temporary data directory, killable and restartable on the same port and
//! data, queried over their HTTP API. Each runs under a `common::process` guard: it dies with
//! the test, also when the test panics.
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

// Its own copy of the guard: the remote write bench includes this module without `common`
// (a test that has both loads the file twice, harmlessly).
#[allow(clippy::duplicate_mod)]
#[path = "../common/process.rs"]
mod process;

use process::ChildGuard;

/// Labels of one result series.
pub type Labels = BTreeMap<String, String>;
/// A series and its `(Unix ms, value)` samples.
pub type Series = (Labels, Vec<(i64, f64)>);

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `prometheus --web.enable-remote-write-receiver`.
    Prometheus,
    /// `victoria-metrics` (single node).
    Victoria,
}

impl Kind {
    /// The program's name.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Victoria => "victoria-metrics",
        }
    }
}

/// A running (or killed, restartable) engine.
pub struct Engine {
    pub kind: Kind,
    pub port: u16,
    pub base: String,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
    http: reqwest::Client,
    starts: u32,
}

fn missing(kind: Kind) -> String {
    format!(
        "`{}` is not installed. The remote write and Grafana tests run the real engines: run scripts/test, \
         which installs Debian's `prometheus` and `victoria-metrics` packages, or apt-get install -y prometheus victoria-metrics.",
        kind.binary()
    )
}

/// A port free right now on 127.0.0.1 (engines cannot report one they chose).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Engine {
    /// A Prometheus receiving remote write and scraping `instances` (`host:port`) every
    /// `interval_ms` (none: receiver only).
    pub async fn prometheus(instances: &[String], interval_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = instances.iter().map(|i| format!("'{i}'")).collect();
        let mut config = format!("global:\n  scrape_interval: {interval_ms}ms\n  scrape_timeout: {interval_ms}ms\n");
        if !instances.is_empty() {
            config += &format!(
                "scrape_configs:\n  - job_name: zai-proxy\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            );
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        Self::start_on(Kind::Prometheus, dir, free_port()).await
    }

    /// A VictoriaMetrics single node.
    pub async fn victoria() -> Self {
        Self::start_on(Kind::Victoria, tempfile::tempdir().unwrap(), free_port()).await
    }

    /// A VictoriaMetrics that will listen on `port` once [`Engine::restart`] is called: a
    /// receiver that is down from the start.
    pub fn victoria_not_started(port: u16) -> Self {
        let base = format!("http://127.0.0.1:{port}");
        let http = http();
        Self { kind: Kind::Victoria, port, base, dir: tempfile::tempdir().unwrap(), child: None, http, starts: 0 }
    }

    async fn start_on(kind: Kind, dir: tempfile::TempDir, port: u16) -> Self {
        let base = format!("http://127.0.0.1:{port}");
        let mut e = Self { kind, port, base, dir, child: None, http: http(), starts: 0 };
        e.restart().await;
        e
    }

    /// The remote write endpoint.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(self.kind.binary());
        match self.kind {
            Kind::Prometheus => {
                c.arg(format!("--config.file={}", self.dir.path().join("prometheus.yml").display()))
                    .arg(format!("--storage.tsdb.path={}", self.data_dir().display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                    .arg("--web.enable-remote-write-receiver")
                    .arg("--storage.tsdb.retention.time=1d")
                    .arg("--log.level=warn");
            }
            Kind::Victoria => {
                c.arg(format!("-storageDataPath={}", self.data_dir().display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
                    .arg("-retentionPeriod=1d")
                    .arg("-search.latencyOffset=0s")
                    .arg("-search.disableCache")
                    .arg("-loggerLevel=ERROR");
            }
        }
        c
    }

    /// Starts (again) on the same port and data directory.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the engine is still running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("log-{}", self.starts))).unwrap();
        let child = process::spawn(self.command().stdout(Stdio::null()).stderr(log))
            .unwrap_or_else(|e| panic!("cannot start {}: {e}. {}", self.kind.binary(), missing(self.kind)));
        self.child = Some(child);
        if !self.wait_ready().await {
            let log = std::fs::read_to_string(self.dir.path().join(format!("log-{}", self.starts))).unwrap_or_default();
            panic!("{} did not become ready on port {}:\n{log}", self.kind.binary(), self.port);
        }
    }

    /// The running process' id (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, ChildGuard::id)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    async fn wait_ready(&mut self) -> bool {
        let path = match self.kind {
            Kind::Prometheus => "/-/ready",
            Kind::Victoria => "/health",
        };
        for _ in 0..300 {
            if let Some(c) = self.child.as_mut()
                && !c.running()
            {
                return false;
            }
            if let Ok(r) = self.http.get(format!("{}{path}", self.base)).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Makes everything received searchable (VictoriaMetrics buffers recent samples).
    pub async fn flush(&self) {
        if self.kind == Kind::Victoria {
            let _ = self.http.get(format!("{}/internal/force_flush", self.base)).send().await;
        }
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> Value {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            query.append_pair(k, v);
        }
        let url = format!("{}{path}?{}", self.base, query.finish());
        let resp = self.http.get(&url).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success() && body["status"] == "success", "{path} {params:?}: {status} {body}");
        body["data"].clone()
    }

    /// Instant query at `t_ms`: a vector, or raw samples for a range selector.
    pub async fn instant(&self, expr: &str, t_ms: i64) -> Vec<Series> {
        self.flush().await;
        let data = self.api("/api/v1/query", &[("query", expr.to_owned()), ("time", seconds(t_ms))]).await;
        series(&data)
    }

    /// `query_range` from `start_ms` to `end_ms` every `step_ms`.
    pub async fn range(&self, expr: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Vec<Series> {
        self.flush().await;
        let params = [
            ("query", expr.to_owned()),
            ("start", seconds(start_ms)),
            ("end", seconds(end_ms)),
            ("step", seconds(step_ms)),
        ];
        series(&self.api("/api/v1/query_range", &params).await)
    }

    /// The raw samples of every series `selector` matches between `from_ms` and `to_ms`.
    pub async fn raw(&self, selector: &str, from_ms: i64, to_ms: i64) -> Vec<Series> {
        let window = ((to_ms - from_ms) / 1000 + 1).max(1);
        self.instant(&format!("{selector}[{window}s]"), to_ms).await
    }

    /// Values of `label` over the series `selector` matches (`/api/v1/label/.../values`).
    pub async fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        self.flush().await;
        let data = self.api(&format!("/api/v1/label/{label}/values"), &[("match[]", selector.to_owned())]).await;
        data.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn series(data: &Value) -> Vec<Series> {
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
