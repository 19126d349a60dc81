//! Deploy and operate: the health check subcommand, version plumbing, self-metrics, auth and
//! DNS discovery of pods.

mod common;

use common::*;

fn version_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/VERSION")).unwrap().trim().to_owned()
}

fn healthcheck(listen_addr: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zai-dash"))
        .args(["healthcheck", "--timeout", "1s"])
        .env("LISTEN_ADDR", listen_addr)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_exits_0_when_up_and_1_when_down() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let up = tokio::task::spawn_blocking(move || healthcheck(&format!(":{port}"))).await.unwrap();
    assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
    app.stop().await;
    let down = tokio::task::spawn_blocking(move || healthcheck(&addr)).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("/healthz"), "names what it probed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_config_version_is_the_version_file() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    assert_eq!(app.json("/api/config").await["version"], version_file());
    app.stop().await;
}
