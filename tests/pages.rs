//! The dashboard's pages: templates rendered directly (escaping of every string that comes from
//! a target), and the real app over loopback (the page without JavaScript, compare, targets,
//! the JSON behind them, assets with cache validators, HTML error pages).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use askama::Template;
use common::*;
use zai_dash::budget::spend::{Budgets, CostBucket, CostSeries, forecast};
use zai_dash::point::{Counts, Point};
use zai_dash::web::chrome::Chrome;
use zai_dash::web::dashboard::{self, View};
use zai_dash::web::models::{ModelUsage, model_usage};
use zai_dash::web::pages::{Overview, OverviewPage, RemoteLine, TargetLine, TargetsPage};

const EVIL: &str = "<script>alert(1)</script>";

fn chrome() -> Chrome {
    Chrome {
        version: "test",
        css: "/static/app.css?v=1".into(),
        js: "/static/app.js?v=1".into(),
        generated: "2026-01-01T00:00:00.000Z".into(),
        interval_ms: 5000,
        page: "overview",
        notice: None,
        firing: Vec::new(),
        storage: None,
    }
}

fn point(variant: &str, ts: i64) -> Point {
    Point {
        timestamp: ts,
        variant: variant.to_owned(),
        requests_2xx: Some(0.0),
        requests_4xx: Some(0.0),
        requests_5xx: Some(0.0),
        tokens_input: Some(0.0),
        tokens_output: Some(0.0),
        tokens_cache_read: Some(0.0),
        tokens_cache_write: Some(0.0),
        estimated_cost_usd_input: Some(0.0),
        estimated_cost_usd_output: Some(0.0),
        estimated_cost_usd_cache_read: Some(0.0),
        estimated_cost_usd_cache_write: Some(0.0),
        concurrent_requests: 2.0,
        max_workers: 8.0,
        rate_limit_rps: 30.0,
        rate_limit_rejections: Some(0.0),
        rate_limit_adj_increase: Some(0.0),
        rate_limit_adj_decrease: Some(0.0),
        upstream_errors: Some(0.0),
        retry_attempts: Some(0.0),
        latency_p50: Some(120.0),
        latency_p95: Some(480.0),
        latency_p99: Some(950.0),
        request_size_avg: None,
        response_size_avg: None,
        token_rate_in: 1500.0,
        token_rate_out: 300.0,
        token_rate_cache_read: 0.0,
        token_rate_cache_write: 0.0,
        req_rate: 12.5,
        error_rate_pct: Some(1.25),
        worker_utilization: 0.25,
        status_code_rates: BTreeMap::from([("200".to_owned(), 12.0), ("503".to_owned(), 0.5)]),
        quota: None,
        requests: 62.0,
        cost_rate_usd: 0.001,
        rejection_rate: 0.0,
        retry_rate: 0.0,
        upstream_error_rate: 0.0,
        ttft_p50: None,
        ttft_p95: None,
        ttft_p99: None,
        tpot_p50: None,
        tpot_p95: None,
        tpot_p99: None,
        pods: 1,
    }
}

/// An overview whose variant, model and pod URL are all hostile.
fn hostile_overview() -> String {
    let view = View { range: "1h".into(), variant: "all".into(), target: Some(format!("http://x/{EVIL}")) };
    let variants = vec![EVIL.to_owned(), "production".to_owned()];
    let colors = dashboard::colors(&variants);
    let points: Vec<Point> =
        (1..=10).flat_map(|i| [point(EVIL, i * 60_000), point("production", i * 60_000)]).collect();
    let mut counts = Counts::default();
    counts.requests.insert("200".into(), 600.0);
    counts.tokens.insert(EVIL.into(), [10.0, 20.0, 0.0, 0.0]);
    counts.cost.insert(EVIL.into(), [0.5, 0.0, 0.0, 0.0]);
    let counts = BTreeMap::from([(EVIL.to_owned(), counts)]);
    let models: Vec<ModelUsage> = model_usage(&counts);
    let built = dashboard::panels(&points, (0, 600_000), &colors, &counts, &models);
    let spend_series: Vec<CostSeries> = variants
        .iter()
        .map(|v| CostSeries {
            variant: v.clone(),
            model: EVIL.into(),
            buckets: vec![CostBucket { end_ms: 600_000, width_ms: 600_000, usd: 0.5 }],
        })
        .collect();
    let spend = forecast(&spend_series, 600_000, &Budgets { daily_usd: Some(1.0), monthly_usd: None }, 86_400_000);
    let overview = Overview {
        ranges: dashboard::range_links(&view),
        variants: dashboard::variant_links(&view, &variants),
        pods: vec![],
        target: view.target.clone(),
        range: view.range.clone(),
        variant: view.variant.clone(),
        cards: vec![dashboard::card(EVIL, 0, true, EVIL.into(), points.last())],
        quota: vec![],
        spend: zai_dash::web::spending::card(Some(&spend), &colors, "all"),
        charts: std::sync::Arc::new(built),
        view: view.clone(),
    };
    OverviewPage { chrome: chrome(), o: overview }.render().unwrap()
}

