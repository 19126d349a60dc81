//! Live fan-out of points to every connected browser.
//!
//! Each point is serialized once, numbered, kept in a small ring for `Last-Event-ID` resume
//! and sent on a broadcast channel. Sending never waits for a receiver: a client that falls
//! more than the channel's capacity behind sees `Lagged` and is cut (it reconnects and resumes
//! from the ring or backfills over REST), so one slow browser never delays the others.
//!
//! Event ids start at the wall-clock millisecond of process start and grow by one per event,
//! so ids of a restarted process are always above those of the previous one: a browser that
//! reconnects across a restart asks for an id older than the ring and gets the whole ring.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::broadcast;

use crate::point::Point;
use crate::ports::ingest::Event;

/// One event, ready to send.
#[derive(Debug)]
pub(crate) struct HubEvent {
    /// SSE `id:`.
    pub id: u64,
    /// SSE `data:` (JSON).
    pub data: String,
    /// The event as the live stream writes it, encoded by the first client that sends it and
    /// shared by all the others (`web::sse`): with a thousand clients, encoding per client cost
    /// more CPU than the hub's whole publish.
    pub encoded: OnceLock<bytes::Bytes>,
}

/// The live hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<Arc<HubEvent>>,
    /// Recent events; the lock also orders publish against subscribe, so a new subscriber's
    /// replay and live stream neither overlap nor leave a gap.
    ring: Mutex<Ring>,
    latest: RwLock<BTreeMap<String, Arc<Point>>>,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<HubEvent>>,
    capacity: usize,
    next_id: u64,
}

/// What a new subscriber gets: events to replay, then the live receiver.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// Events after the client's `Last-Event-ID`, oldest first.
    pub replay: Vec<Arc<HubEvent>>,
    /// Live events.
    pub live: broadcast::Receiver<Arc<HubEvent>>,
    /// Id of the newest event at subscription time (for the `connected` event).
    pub last_id: u64,
}

impl Hub {
    /// A hub whose first event id is `first_id`, remembering `ring_capacity` events and letting
    /// a client fall `client_buffer` events behind before it is cut.
    pub fn new(first_id: u64, ring_capacity: usize, client_buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(client_buffer.max(1));
        Self {
            inner: Arc::new(Inner {
                tx,
                ring: Mutex::new(Ring { events: VecDeque::new(), capacity: ring_capacity, next_id: first_id }),
                latest: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    /// Publishes points (one event each) and remembers them as the latest per variant.
    pub(crate) fn publish(&self, points: Vec<Point>) {
        for p in points {
            let data = serde_json::json!({ "type": "metrics", "data": &p }).to_string();
            if let Ok(mut latest) = self.inner.latest.write() {
                latest.insert(p.variant.clone(), Arc::new(p));
            }
            self.send(data);
        }
    }

    /// Publishes things that happened (`{"type":"version","data":{...}}`, ...); clients that
    /// only know `metrics` events (the Go dashboard's) ignore them.
    pub(crate) fn publish_events(&self, events: Vec<Event>) {
        for e in events {
            self.send(serde_json::json!({ "type": e.kind.as_str(), "data": &e }).to_string());
        }
    }

    /// Numbers one serialized event, keeps it in the ring and sends it to every subscriber.
    fn send(&self, data: String) {
        let Ok(mut ring) = self.inner.ring.lock() else { return };
        let event = Arc::new(HubEvent { id: ring.next_id, data, encoded: OnceLock::new() });
        ring.next_id += 1;
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        let _ = self.inner.tx.send(event); // no subscriber is fine
    }

    /// Subscribes, replaying ring events newer than `last_event_id` when one is given.
    pub(crate) fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let ring = match self.inner.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let live = self.inner.tx.subscribe();
        let replay = match last_event_id {
            Some(last) => ring.events.iter().filter(|e| e.id > last).cloned().collect(),
            None => Vec::new(),
        };
        Subscription { replay, live, last_id: ring.next_id.saturating_sub(1) }
    }

    /// The latest point of every variant that has one.
    pub(crate) fn latest(&self) -> BTreeMap<String, Arc<Point>> {
        self.inner.latest.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Connected live clients.
    pub(crate) fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

impl crate::ports::alert_state::Announcer for Hub {
    /// Alert changes and other non-point events: `{"type": kind, "data": ...}`, numbered and
    /// kept in the ring like points, so a resumed client sees them too.
    fn announce(&self, kind: &'static str, data: serde_json::Value) {
        self.send(serde_json::json!({ "type": kind, "data": data }).to_string());
    }
}

impl crate::ports::ingest::PointSink for Hub {
    fn publish(&self, points: Vec<Point>) {
        Hub::publish(self, points);
    }

    fn publish_events(&self, events: Vec<Event>) {
        Hub::publish_events(self, events);
    }
}
