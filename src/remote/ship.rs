//! The remote writer's two tasks: the appender (hand-off to durable queue) and the shipper
//! (queue to receiver, in order, with retries).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::status::{RemoteStatus, Removal};
use super::{Auth, RemoteSettings, wire};
use crate::clock::SharedClock;
use crate::samples::{Chunk, QueueState, Queued, SampleQueue, ScrapeSamples};

/// Most scrapes gathered into one append.
const MAX_APPEND: usize = 512;
/// Longest honoured `Retry-After`: a receiver cannot park the queue for longer than this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Longest excerpt of a receiver's error body kept as the last error.
const BODY_EXCERPT: usize = 200;

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
        .user_agent(concat!("zai-dash/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .build()
}

/// Moves offered scrapes into the durable queue.
pub(super) struct Appender {
    pub queue: Arc<dyn SampleQueue>,
    pub status: Arc<RemoteStatus>,
    pub clock: SharedClock,
    pub wake: Arc<Notify>,
    pub window: Duration,
}

impl Appender {
    /// Runs until the hand-off closes (every scraper stopped), queueing everything offered.
    pub async fn run(self, mut rx: mpsc::Receiver<ScrapeSamples>) {
        while let Some(first) = rx.recv().await {
            let batch = gather(&mut rx, first, self.window).await;
            let samples: u64 = batch.iter().map(|s| s.series.len() as u64).sum();
            match tokio::task::spawn_blocking(move || batch.into_iter().map(wire::encode_chunk).collect()).await {
                Ok(chunks) => self.append(chunks, samples).await,
                Err(e) => self.lost(samples, format!("encoding samples failed: {e}")),
            }
        }
        tracing::debug!("Remote write appender stopped; every offered scrape is queued.");
    }

    async fn append(&self, chunks: Vec<Chunk>, samples: u64) {
        let _serial = self.status.queue_lock.lock().await;
        match self.queue.append(chunks).await {
            Ok(state) => {
                self.status.appended(samples, state);
                self.wake.notify_one();
            }
            Err(e) => self.lost(samples, format!("cannot queue samples: {e}")),
        }
    }

    fn lost(&self, samples: u64, message: String) {
        tracing::warn!(samples, error = %message, "Remote write samples dropped before queueing.");
        self.status.dropped_before_queue(samples);
        self.status.error(self.clock.now_ms(), message);
    }
}

/// `first` plus whatever arrives within `window`, up to [`MAX_APPEND`] scrapes: one
/// transaction for many targets' scrapes instead of one each.
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

/// Sends the queue's head to the receiver.
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
    /// Ships until `cancel`; what is left stays queued for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                next = self.step(&mut backoff) => next,
            };
            let pause = async {
                match next {
                    Next::Again => {}
                    Next::Idle => self.wake.notified().await,
                    Next::Wait(d) => tokio::time::sleep(d).await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = pause => {}
            }
        }
        tracing::debug!("Remote write shipper stopped; queued samples wait for the next start.");
    }

    /// Drops what is too old, then sends the oldest request's worth of samples once.
    async fn step(&self, backoff: &mut Backoff) -> Next {
        if let Err(e) = self.drop_old().await {
            return self.retry_later(backoff, format!("cannot trim the queue: {e}"), None);
        }
        let batch = match self.queue.oldest(self.settings.max_samples_per_send).await {
            Ok(b) if b.is_empty() => return Next::Idle,
            Ok(b) => b,
            Err(e) => return self.retry_later(backoff, format!("cannot read the queue: {e}"), None),
        };
        let last = batch.last().map_or(i64::MIN, |q| q.id);
        match self.send(batch).await {
            Ok(()) => {
                backoff.reset();
                self.settle(last, Removal::Sent).await
            }
            Err(Failure::Permanent(message)) => {
                tracing::warn!(error = %message, "Remote write receiver refused samples; they are dropped.");
                self.status.error(self.clock.now_ms(), message);
                self.settle(last, Removal::Failed).await
            }
            Err(Failure::Retry(message, after)) => self.retry_later(backoff, message, after),
        }
    }

    fn retry_later(&self, backoff: &mut Backoff, message: String, after: Option<Duration>) -> Next {
        let wait = after.map_or_else(|| backoff.next(), |a| a.min(MAX_RETRY_AFTER));
        tracing::debug!(error = %message, retry_in_ms = wait.as_millis() as u64, "Remote write will retry.");
        self.status.error(self.clock.now_ms(), message);
        Next::Wait(wait)
    }

    /// Removes the shipped (or refused) head through `last` and counts it.
    async fn settle(&self, last: i64, outcome: Removal) -> Next {
        let _serial = self.status.queue_lock.lock().await;
        match self.queue.remove_through(last).await {
            Ok(state) => {
                self.status.removed(state, outcome, self.clock.now_ms());
                Next::Again
            }
            Err(e) => {
                self.status.error(self.clock.now_ms(), format!("cannot remove shipped samples: {e}"));
                Next::Wait(self.settings.max_backoff)
            }
        }
    }

    /// Drops queued samples scraped before the backlog limit.
    async fn drop_old(&self) -> Result<(), crate::samples::QueueError> {
        let cutoff = self.clock.now_ms().saturating_sub(crate::setting::duration_ms(self.settings.max_backlog));
        let _serial = self.status.queue_lock.lock().await;
        let state: QueueState = self.queue.drop_before(cutoff).await?;
        if state.removed > 0 {
            tracing::warn!(
                samples = state.removed,
                "Remote write backlog limit reached; the oldest samples are dropped."
            );
            self.status.removed(state, Removal::Dropped, self.clock.now_ms());
        }
        Ok(())
    }

    /// One request with the chunks' samples.
    async fn send(&self, batch: Vec<Queued>) -> Result<(), Failure> {
        let body = match tokio::task::spawn_blocking(move || wire::request_body(&batch)).await {
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
        let excerpt = excerpt(&response.text().await.unwrap_or_default());
        Err(classify(status, excerpt, retry_after))
    }
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

/// The start of a receiver's error text on one line, printable characters only.
fn excerpt(body: &str) -> String {
    let one_line: String =
        body.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).take(BODY_EXCERPT).collect();
    one_line.trim().to_owned()
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

    #[test]
    fn error_excerpts_are_one_short_line() {
        let long = format!("bad\nsample\t{}", "x".repeat(500));
        let e = excerpt(&long);
        assert!(e.starts_with("bad sample ") && e.chars().count() <= BODY_EXCERPT);
    }
}
