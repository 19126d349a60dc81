//! Deploy and operate: the health check subcommand, version plumbing, self-metrics, auth and
//! DNS discovery of pods.

mod common;

use std::sync::Arc;

use common::*;
use zai_dash::clock::SystemClock;

fn version_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/VERSION")).unwrap().trim().to_owned()
}

fn healthcheck(listen_addr: &str) -> std::process::Output {
    common::process::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_zai-dash"))
            .args(["healthcheck", "--timeout", "1s"])
            .env("LISTEN_ADDR", listen_addr),
        std::time::Duration::from_secs(60),
    )
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
async fn api_config_page_footer_and_build_info_show_the_version_file() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    assert_eq!(app.json("/api/config").await["version"], version_file());
    let page = reqwest::get(app.url("/")).await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("<footer>zai-dash {} ", version_file())), "page footer shows the version");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("zai_dash_build_info{{version=\"{}\"}} 1", version_file())));
    app.stop().await;
}

/// Pipes `text` through `promtool check metrics`; `None` when promtool is not installed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut cmd = std::process::Command::new("promtool");
    let out = match common::process::run(
        cmd.args(["check", "metrics"]),
        Some(text.as_bytes()),
        std::time::Duration::from_secs(60),
    ) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success() && report.trim().is_empty(), report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_metrics_cover_scrapes_writes_sse_and_db_and_pass_promtool() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dead = dead_url().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&target.url, &format!("canary={dead}")]));
    // Remote write to a receiver that is down: its families are there, samples wait.
    s.remote = Some(zai_dash::remote::RemoteSettings::new(dead.parse().unwrap()));
    let app = TestApp::start(s).await;
    wait_for("a stored row", std::time::Duration::from_secs(30), || async {
        points(&app, "range=5m").await.iter().any(|p| p["variant"] == "production")
    })
    .await;
    let _sse = reqwest::get(app.url("/api/events")).await.unwrap();
    let resp = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], zai_dash::expo::CONTENT_TYPE);
    let text = resp.text().await.unwrap();
    let version = version_file();
    for expected in [
        format!("zai_dash_build_info{{version=\"{version}\"}} 1\n"),
        format!("zai_dash_target_up{{target=\"{}\",variant=\"production\"}} 1\n", target.url),
        format!("zai_dash_target_up{{target=\"{dead}\",variant=\"canary\"}} 0\n"),
        format!("zai_dash_scrapes_total{{result=\"connect\",target=\"{dead}\"}} "),
        "zai_dash_sse_clients 1\n".to_owned(),
        "zai_dash_db_rows{table=\"metrics_5s\"} ".to_owned(),
        "zai_dash_db_size_bytes ".to_owned(),
        "zai_dash_sqlite_heap_bytes ".to_owned(),
        "zai_dash_sqlite_pool_waits_total ".to_owned(),
        "zai_dash_sqlite_pool_wait_seconds_total ".to_owned(),
        "zai_dash_scrape_duration_seconds_bucket{le=\"0.005\"} ".to_owned(),
        "zai_dash_downsample_duration_seconds_count ".to_owned(),
        "zai_dash_write_queue_depth ".to_owned(),
        "zai_dash_write_drops_total 0\n".to_owned(),
        "zai_dash_remote_write_queue_age_seconds ".to_owned(),
        "zai_dash_remote_write_queue_samples ".to_owned(),
        "zai_dash_remote_write_samples_sent_total 0\n".to_owned(),
        "zai_dash_remote_write_samples_failed_total 0\n".to_owned(),
        "zai_dash_remote_write_samples_dropped_total 0\n".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    let parsed = zai_dash::scrape::parse::parse(&text).expect("our own parser accepts it");
    let ok = parsed.families.iter().find(|f| f.name == "zai_dash_scrapes_total").unwrap();
    assert!(ok.samples.iter().any(|s| s.label("result") == Some("success") && s.value >= 1.0));
    match promtool_check(&text) {
        Some((clean, report)) => assert!(clean, "promtool check metrics:\n{report}\n{text}"),
        None if std::env::var_os("CI").is_some() => {
            panic!("promtool is missing; scripts/test installs it (Debian package prometheus)")
        }
        None => {
            eprintln!("\n!!! promtool not installed: SKIPPED the promtool format check (apt-get install prometheus)\n")
        }
    }
    app.stop().await;
}

