//! The Prometheus HTTP API client: `query` and `query_range` over POST (a long expression never
//! meets a URL length limit), with the configured credentials and headers, a timeout on every
//! request, answers read as they arrive against the byte budget of the request they serve (an
//! error answer no further than 64 KiB), and errors phrased as sentences that name the engine
//! by its URL without credentials. Queries go out through a [`Session`](super::session::Session),
//! which bounds how many run at once and caches answers.
//!
//! Prometheus, VictoriaMetrics, Thanos and Mimir answer the same API, so nothing here knows
//! which one it talks to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::EngineSettings;
use crate::ports::read::SourceError;
use crate::setting::Secret;

/// Bytes of answers one request (a page, an API call, a live tick, an alert evaluation) may
/// read in all, over every query it makes: beyond it the request fails rather than hold more.
/// The cap used to be per answer, so a request of 16 queries could hold 16 times it.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes of an error answer read (for the text quoted back); the rest is not read, and
/// the connection is dropped with it.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Labels of one series.
pub(crate) type Labels = BTreeMap<String, String>;

/// One series of an answer: its labels and `(Unix ms, value)` samples (one for an instant
/// query). Values the engine writes as `NaN` or `±Inf` are kept as such.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// Labels.
    pub labels: Labels,
    /// Samples, ascending by time.
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    /// A label's value, or `""` (PromQL's reading of a missing label).
    pub(crate) fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    /// The bucket bound of a `_bucket` series' `le` label (`0.5`, `1e+06`, `+Inf`), `None`
    /// when it is missing or not a number.
    pub(crate) fn le(&self) -> Option<f64> {
        match self.label("le") {
            "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
            other => other.parse().ok(),
        }
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// No answer within the timeout.
    #[error("the metrics engine at {engine} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The engine's URL without credentials.
        engine: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The connection failed.
    #[error("the metrics engine at {engine} cannot be reached ({reason})")]
    Unreachable {
        /// The engine's URL without credentials.
        engine: String,
        /// What failed, without the request.
        reason: String,
    },
    /// The engine answered with an error status.
    #[error("the metrics engine at {engine} answered HTTP {status}: {message}")]
    Status {
        /// The engine's URL without credentials.
        engine: String,
        /// The HTTP status.
        status: u16,
        /// The engine's own error text, shortened.
        message: String,
    },
    /// The answer is not the Prometheus HTTP API's.
    #[error("the metrics engine at {engine} answered something that is not the Prometheus HTTP API ({reason})")]
    Body {
        /// The engine's URL without credentials.
        engine: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The answers of one request outgrew [`MAX_REQUEST_BYTES`].
    #[error("the metrics engine at {engine} answered more than {} MiB for one request; ask for a shorter window or a coarser step", MAX_REQUEST_BYTES >> 20)]
    TooLarge {
        /// The engine's URL without credentials.
        engine: String,
    },
    /// Every query slot stayed taken by other requests for the whole timeout.
    #[error("the metrics engine at {engine} is busy with other queries of zai-dash; try again")]
    Busy {
        /// The engine's URL without credentials.
        engine: String,
    },
    /// zai-dash will not send a query this large (a window or a number of steps beyond what
    /// SQLite mode answers).
    #[error("zai-dash does not ask the metrics engine at {engine} for {what}")]
    Bounds {
        /// The engine's URL without credentials.
        engine: String,
        /// What was too large, with the limit.
        what: String,
    },
}

impl EngineError {
    /// The engine could not be reached, did not answer in time or said it is overloaded (a
    /// 503 for our client), rather than answering wrongly (a 502).
    pub(crate) fn is_unavailable(&self) -> bool {
        match self {
            EngineError::Timeout { .. } | EngineError::Unreachable { .. } | EngineError::Busy { .. } => true,
            EngineError::Status { status, .. } => *status == 503 || *status == 429,
            EngineError::Body { .. } | EngineError::TooLarge { .. } | EngineError::Bounds { .. } => false,
        }
    }
}

impl From<EngineError> for SourceError {
    fn from(e: EngineError) -> Self {
        if e.is_unavailable() {
            SourceError::Unavailable(e.to_string())
        } else {
            SourceError::BadGateway(e.to_string())
        }
    }
}

/// The API's envelope.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<RawSeries>),
    Matrix(Vec<RawSeries>),
    Scalar(RawSample),
    /// A string result (`"foo"`): no series.
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: Labels,
    #[serde(default)]
    value: Option<RawSample>,
    #[serde(default)]
    values: Vec<RawSample>,
}

