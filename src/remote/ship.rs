//! The remote writer's two tasks: the appender (hand-off to memory, or to the durable queue when
//! samples would wait) and the shipper (oldest first to the receiver, with retries).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::status::{Pending, RemoteStatus, Removal};
use super::{Auth, RemoteSettings, wire};
use crate::clock::SharedClock;
use crate::samples::{Chunk, QueueState, SampleQueue, ScrapeSamples};

/// Most scrapes gathered into one append.
const MAX_APPEND: usize = 512;
/// Longest honoured `Retry-After`: a receiver cannot park the queue for longer than this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Most bytes of a receiver's error answer read (for the excerpt in the last error); the rest
/// is not read, and the connection is dropped with it. A receiver answering a 300 MB 400 cost
/// 630 MB of memory per attempt when the whole body was read.
const ERROR_BODY_BYTES: usize = 64 * 1024;
/// Memory chunks beyond this many bytes (or the byte limit, if smaller) go to the database even
/// while the receiver keeps up (a slow request let them pile up).
const SPILL_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP client: the protocol's headers, the configured ones, no redirects (a POST must
/// not turn into a GET elsewhere), one timeout over the whole exchange.
pub fn client(settings: &RemoteSettings) -> Result<reqwest::Client, reqwest::Error> {
    let mut headers = HeaderMap::new();
    headers.insert("content-encoding", HeaderValue::from_static("snappy"));
    headers.insert("content-type", HeaderValue::from_static("application/x-protobuf"));
    headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
    for (name, value) in &settings.headers {
        // Both were checked when the settings were validated.
        if let (Ok(n), Ok(mut v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose())) {
            v.set_sensitive(true);
            headers.insert(n, v);
        }
    }
    reqwest::Client::builder()
        .user_agent(concat!("zai-dash/", env!("ZAI_DASH_VERSION")))
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .build()
}

/// Moves offered scrapes to the shipper: into memory, or into the database when they would
/// wait (the shipper is retrying or stopped).
pub(super) struct Appender {
    pub queue: Arc<dyn SampleQueue>,
    pub status: Arc<RemoteStatus>,
    pub clock: SharedClock,
    pub wake: Arc<Notify>,
    pub window: Duration,
    /// `REMOTE_WRITE_MAX_BACKLOG_BYTES`, kept after every append to the database.
    pub max_bytes: u64,
}

impl Appender {
    /// Runs until the hand-off closes (every scraper stopped), queueing everything offered.
    pub async fn run(self, mut rx: mpsc::Receiver<ScrapeSamples>) {
        while let Some(first) = rx.recv().await {
            let batch = gather(&mut rx, first, self.window).await;
            let samples: u64 = batch.iter().map(|s| s.series.len() as u64).sum();
            match tokio::task::spawn_blocking(move || batch.into_iter().map(wire::encode_chunk).collect()).await {
                Ok(chunks) => self.queue(chunks, samples).await,
                Err(e) => self.lost(samples, format!("encoding samples failed: {e}")),
            }
        }
        tracing::debug!("Remote write appender stopped; every offered scrape is queued.");
    }

    async fn queue(&self, chunks: Vec<Chunk>, samples: u64) {
        let _serial = self.status.queue_lock.lock().await;
        let Some(chunks) = self.status.with_pending(|p| to_memory_unless_waiting(p, chunks)) else {
            self.status.queued(samples);
            self.wake.notify_one();
            return;
        };
        let bytes = payload_bytes(&chunks);
        // Room first, so the queue never holds more than the limit, not even for a moment.
        self.trim(bytes).await;
        match self.queue.append(chunks).await {
            Ok(state) => {
                self.status.queued(samples);
                self.status.with_pending(|p| {
                    p.disk_head = p.disk_head.or(state.head_ms);
                    p.disk_bytes += bytes;
                });
                self.trim(0).await; // a scrape larger than the whole limit
                self.wake.notify_one();
            }
            Err(e) => self.lost(samples, format!("cannot queue samples: {e}")),
        }
    }