#[test]
fn hostile_variant_model_and_url_render_as_text_everywhere() {
    let html = hostile_overview();
    assert!(!html.contains(EVIL), "an unescaped <script> reached the page");
    assert!(!html.contains("alert(1)</"), "a closing tag from a label reached the page");
    // It is shown, escaped: in the card, the model table, the legends and the SVG titles.
    let escaped = html.matches("&#60;script&#62;alert(1)&#60;/script&#62;").count()
        + html.matches("&lt;script&gt;alert(1)&lt;/script&gt;").count();
    assert!(escaped >= 5, "escaped label shown {escaped} times");
    assert!(html.contains("id=\"spend-card\""), "the spend card, with the hostile variant in its lines");
    // The only <script> elements are the page's own.
    assert_eq!(html.matches("<script").count(), 2, "theme bootstrap and app.js only");
}

#[test]
fn hostile_target_url_on_the_targets_page_is_text() {
    let page = TargetsPage {
        chrome: Chrome { page: "targets", ..chrome() },
        targets: vec![TargetLine {
            url: format!("http://evil/\"><img src=x onerror=alert(1)>{EVIL}"),
            variant: "production".into(),
            up: false,
            last_scrape: "never".into(),
            last_success: "never".into(),
            duration: "0 ms".into(),
            samples: 0,
            failures: 3,
            last_error: EVIL.into(),
            version: "unknown".into(),
            href: "/?range=1h&variant=all&target=x".into(),
        }],
        remote: Some(RemoteLine {
            receiver: "http://prometheus:9090/api/v1/write".into(),
            queued: "1.2k".into(),
            age: "4.0 s".into(),
            sent: "30k".into(),
            failed: "0".into(),
            dropped: "0".into(),
            last_sent: "never".into(),
            last_error: format!("receiver answered 400 Bad Request: {EVIL}"),
            last_error_at: "2026-11-25T10:00:00.000Z".into(),
        }),
    };
    let html = page.render().unwrap();
    assert!(!html.contains(EVIL) && !html.contains("<img"), "{html}");
    assert!(html.contains("3 failures"));
    assert!(html.contains("Remote write") && html.contains("http://prometheus:9090/api/v1/write"), "{html}");
}

#[test]
fn the_alert_strip_shows_what_fires_on_every_page_as_text() {
    let firing = vec![zai_dash::web::chrome::StripAlert {
        rule: "HighErrorRate".into(),
        variant: EVIL.into(),
        severity: "critical".into(),
        summary: format!("5xx share of {EVIL} is 12 %"),
        since: "2026-01-01T00:00:00.000Z".into(),
    }];
    let page = TargetsPage { chrome: Chrome { page: "targets", firing, ..chrome() }, targets: vec![], remote: None };
    let html = page.render().unwrap();
    assert!(!html.contains(EVIL), "{html}");
    assert!(html.contains("<strong>HighErrorRate</strong>"));
    assert!(html.contains("<span class=\"badge firing\" id=\"alert-count\">1</span>"), "a count in the navigation");
    assert!(!html.contains("aria-live=\"polite\" hidden>"), "the strip is shown");
    let quiet =
        TargetsPage { chrome: Chrome { page: "targets", ..chrome() }, targets: vec![], remote: None }.render().unwrap();
    assert!(
        quiet.contains("id=\"alert-strip\"") && quiet.contains("aria-live=\"polite\" hidden>"),
        "hidden, ready for live updates"
    );
    assert!(quiet.contains("<a href=\"/alerts\">Alerts</a>"));
}

