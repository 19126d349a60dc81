//! A real Alertmanager (Debian's `prometheus-alertmanager`): no clustering, a receiver that
//! drops everything (the test reads the alerts back from its API), loopback only.

use serde_json::Value;

use super::process::{Server, binary, start};

pub struct Alertmanager {
    pub server: Server,
}

const CONFIG: &str = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n";

impl Alertmanager {
    pub async fn start() -> Self {
        let bin = binary("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alertmanager.yml"), CONFIG).unwrap();
        let args = |dir: &std::path::Path, port: u16| {
            vec![
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_owned(),
                "--log.level=warn".to_owned(),
            ]
        };
        Self { server: start(&bin, dir, args, "/-/ready").await }
    }

    /// Active alerts (`GET /api/v2/alerts`, which leaves resolved ones out).
    pub async fn alerts(&self) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts?active=true&silenced=false&inhibited=false", self.server.base);
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body.as_array().cloned().unwrap_or_default()
    }

    /// The active alert named `name` for `variant`, if listed.
    pub async fn alert(&self, name: &str, variant: &str) -> Option<Value> {
        self.alerts().await.into_iter().find(|a| a["labels"]["alertname"] == name && a["labels"]["variant"] == variant)
    }
}