/// Two fake targets on the same port of 127.0.0.1 and 127.0.0.2 (two "pods" of one name).
async fn two_pods(variant: &str) -> (FakeTarget, FakeTarget, u16) {
    for _ in 0..50 {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await {
            let a = FakeTarget::start_on(first, Sim::new(variant, 10.0), Behaviour::Healthy).await;
            let b = FakeTarget::start_on(second, Sim::new(variant, 30.0), Behaviour::Healthy).await;
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// URLs of `/api/targets` with their `up` flag.
async fn target_list(app: &TestApp) -> Vec<(String, String, bool)> {
    let list = app.json("/api/targets").await;
    let mut out: Vec<(String, String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["url"].as_str().unwrap().to_owned(), t["variant"].as_str().unwrap().to_owned(), t["up"] == true))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_entry_scrapes_every_address_and_follows_the_answer() {
    use zai_dash::scrape::discovery::StaticResolver;
    let (_a, _b, port) = two_pods("canary").await;
    let url_a = format!("http://127.0.0.1:{port}/metrics");
    let url_b = format!("http://127.0.0.2:{port}/metrics");
    let resolver = Arc::new(StaticResolver::new(vec!["127.0.0.1".parse().unwrap()]));
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&dir, targets(&[format!("canary=dns+http://zai-proxy-canary.test:{port}/metrics")]));
    let app = TestApp::start_with(s, Arc::new(SystemClock), resolver.clone()).await;
    let limit = std::time::Duration::from_secs(30);

    wait_for("the first pod up", limit, || async {
        target_list(&app).await == [(url_a.clone(), "canary".into(), true)]
    })
    .await;

    resolver.set(vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()]);
    wait_for("both pods up", limit, || async {
        target_list(&app).await == [(url_a.clone(), "canary".into(), true), (url_b.clone(), "canary".into(), true)]
    })
    .await;
    wait_for("rows of the second pod", limit, || async {
        points(&app, &format!("range=5m&target={url_b}")).await.iter().any(|p| p["requests"].as_f64() > Some(0.0))
    })
    .await;

    // A failed lookup keeps what is known; an answer without the first pod drops it.
    let asked = resolver.lookups();
    resolver.fail("temporary failure in name resolution");
    // Two failed lookups later (the first may have been under way), both pods are still there.
    wait_for("two failed lookups", limit, || async { resolver.lookups() >= asked + 2 }).await;
    assert_eq!(target_list(&app).await.len(), 2);
    resolver.set(vec!["127.0.0.2".parse().unwrap()]);
    wait_for("the first pod dropped", limit, || async {
        target_list(&app).await == [(url_b.clone(), "canary".into(), true)]
    })
    .await;
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains(&url_a), "a vanished address leaves self-metrics:\n{metrics}");
    assert!(metrics.contains(&format!("zai_dash_target_up{{target=\"{url_b}\",variant=\"canary\"}} 1")));

    // It comes back under its old id and history.
    resolver.set(vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()]);
    wait_for("the first pod back", limit, || async { target_list(&app).await.iter().filter(|t| t.2).count() == 2 })
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_entry_for_localhost_scrapes_127_0_0_1() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let port = target.url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/metrics").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&dir, targets(&[format!("dns+http://localhost:{port}/metrics")]));
    let app = TestApp::start(s).await;
    let expected = format!("http://127.0.0.1:{port}/metrics");
    // localhost may also resolve to ::1, where nothing listens: that address is simply down.
    wait_for("127.0.0.1 discovered and up", std::time::Duration::from_secs(30), || async {
        target_list(&app).await.iter().any(|(url, variant, up)| *url == expected && variant == "production" && *up)
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_token_protects_pages_api_and_metrics_but_not_health() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(&[&target.url]));
    s.dashboard_token = Some(zai_dash::config::Secret::new("correct horse"));
    let app = TestApp::start(s).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let status = |path: &str, auth: Option<&str>| {
        let mut req = client.get(app.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap() }
    };

    for open in ["/healthz", "/readyz", "/login"] {
        assert_eq!(status(open, None).await.status(), 200, "{open} stays open");
    }
    for closed in ["/api/status", "/api/config", "/api/targets", "/api/metrics", "/api/events", "/metrics"] {
        let resp = status(closed, None).await;
        assert_eq!(resp.status(), 401, "{closed} without a token");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"zai-dash\"");
        assert_eq!(status(closed, Some("Bearer wrong")).await.status(), 401, "{closed} with a wrong token");
        assert_eq!(status(closed, Some("Bearer correct horse")).await.status(), 200, "{closed} with the token");
    }
    let page = client.get(app.url("/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), 303, "a browser is sent to the sign-in form");
    assert_eq!(page.headers()["location"], "/login");

    let login = |token: &'static str| {
        client
            .post(app.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", token.replace(' ', "+")))
            .send()
    };
    assert_eq!(login("nope").await.unwrap().status(), 401);
    let ok = login("correct horse").await.unwrap();
    assert_eq!(ok.status(), 303);
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |path: &str| client.get(app.url(path)).header("cookie", cookie.clone()).send();
    let page = with_cookie("/").await.unwrap();
    assert_eq!(page.status(), 200);
    let events = with_cookie("/api/events").await.unwrap();
    assert_eq!(events.status(), 200, "EventSource authenticates with the cookie");
    assert!(events.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    drop(events);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_dns_entry_gives_its_addresses_the_url_rule_of_the_name() {
    use zai_dash::scrape::discovery::StaticResolver;
    // A target without a usable `variant` label: the entry's name decides (contains "canary").
    let target = FakeTarget::start(Sim::new("", 5.0), Behaviour::Healthy).await;
    let port = target.url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/metrics").to_owned();
    let resolver = Arc::new(StaticResolver::new(vec!["127.0.0.1".parse().unwrap()]));
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&dir, targets(&[format!("dns+http://zai-proxy-canary:{port}/metrics")]));
    let app = TestApp::start_with(s, Arc::new(SystemClock), resolver).await;
    wait_for("a canary point from the address", std::time::Duration::from_secs(30), || async {
        points(&app, "range=5m&variant=canary").await.iter().any(|p| p["requests"].as_f64().is_some())
    })
    .await;
    assert_eq!(target_list(&app).await, [(target.url.clone(), "canary".to_owned(), true)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_signed_revocable_and_guessing_is_limited() {
    const TOKEN: &str = "correct-horse-battery-staple";
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let settings_with_token = || {
        let mut s = settings(&dir, targets(&[&target.url]));
        s.dashboard_token = Some(zai_dash::config::Secret::new(TOKEN));
        s
    };
    let app = TestApp::start(settings_with_token()).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = |token: &str, origin: Option<&str>| {
        let mut req = client
            .post(app.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    // A cross-site form post is refused before the token is even looked at.
    assert_eq!(login(TOKEN, Some("https://evil.example")).await.unwrap().status(), 403);
    let ok = login(TOKEN, Some(&app.base)).await.unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(!cookie.contains(TOKEN) && !cookie.contains(&hex(TOKEN)), "the cookie is not the token: {cookie}");
    let page = |cookie: String| client.get(app.url("/api/status")).header("cookie", cookie).send();
    assert_eq!(page(cookie.clone()).await.unwrap().status(), 200);
    // Every response says: no sniffing, no framing.
    let resp = page(cookie.clone()).await.unwrap();
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.headers()["content-security-policy"], "frame-ancestors 'none'");
    // Logout revokes the session, also for whoever copied the cookie, and across a restart.
    let out = client.post(app.url("/logout")).header("cookie", cookie.clone()).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(page(cookie.clone()).await.unwrap().status(), 401);
    app.stop().await;
    let app = TestApp::start(settings_with_token()).await;
    let again = client.get(app.url("/api/status")).header("cookie", cookie.clone()).send().await.unwrap();
    assert_eq!(again.status(), 401, "a revoked session stays revoked after a restart");
    // Five wrong tokens a minute per address, then 429 with Retry-After, even for the right one.
    let login = |token: &str| {
        client
            .post(app.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(login("wrong-guess-wrong-guess").await.unwrap().status(), 401);
    }
    let limited = login(TOKEN).await.unwrap();
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    app.stop().await;
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
