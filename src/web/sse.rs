//! `GET /api/events`: the HTTP adapter over [`crate::hub`].
//!
//! Unnamed `data:` events, as the Go dashboard's client expects: first
//! `{"type":"connected","scrape_interval":5,"variants":[...],"data":{...}}`, then
//! `{"type":"metrics","data":<point>}` per variant per tick and `{"type":"version",...}` when a
//! target's version changes, each with an `id:`; a heartbeat comment every 15 s keeps proxies from timing the
//! stream out. `X-Accel-Buffering: no` stops nginx from buffering it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::AppState;
use super::error::ApiError;
use crate::hub::HubEvent;

/// How often an idle stream gets a heartbeat comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET /api/events`.
pub async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    let last_event_id =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let variants: Vec<String> = super::api::known_variants(&state).await?.into_iter().collect();
    let sub = state.hub.subscribe(last_event_id);
    let first = Event::default().id(connected_id(&sub, last_event_id).to_string()).data(connected(&state, &variants));
    let live = BroadcastStream::new(sub.live)
        // A lagged client is cut: it reconnects with Last-Event-ID instead of silently missing points.
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok()));
    let events = stream::once(std::future::ready(first))
        .chain(stream::iter(sub.replay).map(to_event))
        .chain(live.map(to_event))
        .map(Ok::<_, Infallible>)
        .take_until(state.stopping.clone().cancelled_owned());
    Ok(sse_response(events))
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

fn to_event(e: Arc<HubEvent>) -> Event {
    Event::default().id(e.id.to_string()).data(e.data.as_str())
}

fn sse_response(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    (headers, Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
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
}