    /// Makes room for `incoming` bytes within the byte limit; a failure is kept as the last
    /// error (the next append tries again).
    async fn trim(&self, incoming: u64) {
        let now = self.clock.now_ms();
        if let Err(e) = trim_to_bytes(self.queue.as_ref(), &self.status, self.max_bytes, incoming, now).await {
            self.status.error(now, format!("cannot trim the queue: {e}"));
        }
    }

    fn lost(&self, samples: u64, message: String) {
        if let Some(suppressed) = self.status.warnings.queue.admit() {
            tracing::warn!(samples, error = %message, suppressed, "Remote write samples dropped before queueing.");
        }
        self.status.dropped_before_queue(samples);
        self.status.error(self.clock.now_ms(), message);
    }
}

/// Payload bytes of `chunks`.
fn payload_bytes(chunks: &[Chunk]) -> u64 {
    chunks.iter().map(|c| c.payload.len() as u64).sum()
}

/// Drops the oldest database chunks, never those of the request under way, until everything
/// waiting and `incoming` more bytes fit in `max_bytes`; counts them. Called with `queue_lock`
/// held.
async fn trim_to_bytes(
    queue: &dyn SampleQueue,
    status: &RemoteStatus,
    max_bytes: u64,
    incoming: u64,
    now_ms: i64,
) -> Result<(), crate::samples::QueueError> {
    let (excess, after, on_disk) = status.with_pending(|p| {
        (p.bytes().saturating_add(incoming).saturating_sub(max_bytes), p.sending_through, p.disk_head.is_some())
    });
    if excess == 0 || !on_disk {
        return Ok(());
    }
    let state = queue.drop_bytes(excess, after).await?;
    status.with_pending(|p| {
        p.disk_bytes = p.disk_bytes.saturating_sub(state.removed_bytes);
        p.disk_head = state.head_ms;
    });
    if state.removed > 0 {
        if let Some(suppressed) = status.warnings.too_big.admit() {
            tracing::warn!(
                samples = state.removed,
                suppressed,
                max_bytes,
                "Remote write backlog is over REMOTE_WRITE_MAX_BACKLOG_BYTES; the oldest samples are dropped."
            );
        }
        status.removed(state.removed, Removal::Dropped, now_ms);
    }
    Ok(())
}

/// Adds `chunks` to memory, unless they would wait there: then they are handed back for the
/// database.
fn to_memory_unless_waiting(p: &mut Pending, chunks: Vec<Chunk>) -> Option<Vec<Chunk>> {
    if p.to_disk() {
        return Some(chunks);
    }
    p.memory_bytes += chunks.iter().map(|c| c.payload.len()).sum::<usize>();
    p.memory.extend(chunks);
    None
}

