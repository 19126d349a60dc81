//! The zai-dash side, reached only over HTTP through a base URL, so the same checks can run
//! against any deployment of the API (a later issue points them at zai-dash's PromQL source mode).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{Clock, SystemClock};

/// A zai-dash API.
#[derive(Clone)]
pub struct Dash {
    pub base: String,
    http: reqwest::Client,
}

impl Dash {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        }
    }

    /// GET `path`: status and JSON body (`Null` when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET `path`, which must answer 2xx.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert!((200..300).contains(&status), "{path}: HTTP {status} {body}");
        body
    }

    /// `/api/metrics?{query}` as an array of points.
    pub async fn points(&self, query: &str) -> Vec<Value> {
        self.json(&format!("/api/metrics?{query}")).await.as_array().cloned().unwrap_or_default()
    }
}

/// One read of a point query.
#[derive(Debug, Clone)]
pub struct Read {
    /// Which query (`raw`, `step`).
    pub shape: &'static str,
    /// When the answer arrived, Unix ms.
    pub at_ms: i64,
    pub points: Vec<Value>,
}

/// Reads point queries every few seconds while the run goes on: raw rows only live for
/// `RETENTION_5S`, so the 5 s-table answers must be taken while they exist. Repeated reads of
/// the same bucket also show whether an answer changes (cache, retention).
pub fn spawn_collector(
    dash: Dash,
    queries: Vec<(&'static str, String)>,
    every: Duration,
    stop: CancellationToken,
) -> Arc<Mutex<Vec<Read>>> {
    let out: Arc<Mutex<Vec<Read>>> = Arc::default();
    let sink = out.clone();
    tokio::spawn(async move {
        loop {
            for (shape, q) in &queries {
                let points = dash.points(q).await;
                sink.lock().unwrap().push(Read { shape, at_ms: SystemClock.now_ms(), points });
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
    out
}

/// What an SSE connection delivered.
#[derive(Debug, Default)]
pub struct SseLog {
    pub connected: Option<Value>,
    /// `(arrival Unix ms, metrics point)`.
    pub points: Vec<(i64, Value)>,
    pub ended: bool,
}

/// Follows `/api/events` until `stop`.
pub async fn spawn_sse(dash: &Dash, stop: CancellationToken) -> Arc<Mutex<SseLog>> {
    let log: Arc<Mutex<SseLog>> = Arc::default();
    let resp = reqwest::Client::new().get(format!("{}/api/events", dash.base)).send().await.unwrap();
    assert!(resp.status().is_success(), "/api/events: {}", resp.status());
    let sink = log.clone();
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! {
                () = stop.cancelled() => break,
                c = stream.next() => c,
            };
            let Some(Ok(chunk)) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    let Some(data) = line.strip_prefix("data:") else { continue };
                    let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
                    let mut l = sink.lock().unwrap();
                    match event["type"].as_str() {
                        Some("connected") => l.connected = Some(event),
                        Some("metrics") => l.points.push((SystemClock.now_ms(), event["data"].clone())),
                        _ => {}
                    }
                }
            }
        }
        sink.lock().unwrap().ended = true;
    });
    log
}

/// The variants of a `connected` event, wherever they are: Go's top-level `variants`
/// (decisions section 8) and our `data.variants`. Each list present is returned.
pub fn connected_variants(event: &Value) -> Vec<Vec<String>> {
    let list = |v: &Value| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect());
    [list(&event["variants"]), list(&event["data"]["variants"])].into_iter().flatten().collect()
}
