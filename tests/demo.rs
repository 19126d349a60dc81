//! The zero-setup demo: it starts, both variants show traffic and quota within 30 s, and it stops
//! cleanly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zai_dash::clock::SystemClock;
use zai_dash::config::DemoArgs;
use zai_dash::demo::{self, DemoPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_production_and_canary_traffic_within_30_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let args = DemoArgs { listen_addr: "127.0.0.1:0".into(), db_path: dir.path().join("demo.db"), rate: "10".into() };
    let plan = DemoPlan::from_args(&args).unwrap();
    let listener = tokio::net::TcpListener::bind(plan.listen_addr).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let run = tokio::spawn(demo::run(plan, listener, Arc::new(SystemClock), token.clone()));
    common::wait_for("non-zero production and canary rates", Duration::from_secs(30), || async {
        let Ok(resp) = reqwest::get(format!("{base}/api/status")).await else { return false };
        let status: serde_json::Value = resp.json().await.unwrap_or_default();
        ["production", "canary"].iter().all(|v| status[v]["req_rate"].as_f64().unwrap_or(0.0) > 0.0)
    })
    .await;
    let points: serde_json::Value =
        reqwest::get(format!("{base}/api/metrics?range=5m")).await.unwrap().json().await.unwrap();
    let with_tokens = points.as_array().unwrap().iter().any(|p| p["token_rate_in"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(with_tokens, "token usage flows from the simulated upstream through the proxies");
    // The first view is full: an hour of simulated history, said so on every page.
    let hour: serde_json::Value =
        reqwest::get(format!("{base}/api/metrics?range=1h&variant=production")).await.unwrap().json().await.unwrap();
    let first = hour.as_array().unwrap().first().map_or(i64::MAX, |p| p["timestamp"].as_i64().unwrap());
    let now = chrono::Utc::now().timestamp_millis();
    assert!(now - first > 55 * 60_000, "the 1 h chart starts an hour back, not at start-up: {first} vs {now}");
    // Both proxies poll the simulated account quota: their expositions carry it, and the
    // dashboard reads it into each variant's status.
    common::wait_for("quota in both variants' status", Duration::from_secs(30), || async {
        let Ok(resp) = reqwest::get(format!("{base}/api/status")).await else { return false };
        let status: serde_json::Value = resp.json().await.unwrap_or_default();
        ["production", "canary"].iter().all(|v| status[v]["quota"]["five_hour"]["usage_ratio"].as_f64().is_some())
    })
    .await;
    let targets: serde_json::Value = reqwest::get(format!("{base}/api/targets")).await.unwrap().json().await.unwrap();
    for t in targets.as_array().unwrap() {
        let text = reqwest::get(t["url"].as_str().unwrap()).await.unwrap().text().await.unwrap();
        let variant = t["variant"].as_str().unwrap();
        for family in ["usage_ratio", "remaining_ratio", "reset_time_seconds"] {
            for window in ["five_hour", "weekly"] {
                let series = format!(
                    "zai_proxy_quota_{family}{{limit_type=\"credit_limit\",variant=\"{variant}\",window=\"{window}\"}} "
                );
                assert!(text.contains(&series), "{series} in {}", t["url"]);
            }
        }
        let polled = format!("zai_proxy_quota_poll_total{{result=\"success\",variant=\"{variant}\"}} ");
        assert!(text.contains(&polled) && text.contains("zai_proxy_quota_sample_age_seconds{"), "{}", t["url"]);
    }
    let page = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("class=\"notice\"") && page.contains("simulated history"), "the page says so");
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(15), run).await.expect("the demo stops in time");
    result.unwrap().expect("clean exit");
    assert!(dir.path().join("demo.db").exists());
}