/// `first` plus whatever arrives within `window`, up to [`MAX_APPEND`] scrapes: one encoding
/// pass and at most one transaction for many targets' scrapes.
async fn gather(rx: &mut mpsc::Receiver<ScrapeSamples>, first: ScrapeSamples, window: Duration) -> Vec<ScrapeSamples> {
    let deadline = tokio::time::Instant::now() + window;
    let mut batch = vec![first];
    while batch.len() < MAX_APPEND {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => batch.push(s),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// Sends the oldest chunks to the receiver: the database's first, then memory's.
pub(super) struct Shipper {
    pub settings: Arc<RemoteSettings>,
    pub queue: Arc<dyn SampleQueue>,
    pub status: Arc<RemoteStatus>,
    pub client: reqwest::Client,
    pub clock: SharedClock,
    pub wake: Arc<Notify>,
}

/// What the shipper does after a step.
#[derive(Debug, PartialEq)]
enum Next {
    /// Ship the next request now.
    Again,
    /// Nothing queued: wait for the appender.
    Idle,
    /// Wait this long, then retry.
    Wait(Duration),
    /// Stop (shutdown during a request).
    Stop,
}

/// Where a request's chunks came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The database, through this id.
    Disk(i64),
    /// Memory (`Pending::in_flight`).
    Memory,
}

/// Why a request did not go through.
#[derive(Debug, PartialEq)]
pub(super) enum Failure {
    /// Try again later (5xx, 429, network), after `Retry-After` when the receiver gave one.
    Retry(String, Option<Duration>),
    /// The receiver refused these samples for good (4xx other than 429, a redirect).
    Permanent(String),
}

impl Shipper {
    /// Ships until `cancel`, then writes what memory holds to the database for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let stop = match self.step(&mut backoff, &cancel).await {
                Next::Stop => true,
                Next::Again => cancel.is_cancelled(),
                Next::Idle => pause(&cancel, self.wake.notified()).await,
                Next::Wait(d) => pause(&cancel, tokio::time::sleep(d)).await,
            };
            if stop {
                break;
            }
        }
        self.stop().await;
    }

    /// Drops what is too old, moves memory to the database when it would wait (a request failed,
    /// or memory outgrew its bound), then sends the oldest request's worth of samples once. While
    /// the database is being caught up with, new chunks stay in memory behind it. Only the request itself is cut short by `cancel`:
    /// queue changes always complete, so no chunk is ever half moved.
    async fn step(&self, backoff: &mut Backoff, cancel: &CancellationToken) -> Next {
        if let Err(e) = self.drop_old().await {
            return self.retry_later(backoff, format!("cannot trim the queue: {e}"), None);
        }
        let spill_at = SPILL_BYTES.min(usize::try_from(self.settings.max_backlog_bytes).unwrap_or(usize::MAX));
        if self.status.with_pending(|p| p.failing || p.memory_bytes > spill_at)
            && let Err(e) = self.spill().await
        {
            return self.retry_later(backoff, format!("cannot queue samples: {e}"), None);
        }
        let (payloads, samples, source) = match self.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Next::Idle,
            Err(e) => return self.retry_later(backoff, format!("cannot read the queue: {e}"), None),
        };
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            sent = self.send(payloads) => Some(sent),
        };
        self.status.with_pending(|p| p.sending_through = None);
        let Some(sent) = sent else { return Next::Stop };
        match sent {
            Ok(()) => {
                backoff.reset();
                self.status.with_pending(|p| p.failing = false);
                self.outage_over();
                self.settle(source, samples, Removal::Sent).await
            }
            Err(Failure::Permanent(message)) => {
                self.outage_over();
                if let Some(suppressed) = self.status.warnings.refused.admit() {
                    tracing::warn!(error = %message, suppressed, "Remote write receiver refused samples; they are dropped.");
                }
                self.status.error(self.clock.now_ms(), message);
                self.settle(source, samples, Removal::Failed).await
            }
            Err(Failure::Retry(message, after)) => {
                self.status.with_pending(|p| p.failing = true);
                self.outage_begins(&message);
                if let Err(e) = self.spill().await
                    && let Some(suppressed) = self.status.warnings.queue.admit()
                {
                    tracing::warn!(error = %e, suppressed, "Remote write cannot move waiting samples to the database.");
                }
                self.retry_later(backoff, message, after)
            }
        }
    }

    /// A request is to be retried: the first of a run starts an outage, written once (and at
    /// most once a minute for a receiver that keeps coming and going).
    fn outage_begins(&self, message: &str) {
        let w = &self.status.warnings;
        if w.in_outage.swap(true, Ordering::Relaxed) {
            return;
        }
        let logged = w.outage.admit().inspect(|suppressed| {
            tracing::warn!(error = %message, suppressed, receiver = %self.settings.receiver(), "Remote write receiver is not taking samples; they wait in the queue and the request is retried.");
        });
        w.outage_logged.store(logged.is_some(), Ordering::Relaxed);
    }

    /// The receiver answered (taking or refusing the request): an outage, if any, is over; its
    /// end is written when its start was.
    fn outage_over(&self) {
        let w = &self.status.warnings;
        if w.in_outage.swap(false, Ordering::Relaxed) && w.outage_logged.swap(false, Ordering::Relaxed) {
            tracing::info!(receiver = %self.settings.receiver(), "Remote write receiver answers again.");
        }
    }

    fn retry_later(&self, backoff: &mut Backoff, message: String, after: Option<Duration>) -> Next {
        let wait = after.map_or_else(|| backoff.next(), |a| a.min(MAX_RETRY_AFTER));
        tracing::debug!(error = %message, retry_in_ms = wait.as_millis() as u64, "Remote write will retry.");
        self.status.error(self.clock.now_ms(), message);
        Next::Wait(wait)
    }

    /// The oldest chunks up to the request size: from the database while it holds any (they are
    /// older), else taken from memory into `in_flight`.
    async fn next_batch(&self) -> Result<Option<(Vec<Vec<u8>>, u64, Source)>, crate::samples::QueueError> {
        if self.status.with_pending(|p| p.disk_head.is_some()) {
            // Under the lock, so the byte limit never drops a chunk between this read and the
            // mark that keeps the request's chunks.
            let _serial = self.status.queue_lock.lock().await;
            let batch = self.queue.oldest(self.settings.max_samples_per_send).await?;
            if let Some(last) = batch.last().map(|q| q.id) {
                let samples = batch.iter().map(|q| q.chunk.samples).sum();
                self.status.with_pending(|p| p.sending_through = Some(last));
                return Ok(Some((batch.into_iter().map(|q| q.chunk.payload).collect(), samples, Source::Disk(last))));
            }
            self.status.with_pending(|p| p.disk_head = None);
        }
        Ok(self.status.with_pending(|p| take_from_memory(p, self.settings.max_samples_per_send)))
    }

    /// Counts the request's samples and removes them from where they came from.
    async fn settle(&self, source: Source, samples: u64, outcome: Removal) -> Next {
        let now = self.clock.now_ms();
        let Source::Disk(last) = source else {
            self.status.with_pending(|p| p.in_flight.clear());
            self.status.removed(samples, outcome, now);
            return Next::Again;
        };
        let _serial = self.status.queue_lock.lock().await;
        match self.queue.remove_through(last).await {
            Ok(state) => {
                self.status.removed(state.removed, outcome, now);
                self.status.with_pending(|p| {
                    p.disk_head = state.head_ms;
                    p.disk_bytes = p.disk_bytes.saturating_sub(state.removed_bytes);
                });
                Next::Again
            }
            Err(e) => {
                self.status.error(now, format!("cannot remove shipped samples: {e}"));
                Next::Wait(self.settings.max_backoff)
            }
        }
    }

    /// Moves the request under way and memory, oldest first, to the end of the database queue.
    async fn spill(&self) -> Result<(), crate::samples::QueueError> {
        let _serial = self.status.queue_lock.lock().await;
        self.spill_locked().await
    }

    async fn spill_locked(&self) -> Result<(), crate::samples::QueueError> {
        let chunks = self.status.with_pending(|p| {
            let mut chunks = std::mem::take(&mut p.in_flight);
            chunks.extend(p.memory.drain(..));
            p.memory_bytes = 0;
            chunks
        });
        if chunks.is_empty() {
            return Ok(());
        }
        let bytes = payload_bytes(&chunks);
        let (max, now) = (self.settings.max_backlog_bytes, self.clock.now_ms());
        if let Err(e) = trim_to_bytes(self.queue.as_ref(), &self.status, max, bytes, now).await {
            self.status.error(now, format!("cannot trim the queue: {e}"));
        }
        match self.queue.append(chunks.clone()).await {
            Ok(state) => {
                self.status.with_pending(|p| {
                    p.disk_head = p.disk_head.or(state.head_ms);
                    p.disk_bytes += bytes;
                });
                if let Err(e) = trim_to_bytes(self.queue.as_ref(), &self.status, max, 0, now).await {
                    self.status.error(now, format!("cannot trim the queue: {e}"));
                }
                Ok(())
            }
            Err(e) => {
                // Back to memory, in front of what arrived since: nothing lost, order kept.
                self.status.with_pending(|p| {
                    p.memory_bytes += chunks.iter().map(|c| c.payload.len()).sum::<usize>();
                    for c in chunks.into_iter().rev() {
                        p.memory.push_front(c);
                    }
                });
                Err(e)
            }
        }
    }

    /// At shutdown: memory to the database, then the appender writes there itself.
    async fn stop(&self) {
        let _serial = self.status.queue_lock.lock().await;
        if let Err(e) = self.spill_locked().await {
            let lost = self.status.with_pending(|p| {
                p.memory_bytes = 0;
                p.memory.drain(..).map(|c| c.samples).sum::<u64>()
            });
            tracing::warn!(samples = lost, error = %e, "Remote write samples lost at shutdown: the database refused them.");
            self.status.removed(lost, Removal::Dropped, self.clock.now_ms());
        }
        self.status.with_pending(|p| p.shipper_gone = true);
        tracing::debug!("Remote write shipper stopped; queued samples wait for the next start.");
    }

    /// Drops database chunks scraped before the backlog's age limit, then the oldest beyond its
    /// byte limit.
    async fn drop_old(&self) -> Result<(), crate::samples::QueueError> {
        if self.status.with_pending(|p| p.disk_head.is_none()) {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let cutoff = now.saturating_sub(crate::setting::duration_ms(self.settings.max_backlog));
        let _serial = self.status.queue_lock.lock().await;
        let state: QueueState = self.queue.drop_before(cutoff).await?;
        self.status.with_pending(|p| {
            p.disk_head = state.head_ms;
            p.disk_bytes = p.disk_bytes.saturating_sub(state.removed_bytes);
        });
        if state.removed > 0 {
            if let Some(suppressed) = self.status.warnings.too_old.admit() {
                tracing::warn!(
                    samples = state.removed,
                    suppressed,
                    "Remote write backlog is older than REMOTE_WRITE_MAX_BACKLOG; the oldest samples are dropped."
                );
            }
            self.status.removed(state.removed, Removal::Dropped, now);
        }
        trim_to_bytes(self.queue.as_ref(), &self.status, self.settings.max_backlog_bytes, 0, now).await
    }

    /// One request with the chunks' samples.
    async fn send(&self, payloads: Vec<Vec<u8>>) -> Result<(), Failure> {
        let body = match tokio::task::spawn_blocking(move || wire::request_body(&payloads)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return Err(Failure::Permanent(e.to_string())),
            Err(e) => return Err(Failure::Retry(format!("building the request failed: {e}"), None)),
        };
        let request = with_auth(self.client.post(self.settings.url.clone()).body(body), &self.settings.auth);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(Failure::Retry(format!("request failed: {}", error_chain(&e.without_url())), None)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers(), self.clock.now_ms());
        let excerpt = crate::telemetry::excerpt(&String::from_utf8_lossy(&body_prefix(response).await));
        Err(classify(status, excerpt, retry_after))
    }
}