/// `[1700000000.123, "1.5"]`.
#[derive(Deserialize)]
struct RawSample(f64, String);

impl RawSample {
    fn parse(&self) -> Option<(i64, f64)> {
        let v = match self.1.as_str() {
            "NaN" => f64::NAN,
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().ok()?,
        };
        Some(((self.0 * 1000.0).round() as i64, v))
    }
}

/// A client of one engine.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// Base URL without credentials and without a trailing `/`.
    base: String,
    timeout: Duration,
    /// User and password taken out of the URL, sent as basic auth.
    basic_auth: Option<(String, Secret)>,
}

impl Client {
    /// A client with the settings' credentials, headers and timeout.
    pub(crate) fn new(s: &EngineSettings) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in &s.headers {
            if let (Ok(n), Ok(mut v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose()))
            {
                v.set_sensitive(true);
                headers.insert(n, v);
            }
        }
        if let Some(token) = &s.bearer_token
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, base: s.display_url(), timeout: s.timeout, basic_auth: s.basic_auth.clone() })
    }

    /// The engine's URL without credentials, as messages name it.
    pub(crate) fn engine(&self) -> &str {
        &self.base
    }

    /// The timeout of one query (also how long a query waits for a free slot).
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Posts `body` (a form) to `path`; the answer's bytes are taken from `budget`. Returns the
    /// series and the bytes the answer took.
    pub(super) async fn post(
        &self,
        path: &str,
        body: String,
        budget: &AtomicUsize,
    ) -> Result<(Vec<Series>, usize), EngineError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let resp = request.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let body = if status.is_success() { self.read_within(resp, budget).await? } else { read_error(resp).await };
        Ok((self.decode(status.as_u16(), &body)?, body.len()))
    }

    /// Reads an answer as it arrives, taking each piece from the request's `budget`: an answer
    /// that would overdraw it is an error, and the rest of it is never read.
    async fn read_within(&self, mut resp: reqwest::Response, budget: &AtomicUsize) -> Result<Vec<u8>, EngineError> {
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(&e))? {
            let taken = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(chunk.len()));
            if taken.is_err() {
                budget.store(0, Ordering::Relaxed); // the request fails: its other queries stop too
                return Err(EngineError::TooLarge { engine: self.base.clone() });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn decode(&self, status: u16, body: &[u8]) -> Result<Vec<Series>, EngineError> {
        let envelope: Result<Envelope, _> = serde_json::from_slice(body);
        match envelope {
            Ok(e) if e.status == "success" && (200..300).contains(&status) => match e.data {
                Some(data) => Ok(series_of(data)),
                None => Err(self.body("a success without data".into())),
            },
            Ok(e) => Err(EngineError::Status {
                engine: self.base.clone(),
                status,
                message: excerpt(e.error.as_deref().unwrap_or("no error text")),
            }),
            Err(_) if !(200..300).contains(&status) => Err(EngineError::Status {
                engine: self.base.clone(),
                status,
                message: excerpt(&String::from_utf8_lossy(body)),
            }),
            Err(e) => Err(self.body(format!("invalid JSON: {e}"))),
        }
    }

    fn transport(&self, e: &reqwest::Error) -> EngineError {
        if e.is_timeout() {
            return EngineError::Timeout { engine: self.base.clone(), timeout: self.timeout };
        }
        let reason = if e.is_connect() {
            std::error::Error::source(e).map_or_else(|| "connection failed".to_owned(), root_cause)
        } else if e.is_redirect() {
            "it redirects elsewhere".to_owned()
        } else {
            "the exchange failed".to_owned()
        };
        EngineError::Unreachable { engine: self.base.clone(), reason }
    }

    fn body(&self, reason: String) -> EngineError {
        EngineError::Body { engine: self.base.clone(), reason }
    }

    /// The refusal of a query beyond zai-dash's own bounds.
    pub(super) fn bounds(&self, what: String) -> EngineError {
        EngineError::Bounds { engine: self.base.clone(), what }
    }
}

