//! One attempt of the remote writer: the HTTP client, one request with the chunks' samples,
//! what its answer means (sent, retry later, refused for good) and the backoff between
//! attempts. Nothing here touches the queue: the shipper (`ship`) decides what to send and
//! what becomes of it.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Auth, RemoteSettings, wire};

/// Longest honoured `Retry-After`: a receiver cannot park the queue for longer than this.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Most bytes of a receiver's error answer read (for the excerpt in the last error); the rest
/// is not read, and the connection is dropped with it. A receiver answering a 300 MB 400 cost
/// 630 MB of memory per attempt when the whole body was read.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// The HTTP client: the protocol's headers, the configured ones, no redirects (a POST must
/// not turn into a GET elsewhere), one timeout over the whole exchange.
pub(crate) fn client(settings: &RemoteSettings) -> Result<reqwest::Client, reqwest::Error> {
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

/// Why a request did not go through.
#[derive(Debug, PartialEq)]
pub(super) enum Failure {
    /// Try again later (5xx, 429, network), after `Retry-After` when the receiver gave one.
    Retry(String, Option<Duration>),
    /// The receiver refused these samples for good (4xx other than 429, a redirect).
    Permanent(String),
}

/// One request with the chunks' samples: the body built off the runtime, sent once; an answer
/// that is not 2xx is read no further than [`ERROR_BODY_BYTES`] and classified.
pub(super) async fn send(
    client: &reqwest::Client,
    settings: &RemoteSettings,
    now_ms: impl Fn() -> i64,
    payloads: Vec<Vec<u8>>,
) -> Result<(), Failure> {
    let body = match tokio::task::spawn_blocking(move || wire::request_body(&payloads)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return Err(Failure::Permanent(e.to_string())),
        Err(e) => return Err(Failure::Retry(format!("building the request failed: {e}"), None)),
    };
    let request = with_auth(client.post(settings.url.clone()).body(body), &settings.auth);
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Err(Failure::Retry(format!("request failed: {}", error_chain(&e.without_url())), None)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = retry_after(response.headers(), now_ms());
    let excerpt = crate::telemetry::excerpt(&String::from_utf8_lossy(&body_prefix(response).await));
    Err(classify(status, excerpt, retry_after))
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
}
