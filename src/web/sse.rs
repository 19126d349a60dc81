//! `GET /api/events`: the HTTP adapter over [`crate::hub`].
//!
//! Unnamed `data:` events, as the Go dashboard's client expects: first
//! `{"type":"connected","data":{...}}`, then `{"type":"metrics","data":<point>}` per variant per
//! tick, each with an `id:`; a heartbeat comment every 15 s keeps proxies from timing the
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
    let connected = serde_json::json!({
        "type": "connected",
        "data": { "scrape_interval": state.settings.scrape_interval.as_secs_f64(), "variants": variants },
    });
    let first = Event::default().id(sub.last_id.to_string()).data(connected.to_string());
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

fn to_event(e: Arc<HubEvent>) -> Event {
    Event::default().id(e.id.to_string()).data(e.data.as_str())
}

fn sse_response(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    (headers, Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}
