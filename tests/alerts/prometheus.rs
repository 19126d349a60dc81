//! A real Prometheus with rule files, short scrape and evaluation intervals, loopback only.

use std::path::Path;

use serde_json::Value;

use super::process::{Server, binary, start};

pub struct Prometheus {
    pub server: Server,
}

impl Prometheus {
    /// Scrapes `instances` (`host:port`, path `/metrics`) every second and evaluates `rules`
    /// (a rule file's text) every second.
    pub async fn start(instances: &[String], rules: &str) -> Self {
        let bin = binary("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let targets: Vec<String> = instances.iter().map(|i| format!("'{i}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: zai\n    static_configs:\n      - targets: [{}]\n",
            dir.path().join("rules.yml").display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let args = |dir: &Path, port: u16| {
            vec![
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".to_owned(),
            ]
        };
        Self { server: start(&bin, dir, args, "/-/ready").await }
    }

    /// `GET /api/v1/alerts`: every pending and firing alert.
    pub async fn alerts(&self) -> Vec<Value> {
        let body: Value =
            reqwest::get(format!("{}/api/v1/alerts", self.server.base)).await.unwrap().json().await.unwrap();
        body["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Rule group evaluations so far (`prometheus_rule_group_iterations_total`, summed over
    /// groups, from Prometheus' own `/metrics`).
    pub async fn rule_evaluations(&self) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.server.base)).await.unwrap().text().await.unwrap();
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("prometheus_rule_group_iterations_total{"))
            .map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()).unwrap())
            .collect();
        assert!(!values.is_empty(), "prometheus_rule_group_iterations_total is missing:\n{text}");
        values.iter().sum()
    }

    /// Returns once a rule evaluation has begun after this call (two more counted: the first
    /// may have been under way).
    pub async fn an_evaluation_after_now(&self) {
        let seen = self.rule_evaluations().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.rule_evaluations().await >= seen + 2.0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("Prometheus evaluated no rules in 30 s");
    }

    /// An instant query's result vector.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let mut url = url::Url::parse(&format!("{}/api/v1/query", self.server.base)).unwrap();
        url.query_pairs_mut().append_pair("query", expr);
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}
