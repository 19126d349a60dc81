//! The zai-dash side, reached only over HTTP through a base URL, so the same checks can run
//! against any deployment of the API (a later issue points them at zai-dash's PromQL source mode).
//!
//! The readers that run in the background (the point collector, the live stream) never stop
//! quietly: a failed request, an answer that is not what the API promises, a stream that ends
//! or skips an event id ends the reader with an error, which [`Reader::finish`] hands to the
//! test (the suite fails on it). A reader that stopped early would otherwise only mean fewer
//! checks, and fewer checks pass.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
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

    /// GET `path`: status and JSON body, or what went wrong (no answer, a body that is not JSON).
    pub async fn try_get(&self, path: &str) -> Result<(u16, Value), String> {
        let resp =
            self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("GET {path}: HTTP {status}, body: {e}"))?;
        let body =
            serde_json::from_str(&text).map_err(|e| format!("GET {path}: HTTP {status}, not JSON ({e}): {text}"))?;
        Ok((status, body))
    }

    /// GET `path`: status and JSON body (panics when there is no JSON answer).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// GET `path`, which must answer 2xx with JSON.
    pub async fn try_json(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.try_get(path).await?;
        if (200..300).contains(&status) { Ok(body) } else { Err(format!("GET {path}: HTTP {status} {body}")) }
    }

    /// GET `path`, which must answer 2xx with JSON.
    pub async fn json(&self, path: &str) -> Value {
        self.try_json(path).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The lines of zai-dash's own `/metrics` that say whether its database kept up (pool
    /// waits, the writer's queue, backlog and failures, downsample runs), for a failure
    /// message; what went wrong when they cannot be read.
    pub async fn storage_figures(&self) -> String {
        let text = match self.http.get(format!("{}/metrics", self.base)).send().await {
            Ok(resp) => resp.text().await.unwrap_or_else(|e| format!("/metrics: {e}")),
            Err(e) => return format!("/metrics: {e}"),
        };
        let keep = ["zai_dash_sqlite_pool", "zai_dash_write_", "zai_dash_downsample_duration_seconds_count"];
        let lines: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#') && keep.iter().any(|k| l.starts_with(k))).collect();
        lines.join(", ")
    }

    /// `/api/metrics?{query}`, which must be an array of points.
    pub async fn try_points(&self, query: &str) -> Result<Vec<Value>, String> {
        let body = self.try_json(&format!("/api/metrics?{query}")).await?;
        body.as_array().cloned().ok_or_else(|| format!("/api/metrics?{query}: not an array: {body}"))
    }

    /// `/api/metrics?{query}` as an array of points (panics otherwise).
    pub async fn points(&self, query: &str) -> Vec<Value> {
        self.try_points(query).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A background reader: what it gathered so far, and how it ended.
pub struct Reader<T> {
    pub data: Arc<Mutex<T>>,
    task: JoinHandle<Result<(), String>>,
    stop: CancellationToken,
}

impl<T: Clone> Reader<T> {
    /// Whether the reader has ended on its own (an error: it only ends otherwise when stopped).
    pub fn stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the reader and returns what it gathered, or its error (a panic inside it too).
    pub async fn finish(self) -> (T, Result<(), String>) {
        self.stop.cancel();
        let ended = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(format!("the reader panicked: {e}")),
        };
        let data = self.data.lock().unwrap().clone();
        (data, ended)
    }
}

/// One read of a point query.
#[derive(Debug, Clone)]
pub struct Read {
    /// Which query (`raw`, `step`).
    pub shape: &'static str,
    /// When the request was sent, Unix ms (zai-dash's `now` is between the two).
    pub sent_ms: i64,
    /// When the answer arrived, Unix ms.
    pub at_ms: i64,
    pub points: Vec<Value>,
}

/// Reads point queries every few seconds while the run goes on: raw rows only live for
/// `RETENTION_5S`, so the 5 s-table answers must be taken while they exist. Repeated reads of
/// the same bucket also show whether an answer changes (cache, retention). The first failed
/// read ends the reader with its error.
pub fn spawn_collector(dash: Dash, queries: Vec<(&'static str, String)>, every: Duration) -> Reader<Vec<Read>> {
    let data: Arc<Mutex<Vec<Read>>> = Arc::default();
    let stop = CancellationToken::new();
    let (sink, cancel) = (data.clone(), stop.clone());
    let task = tokio::spawn(async move {
        loop {
            for (shape, q) in &queries {
                let sent_ms = SystemClock.now_ms();
                let points = dash.try_points(q).await.map_err(|e| format!("{shape} read sent at {sent_ms}: {e}"))?;
                sink.lock().unwrap().push(Read { shape, sent_ms, at_ms: SystemClock.now_ms(), points });
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
    });
    Reader { data, task, stop }
}

/// What an SSE connection delivered.
#[derive(Debug, Default, Clone)]
pub struct SseLog {
    pub connected: Option<Value>,
    /// `(arrival Unix ms, metrics point)`.
    pub points: Vec<(i64, Value)>,
}

/// Follows `/api/events` until stopped. Every event must be a JSON object of a known type
/// (`connected` first, then `metrics` and `version`) with an `id:` one above the previous
/// one; the stream must not end before the reader is stopped. Anything else ends the reader
/// with an error.
pub async fn spawn_sse(dash: &Dash) -> Reader<SseLog> {
    let resp = reqwest::Client::new().get(format!("{}/api/events", dash.base)).send().await.unwrap();
    assert!(resp.status().is_success(), "/api/events: {}", resp.status());
    let data: Arc<Mutex<SseLog>> = Arc::default();
    let stop = CancellationToken::new();
    let (sink, cancel) = (data.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut last_id: Option<u64> = None;
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                c = stream.next() => c,
            };
            let chunk = match chunk {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(format!("/api/events: the stream failed: {e}")),
                None => return Err("/api/events: the stream ended before the reader was stopped".into()),
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).map_err(|e| format!("/api/events: not UTF-8: {e}"))?;
                sse_block(&block, &mut last_id, &mut sink.lock().unwrap())?;
            }
        }
    });
    Reader { data, task, stop }
}

