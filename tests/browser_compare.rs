//! The compare page in a real browser: headless Chromium driven through Debian's chromedriver
//! (WebDriver over HTTP on a loopback port, started with the alerts suite's server harness),
//! against a real zai-dash with a failing canary. At 1400 and 390 px wide the page shows the
//! verdict, the metric table with values, confidence sequences, classifications and reasons,
//! and the verdict band with its rollout mark, without overflowing the screen. The same
//! content is in the HTML before any script runs. Screenshots go to `test-artifacts/`.

mod common;
#[path = "alerts/process.rs"]
mod harness;

use std::time::Duration;

use common::{Behaviour, FakeTarget, Sim, TestApp, settings, targets, wait_for};
use serde_json::{Value, json};

/// A WebDriver session on a chromedriver.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// A headless Chromium whose viewport is `width` x `height`.
    async fn open(driver: &str, width: u32, height: u32) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        // Chromium's windows are at least 500 px wide: a phone's width is emulated.
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}"), "--hide-scrollbars"],
            "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}},
        }}}});
        let resp: Value =
            http.post(format!("{driver}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}"));
        Self { http, session: format!("{driver}/session/{id}") }
    }

    async fn go(&self, url: &str) {
        let r = self.http.post(format!("{}/url", self.session)).json(&json!({"url": url})).send().await.unwrap();
        assert!(r.status().is_success(), "navigate: {}", r.text().await.unwrap());
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        let resp: Value = self
            .http
            .post(format!("{}/execute/sync", self.session))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["value"].clone()
    }

    async fn screenshot(&self, name: &str) {
        let resp: Value =
            self.http.get(format!("{}/screenshot", self.session)).send().await.unwrap().json().await.unwrap();
        let png = base64_decode(resp["value"].as_str().unwrap());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Standard base64 (the screenshot's encoding), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// What the page shows, read in the browser.
const READ_PAGE: &str = r#"
const q = (s) => document.querySelector(s);
const rows = [...document.querySelectorAll('#metrics tbody tr')];
const errors = q('#m-error_rate');
return {
  verdict: q('#verdict') && q('#verdict').textContent,
  rows: rows.length,
  error_class: errors && errors.querySelector('.pill').textContent,
  error_reason: errors && errors.querySelector('.reason').textContent,
  error_interval: errors && errors.querySelector('[data-label="Sequence"]').textContent,
  segments: document.querySelectorAll('#band rect.seg').length,
  failing: document.querySelectorAll('#band rect.seg.v-fail').length,
  marks: document.querySelectorAll('#band line.mark').length,
  band_width: q('#band svg').getBoundingClientRect().width,
  head_shown: getComputedStyle(q('#metrics thead')).display !== 'none',
  viewport: window.innerWidth,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  widest_row: Math.max(...rows.map((r) => r.getBoundingClientRect().right)),
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compare_page_shows_the_judgement_and_the_band_at_1400_and_390_px() {
    let production = FakeTarget::start(Sim::new("production", 40.0), Behaviour::Healthy).await;
    let mut broken = Sim::new("canary", 30.0);
    broken.err_rate = 10.0;
    let canary = FakeTarget::start(broken, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&production.url, &canary.url]))).await;
    let pair = "baseline=production&candidate=canary";
    wait_for("the canary to fail with a stored verdict", Duration::from_secs(90), || async {
        let history = app.json(&format!("/api/compare/history?{pair}&range=1h")).await;
        let stored = history["entries"].as_array().is_some_and(|e| e.iter().any(|e| e["verdict"] == "fail"));
        stored && app.json(&format!("/api/compare?{pair}")).await["verdict"] == "fail"
    })
    .await;
    // Before any script: the verdict, the table and the band are in the HTML.
    let html = reqwest::get(app.url(&format!("/compare?{pair}"))).await.unwrap().text().await.unwrap();
    for part in ["Verdict: <b>fail</b>", "id=\"m-error_rate\"", "class=\"seg v-fail\"", "rollout began"] {
        assert!(html.contains(part), "{part} missing from the HTML");
    }

    let dir = tempfile::tempdir().unwrap();
    let bin = harness::binary("chromedriver", "chromium-driver");
    let driver = harness::start(&bin, dir, |_, port| vec![format!("--port={port}")], "/status").await;
    for (width, height) in [(1400, 900), (390, 844)] {
        let browser = Browser::open(&driver.base, width, height).await;
        browser.go(&app.url(&format!("/compare?{pair}"))).await;
        let page = browser.eval(READ_PAGE).await;
        browser.screenshot(&format!("compare-{width}.png")).await;
        browser.close().await;
        let at = format!("at {width} px: {page:#}");
        assert_eq!(page["viewport"], width, "{at}");
        assert!(page["verdict"].as_str().unwrap().contains("fail"), "{at}");
        assert_eq!(page["rows"], 10, "one row per metric {at}");
        assert_eq!(page["error_class"], "high", "{at}");
        assert!(page["error_reason"].as_str().unwrap().contains(" of "), "sample sizes {at}");
        assert!(page["error_interval"].as_str().unwrap().starts_with('['), "the sequence {at}");
        assert!(page["segments"].as_u64().unwrap() >= 1 && page["failing"].as_u64().unwrap() >= 1, "{at}");
        assert!(page["marks"].as_u64().unwrap() >= 1, "the rollout's start is marked {at}");
        assert!(page["band_width"].as_f64().unwrap() >= f64::from(width) * 0.8, "the band spans the page {at}");
        assert!(page["overflow"].as_f64().unwrap() <= 0.0, "nothing wider than the screen {at}");
        assert!(page["widest_row"].as_f64().unwrap() <= f64::from(width), "{at}");
        assert_eq!(page["head_shown"], width > 500, "rows are cards on a phone {at}");
    }
    app.stop().await;
}
