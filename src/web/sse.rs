//! `GET /api/events`: the HTTP adapter over [`crate::hub`].
//!
//! Unnamed `data:` events, as the Go dashboard's client expects: first
//! `{"type":"connected","scrape_interval":5,"variants":[...],"data":{...}}`, then
//! `{"type":"metrics","data":<point>}` per variant per tick and `{"type":"version",...}` when a
//! target's version changes, each with an `id:`; a heartbeat comment every 15 s keeps proxies from timing the
//! stream out. `X-Accel-Buffering: no` stops nginx from buffering it.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::BroadcastStream;

use super::AppState;
use super::error::ApiError;
use crate::hub::HubEvent;

/// How often an idle stream gets a heartbeat comment.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);

/// The heartbeat comment.
const HEARTBEAT_FRAME: &[u8] = b": heartbeat\n\n";

/// `GET /api/events`.
pub(crate) async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    let last_event_id =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let variants: Vec<String> = super::api::known_variants(&state).await?.into_iter().collect();
    let sub = state.hub.subscribe(last_event_id);
    let first = frame(connected_id(&sub, last_event_id), &connected(&state, &variants));
    let live = BroadcastStream::new(sub.live)
        // A lagged client is cut: it reconnects with Last-Event-ID instead of silently missing points.
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok()));
    let frames =
        stream::once(std::future::ready(first)).chain(stream::iter(sub.replay).map(encoded)).chain(live.map(encoded));
    let body = Heartbeat::new(frames.boxed(), HEARTBEAT)
        .take_until(state.stopping.clone().cancelled_owned())
        .map(Ok::<_, Infallible>);
    Ok(sse_response(Body::from_stream(body)))
}

/// The `connected` event: Go's client reads `scrape_interval` (whole seconds) and `variants` at
/// the top level; our own script reads the `data` object, where the interval may be fractional.
fn connected(state: &AppState, variants: &[String]) -> String {
    let secs = state.settings.scrape_interval.as_secs_f64();
    serde_json::json!({
        "type": "connected",
        "scrape_interval": secs.ceil().max(1.0) as u64,
        "variants": variants,
        "data": { "scrape_interval": secs, "variants": variants },
    })
    .to_string()
}

/// The `connected` event's id: where the client stands. On a resume with replayed events that
/// is the id it asked to resume from, so that a drop during the replay resumes at the first
/// event it missed rather than after the newest one; otherwise the newest id.
fn connected_id(sub: &crate::hub::Subscription, asked: Option<u64>) -> u64 {
    match asked {
        Some(id) if !sub.replay.is_empty() => id,
        _ => sub.last_id,
    }
}

/// A hub event's frame, encoded once for every client (a reference count per client).
fn encoded(e: Arc<HubEvent>) -> Bytes {
    e.encoded.get_or_init(|| frame(e.id, &e.data)).clone()
}

/// One SSE event: `id: ID`, then `data: ` lines (a line break in `data` starts a new one, as
/// the format requires; JSON has none), then a blank line.
fn frame(id: u64, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    let _ = writeln!(out, "id: {id}");
    for line in data.split(['\r', '\n']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

fn sse_response(body: Body) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (headers, body)
}

/// Frames, plus a heartbeat comment whenever `every` passed without one. The timer is re-armed
/// only when it fires (to `every` after the last frame), not on every frame: a thousand
/// clients each resetting a timer per event is measurable.
struct Heartbeat<S> {
    inner: S,
    every: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> Heartbeat<S> {
    fn new(inner: S, every: Duration) -> Self {
        let now = Instant::now();
        Self { inner, every, last: now, timer: Box::pin(tokio::time::sleep_until(now + every)) }
    }
}

impl<S: Stream<Item = Bytes> + Unpin> Stream for Heartbeat<S> {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(frame)) => {
                self.last = Instant::now();
                return Poll::Ready(Some(frame));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last + self.every;
            let now = Instant::now();
            if now >= due {
                self.last = now;
                let next = now + self.every;
                self.timer.as_mut().reset(next);
                return Poll::Ready(Some(Bytes::from_static(HEARTBEAT_FRAME)));
            }
            self.timer.as_mut().reset(due); // frames went out since: wait for `every` after the last
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;

    #[test]
    fn a_resumed_stream_says_where_the_client_stands_before_the_replay() {
        let hub = Hub::new(100, 8, 8);
        let point = |v: &str| {
            crate::point::PointBuilder::new().build(
                crate::point::Bucket::narrow(5_000, 5_000),
                &[&crate::point::Summary { variant: v.into(), ..Default::default() }],
            )
        };
        hub.publish(point("a")); // id 100
        hub.publish(point("b")); // id 101
        hub.publish(point("c")); // id 102
        let resumed = hub.subscribe(Some(100));
        assert_eq!(resumed.replay.iter().map(|e| e.id).collect::<Vec<_>>(), [101, 102]);
        assert_eq!(connected_id(&resumed, Some(100)), 100, "not 102: the replay follows");
        let fresh = hub.subscribe(None);
        assert_eq!(connected_id(&fresh, None), 102);
        let current = hub.subscribe(Some(102));
        assert_eq!(connected_id(&current, Some(102)), 102);
    }

    #[test]
    fn a_frame_has_the_id_then_one_data_line_per_line() {
        assert_eq!(&frame(7, r#"{"type":"metrics"}"#)[..], b"id: 7\ndata: {\"type\":\"metrics\"}\n\n");
        assert_eq!(&frame(8, "a\nb\rc")[..], b"id: 8\ndata: a\ndata: b\ndata: c\n\n");
    }

    #[test]
    fn every_client_sends_the_same_encoded_frame() {
        let hub = Hub::new(1, 8, 8);
        let mut a = hub.subscribe(None).live;
        let mut b = hub.subscribe(None).live;
        hub.publish_events(vec![crate::ports::ingest::Event {
            ts_ms: 5_000,
            kind: crate::ports::ingest::EventKind::Version,
            variant: "production".into(),
            target: "http://pod:8080/metrics".into(),
            detail: "version 1 -> 2".into(),
        }]);
        let (fa, fb) = (encoded(a.try_recv().unwrap()), encoded(b.try_recv().unwrap()));
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "one encoding, shared");
        assert!(fa.starts_with(b"id: 1\ndata: {") && fa.ends_with(b"}\n\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_follows_fifteen_quiet_seconds_counted_from_the_last_frame() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let inner = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let mut s = Heartbeat::new(inner.boxed(), HEARTBEAT);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(Bytes::from_static(b"id: 1\ndata: x\n\n")).unwrap();
        assert_eq!(&s.next().await.unwrap()[..], b"id: 1\ndata: x\n\n");
        // Not at 15 s: the frame at 10 s restarted the count.
        assert_eq!(&s.next().await.unwrap()[..], HEARTBEAT_FRAME);
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        assert_eq!(&s.next().await.unwrap()[..], HEARTBEAT_FRAME);
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        drop(tx);
        assert!(s.next().await.is_none(), "the stream ends with its frames");
    }
}