/// The start of an error answer, at most [`MAX_ERROR_BYTES`]: enough for the engine's own
/// message, never a body of any size. A body cut short still says what it said so far.
async fn read_error(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BYTES {
        let Ok(Some(chunk)) = resp.chunk().await else { break };
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BYTES - body.len())]);
    }
    body
}

/// The innermost cause of a connection failure (`Connection refused (os error 111)`), which
/// names no URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn series_of(data: Data) -> Vec<Series> {
    match data {
        Data::Vector(v) | Data::Matrix(v) => v
            .into_iter()
            .map(|r| {
                let samples = r.value.iter().chain(&r.values).filter_map(RawSample::parse).collect();
                Series { labels: r.metric, samples }
            })
            .collect(),
        Data::Scalar(s) => {
            s.parse().map(|v| vec![Series { labels: Labels::new(), samples: vec![v] }]).unwrap_or_default()
        }
        Data::String(_) => Vec::new(),
    }
}

/// Unix ms as the API's seconds (`1700000000.123`).
pub(super) fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The engine's error text as it is quoted back: one short printable line.
fn excerpt(s: &str) -> String {
    crate::telemetry::excerpt(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::new(&EngineSettings::for_tests("http://u:secret@prom.example:9090/")).unwrap()
    }

    #[test]
    fn vectors_and_matrices_parse_with_special_values() {
        let c = client();
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"variant":"canary"},"values":[[1700000000.5,"1"],[1700000002,"NaN"],[1700000004,"+Inf"]]}]}}"#;
        let s = c.decode(200, body).unwrap();
        assert_eq!(s[0].label("variant"), "canary");
        assert_eq!(s[0].label("missing"), "");
        assert_eq!(s[0].samples[0], (1_700_000_000_500, 1.0));
        assert!(s[0].samples[1].1.is_nan());
        assert_eq!(s[0].samples[2].1, f64::INFINITY);
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2.5"]}]}}"#;
        assert_eq!(c.decode(200, body).unwrap()[0].samples, [(1_000, 2.5)]);
    }

    #[test]
    fn errors_name_the_engine_without_credentials() {
        let c = client();
        let e =
            c.decode(422, br#"{"status":"error","errorType":"execution","error":"bad   query\nhere"}"#).unwrap_err();
        assert_eq!(e.to_string(), "the metrics engine at http://prom.example:9090 answered HTTP 422: bad query here");
        assert!(matches!(SourceError::from(e), SourceError::BadGateway(_)));
        let e = c.decode(200, b"<html>login</html>").unwrap_err();
        assert!(e.to_string().contains("not the Prometheus HTTP API"), "{e}");
        assert!(!e.to_string().contains("secret"));
        let e = c.decode(503, b"overloaded").unwrap_err();
        assert!(matches!(SourceError::from(e), SourceError::Unavailable(_)));
    }

    #[test]
    fn times_are_seconds_with_milliseconds() {
        assert_eq!(seconds(1_700_000_000_005), "1700000000.005");
        assert_eq!(seconds(2_000), "2.000");
    }

    #[test]
    fn long_error_texts_are_shortened_to_one_printable_line() {
        let long = format!("\u{1b}[2J{}", "x".repeat(500));
        let e = client().decode(500, long.as_bytes()).unwrap_err().to_string();
        let quoted = e.split_once("answered HTTP 500: ").unwrap().1;
        assert!(quoted.starts_with("[2Jxxx") && quoted.ends_with("..."), "{e}");
        assert_eq!(quoted.chars().count(), crate::telemetry::EXCERPT_CHARS + 3);
    }
}