/// At most [`ERROR_BODY_BYTES`] of an answer's body, read as it arrives; the rest is never read
/// (dropping the response closes the connection).
async fn body_prefix(mut response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_BYTES {
        let Ok(Some(chunk)) = response.chunk().await else { break };
        let room = ERROR_BODY_BYTES - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    out
}

/// Waits for `until` unless `cancel` comes first; true when cancelled.
async fn pause(cancel: &CancellationToken, until: impl std::future::Future<Output = ()>) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => true,
        () = until => false,
    }
}

/// Takes the oldest memory chunks that fit in `max_samples` (at least one) into `in_flight`;
/// returns copies of their payloads, their samples and the source.
fn take_from_memory(p: &mut Pending, max_samples: u64) -> Option<(Vec<Vec<u8>>, u64, Source)> {
    let mut samples = 0;
    while let Some(front) = p.memory.front() {
        if !p.in_flight.is_empty() && samples + front.samples > max_samples {
            break;
        }
        samples += front.samples;
        p.memory_bytes = p.memory_bytes.saturating_sub(front.payload.len());
        p.in_flight.extend(p.memory.pop_front());
    }
    (!p.in_flight.is_empty())
        .then(|| (p.in_flight.iter().map(|c| c.payload.clone()).collect(), samples, Source::Memory))
}