/// One SSE block (comment, or `id:` and `data:` lines) into `log`.
fn sse_block(block: &str, last_id: &mut Option<u64>, log: &mut SseLog) -> Result<(), String> {
    let mut data: Option<String> = None;
    for line in block.lines() {
        if let Some(id) = line.strip_prefix("id:") {
            let id: u64 = id.trim().parse().map_err(|e| format!("/api/events: bad id {line:?}: {e}"))?;
            if let Some(prev) = *last_id
                && id != prev + 1
            {
                return Err(format!("/api/events: event id {id} after {prev}: events were skipped"));
            }
            *last_id = Some(id);
        } else if let Some(d) = line.strip_prefix("data:") {
            let d = d.strip_prefix(' ').unwrap_or(d);
            data = Some(data.map_or_else(|| d.to_owned(), |prev| format!("{prev}\n{d}")));
        } else if !line.is_empty() && !line.starts_with(':') {
            return Err(format!("/api/events: unexpected line {line:?}"));
        }
    }
    let Some(data) = data else { return Ok(()) };
    let event: Value = serde_json::from_str(&data).map_err(|e| format!("/api/events: not JSON ({e}): {data}"))?;
    match event["type"].as_str() {
        Some("connected") if log.connected.is_none() && log.points.is_empty() => log.connected = Some(event),
        Some("metrics") if log.connected.is_some() && event["data"].is_object() => {
            log.points.push((SystemClock.now_ms(), event["data"].clone()));
        }
        Some("version") if log.connected.is_some() => {}
        _ => return Err(format!("/api/events: unexpected event {event}")),
    }
    Ok(())
}

/// The variants of a `connected` event, wherever they are: Go's top-level `variants`
/// (docs/decisions.md, API shapes) and our `data.variants`. Each list present is returned.
pub fn connected_variants(event: &Value) -> Vec<Vec<String>> {
    let list = |v: &Value| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect());
    [list(&event["variants"]), list(&event["data"]["variants"])].into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    /// Serves `app` on loopback; its base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    async fn until_stopped<T: Clone>(reader: &Reader<T>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !reader.stopped() {
            assert!(std::time::Instant::now() < deadline, "the reader kept going");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_failed_read_ends_the_collector_with_its_error() {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new().route(
            "/api/metrics",
            get(move || {
                let first = hits.fetch_add(1, Ordering::SeqCst) == 0;
                async move { if first { (StatusCode::OK, "[]") } else { (StatusCode::INTERNAL_SERVER_ERROR, "{}") } }
            }),
        );
        let dash = Dash::new(&serve(app).await);
        let reader = spawn_collector(dash, vec![("raw", "range=30s".into())], Duration::from_millis(10));
        until_stopped(&reader).await;
        let (reads, ended) = reader.finish().await;
        assert_eq!(reads.len(), 1);
        assert!(ended.unwrap_err().contains("HTTP 500"));
    }

    #[tokio::test]
    async fn a_live_stream_that_ends_before_it_is_stopped_is_an_error() {
        let app = Router::new().route("/api/events", get(|| async { "id: 1\ndata: {\"type\":\"connected\"}\n\n" }));
        let reader = spawn_sse(&Dash::new(&serve(app).await)).await;
        until_stopped(&reader).await;
        let (log, ended) = reader.finish().await;
        assert!(log.connected.is_some());
        assert!(ended.unwrap_err().contains("ended before"));
    }

    fn feed(blocks: &[&str]) -> Result<SseLog, String> {
        let (mut log, mut id) = (SseLog::default(), None);
        for b in blocks {
            sse_block(b, &mut id, &mut log)?;
        }
        Ok(log)
    }

    #[test]
    fn the_live_stream_reader_refuses_gaps_and_unknown_events() {
        let connected = "id: 7\ndata: {\"type\":\"connected\"}\n\n";
        let point = |id: u64| format!("id: {id}\ndata: {{\"type\":\"metrics\",\"data\":{{}}}}\n\n");
        let ok = feed(&[connected, ": heartbeat\n\n", &point(8), &point(9)]).unwrap();
        assert_eq!(ok.points.len(), 2);
        assert!(feed(&[connected, &point(9)]).unwrap_err().contains("skipped"));
        assert!(feed(&[&point(8)]).unwrap_err().contains("unexpected event"), "metrics before connected");
        assert!(feed(&[connected, "id: 8\ndata: {\"type\":\"resync\"}\n\n"]).is_err());
        assert!(feed(&[connected, "id: 8\ndata: {not json\n\n"]).is_err());
    }
}