#[test]
fn the_page_without_javascript_has_links_charts_and_numbers() {
    let html = hostile_overview();
    for range in ["5m", "15m", "1h", "6h", "24h", "7d"] {
        assert!(html.contains(&format!("data-range=\"{range}\"")), "range link {range}");
    }
    assert!(html.contains("aria-label=\"Time range\"") && html.contains("aria-label=\"Variant\""));
    assert!(html.contains("<svg class=\"chart\""), "inline SVG charts");
    assert!(html.contains("<path class=\"s c"), "chart lines");
    assert!(html.contains("<title>"), "hover values");
    assert!(!html.contains("NaN") && !html.contains("inf\""), "no NaN in the markup");
    for number in ["12.5/s", "1.25%", "120 ms", "480 ms", "950 ms", "1500 tok/s", "2 of 8 workers", "25.00%"] {
        assert!(html.contains(number), "card value {number}");
    }
    assert!(html.contains("$3.60/h"), "cost per hour on the card");
    assert!(html.contains("<noscript><meta http-equiv=\"refresh\""), "refreshes itself without JS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_their_json_over_a_real_app() {
    let mut prod = Sim::new("production", 40.0);
    prod.latency_s = 0.2;
    let mut canary = Sim::new("canary", 40.0);
    canary.latency_s = 4.0; // 20x slower: the compare verdict must fail on p95
    let a = FakeTarget::start(prod, Behaviour::Healthy).await;
    let b = FakeTarget::start(canary, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&a.url, &b.url]))).await;
    // The sequential verdict fails once the evidence is in (its time depends on the traffic).
    wait_for("the slow canary to fail", Duration::from_secs(60), || async {
        app.json("/api/compare?baseline=production&candidate=canary&window=5m").await["verdict"] == "fail"
    })
    .await;

    // Compare: the default candidate is the only other variant; p95 20x -> fail.
    let c = app.json("/api/compare?window=5m").await;
    assert_eq!(c["candidate"], "canary");
    assert_eq!(c["verdict"], "fail", "{c}");
    let reasons = c["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r.as_str().unwrap().starts_with("Latency above the baseline's p95")), "{reasons:?}");
    let html = reqwest::get(app.url("/compare?baseline=production&candidate=canary&window=5m")).await.unwrap();
    assert_eq!(html.status(), 200);
    let html = html.text().await.unwrap();
    assert!(html.contains("Verdict: <b>fail</b>"), "verdict shown");

    // Models: the simulator's tokens, as JSON and in the page.
    let models = app.json("/api/models?range=5m&variant=production").await;
    let m = &models.as_array().unwrap()[0];
    assert_eq!((m["model"].as_str(), m["variant"].as_str()), (Some("glm-4.7"), Some("production")));
    assert!(m["tokens_input"].as_f64().unwrap() >= 100.0 * 100.0);

    let page = reqwest::get(app.url("/?range=5m&variant=all")).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("data-variant=\"production\"") && page.contains("data-variant=\"canary\""));
    assert!(page.contains("glm-4.7"));
    assert!(page.contains("<svg class=\"chart\""));
    let fragment = reqwest::get(app.url("/?range=15m&fragment=1")).await.unwrap().text().await.unwrap();
    assert!(!fragment.contains("<html") && fragment.contains("class=\"panels\""), "fragment is the main content");
    let per_pod = reqwest::get(app.url(&format!("/?range=5m&target={}", urlencode(&a.url)))).await.unwrap();
    assert_eq!(per_pod.status(), 200);

    // Targets page.
    let t = reqwest::get(app.url("/targets")).await.unwrap().text().await.unwrap();
    assert_eq!(t.matches("badge up").count(), 2, "both targets up");
    assert!(t.contains(&a.url) && t.contains(&b.url));

    // Errors on pages are HTML, on the API JSON.
    let bad = reqwest::get(app.url("/?range=soon")).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(bad.text().await.unwrap().contains("invalid range parameter"));
    let bad = reqwest::get(app.url("/compare?window=soon")).await.unwrap();
    assert_eq!(bad.status(), 400);
    let body = bad.text().await.unwrap();
    assert!(body.contains("invalid window parameter") && body.contains("<form"), "the form stays to fix it");
    let bad = reqwest::get(app.url("/api/compare?window=1s")).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("window"));
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_carry_validators_and_long_caching_when_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&["http://127.0.0.1:9/metrics"]))).await;
    let page = reqwest::get(app.url("/")).await.unwrap().text().await.unwrap();
    let js = page.split("src=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(js.starts_with("/static/app.js?v="), "{js}");
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = client.get(app.url(&js)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let again = client.get(app.url(&js)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    let plain = client.get(app.url("/static/app.css")).send().await.unwrap();
    assert_eq!(plain.headers()["cache-control"], "no-cache");
    assert_eq!(client.get(app.url("/static/nope.js")).send().await.unwrap().status(), 404);
    let gz = client.get(app.url("/")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gz.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_the_metrics_download_as_csv_and_json_with_units() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    wait_for("points with traffic", Duration::from_secs(30), || async {
        points(&app, "range=5m").await.iter().filter(|p| p["requests"].as_f64().unwrap_or(0.0) > 0.0).count() >= 12
    })
    .await;
    // A fixed window of complete buckets, so the download and the API answer the same points.
    let recent = points(&app, "range=5m").await;
    // Eight points back (4 s): no late scrape can still merge into these buckets.
    let end = recent[recent.len() - 8]["timestamp"].as_f64().unwrap() / 1000.0;
    let window = format!("start={}&end={end}&variant=production", end - 120.0);
    let api = points(&app, &window).await;

    let resp = reqwest::get(app.url(&format!("/api/export?{window}&format=csv"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert_eq!(disposition, "attachment; filename=\"zai-dash-metrics-window-production.csv\"");
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&header[..3], ["time (UTC)", "timestamp (Unix ms)", "variant"]);
    assert!(header.contains(&"req_rate (req/s)") && header.contains(&"latency_p95 (ms)"), "{header:?}");
    assert!(header.contains(&"status_200_rate (req/s)"), "{header:?}");
    assert_eq!(lines.len() - 1, api.len(), "one row per point of /api/metrics");
    let rate_col = header.iter().position(|h| *h == "req_rate (req/s)").unwrap();
    for (line, p) in lines[1..].iter().zip(&api) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[1], p["timestamp"].to_string());
        // serde_json parses floats to within one ulp (its float_roundtrip feature is off).
        let (csv_rate, api_rate) = (cells[rate_col].parse::<f64>().unwrap(), p["req_rate"].as_f64().unwrap());
        assert!((csv_rate - api_rate).abs() <= 1e-12 * api_rate.abs(), "{csv_rate} vs {api_rate}");
    }

    let latency: serde_json::Value = app.json(&format!("/api/export?panel=latency&{window}&format=json")).await;
    assert_eq!(latency["name"], "latency");
    let units: Vec<(&str, &str)> = latency["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["unit"].as_str().unwrap()))
        .collect();
    assert_eq!(units, [("p50", "ms"), ("p95", "ms"), ("p99", "ms")]);
    let rows = latency["rows"].as_array().unwrap();
    assert_eq!(rows.len(), api.len());
    assert_eq!(rows.last().unwrap()["p95"], api.last().unwrap()["latency_p95"]);

    for bad in ["panel=nope", "format=xml", "range=forever"] {
        let r = reqwest::get(app.url(&format!("/api/export?{bad}"))).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let msg: serde_json::Value = r.json().await.unwrap();
        let param = bad.split('=').next().unwrap();
        assert!(msg["error"].as_str().unwrap().contains(param), "{msg}");
    }
    // The page links every chart panel to its download, with the selection.
    let page = reqwest::get(app.url("/?range=5m&variant=production")).await.unwrap().text().await.unwrap();
    for id in ["requests", "latency", "errors", "tokens", "concurrency", "utilization", "ratelimit", "cost"] {
        let href = format!("/api/export?panel={id}&amp;range=5m&amp;variant=production&amp;format=csv");
        let href_alt = format!("/api/export?panel={id}&#38;range=5m&#38;variant=production&#38;format=csv");
        assert!(page.contains(&href) || page.contains(&href_alt), "no CSV link for panel {id}");
    }
    app.stop().await;
}