fn with_auth(request: reqwest::RequestBuilder, auth: &Auth) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token.expose()),
        Auth::Basic { username, password } => request.basic_auth(username, Some(password.expose())),
    }
}

/// A non-2xx answer: 5xx and 429 are retried, anything else is permanent for these samples.
pub(super) fn classify(status: StatusCode, excerpt: String, retry_after: Option<Duration>) -> Failure {
    let message = if excerpt.is_empty() {
        format!("receiver answered {status}")
    } else {
        format!("receiver answered {status}: {excerpt}")
    };
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Failure::Retry(message, retry_after)
    } else {
        Failure::Permanent(message)
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to `now_ms`.
pub(super) fn retry_after(headers: &HeaderMap, now_ms: i64) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?.timestamp_millis();
    Some(Duration::from_millis(u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0)))
}

/// An error and its causes (`error sending request: connection refused`), without the URL.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Exponential backoff: `min`, doubled after each failure in a row, at most `max`.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), current: min }
    }

    /// The next delay.
    pub(super) fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    pub(super) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let seen: Vec<u128> = (0..5).map(|_| b.next().as_millis()).collect();
        assert_eq!(seen, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(500));
    }

    #[test]
    fn only_5xx_and_429_are_retried() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, String::new(), after),
            Failure::Retry("receiver answered 429 Too Many Requests".into(), after)
        );
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, String::new(), None), Failure::Retry(..)));
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, "out of order sample".into(), None),
            Failure::Permanent("receiver answered 400 Bad Request: out of order sample".into())
        );
        assert!(matches!(classify(StatusCode::MOVED_PERMANENTLY, String::new(), None), Failure::Permanent(_)));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("12"));
        assert_eq!(retry_after(&h, 0), Some(Duration::from_secs(12)));
        h.insert("retry-after", HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        let date_ms = 784_111_777_000;
        assert_eq!(retry_after(&h, date_ms - 3_000), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&h, date_ms + 3_000), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, 0), None);
    }

    fn chunk(ts_ms: i64, samples: u64) -> Chunk {
        Chunk { ts_ms, samples, payload: vec![0; 10] }
    }

    #[test]
    fn memory_is_shipped_oldest_first_within_the_request_size() {
        let mut p = Pending::default();
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 3), chunk(2, 3), chunk(3, 3)]).is_none());
        assert_eq!(p.memory_bytes, 30);
        let (payloads, samples, source) = take_from_memory(&mut p, 7).unwrap();
        assert_eq!((payloads.len(), samples, source), (2, 6, Source::Memory));
        assert_eq!(p.in_flight.iter().map(|c| c.ts_ms).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((p.memory.len(), p.memory_bytes), (1, 10));
        p.in_flight.clear();
        assert_eq!(take_from_memory(&mut p, 1).unwrap().1, 3, "one chunk even when it exceeds the size");
    }

    #[test]
    fn chunks_go_to_the_database_only_when_they_would_wait() {
        let mut p = Pending { failing: true, ..Pending::default() };
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 1)]).is_some(), "retrying, nothing in memory");
        p.memory.push_back(chunk(0, 1));
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(2, 1)]).is_none(), "behind memory, to keep the order");
        let mut p = Pending { shipper_gone: true, ..Pending::default() };
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 1)]).is_some(), "after shutdown");
    }

    #[test]
    fn the_byte_limit_counts_memory_the_request_and_the_database() {
        let mut p = Pending { disk_bytes: 100, ..Pending::default() };
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 1), chunk(2, 1)]).is_none());
        take_from_memory(&mut p, 1);
        assert_eq!((p.memory_bytes, p.bytes()), (10, 120), "the database, memory and the request under way");
    }
}
