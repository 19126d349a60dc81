//! The Prometheus HTTP API client: `query` and `query_range` over POST (a long expression never
//! meets a URL length limit), with the configured credentials and headers, a timeout on every
//! request and a cap on the answer, and errors phrased as sentences that name the engine by
//! its URL without credentials.
//!
//! Prometheus, VictoriaMetrics, Thanos and Mimir answer the same API, so nothing here knows
//! which one it talks to.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::EngineSettings;
use crate::setting::Secret;
use crate::source::SourceError;

/// Largest answer read (an answer beyond it is an error, not a truncation).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Longest error text of the engine quoted back.
const MAX_QUOTED_CHARS: usize = 200;

/// Labels of one series.
pub type Labels = BTreeMap<String, String>;

/// One series of an answer: its labels and `(Unix ms, value)` samples (one for an instant
/// query). Values the engine writes as `NaN` or `±Inf` are kept as such.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels.
    pub labels: Labels,
    /// Samples, ascending by time.
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    /// A label's value, or `""` (PromQL's reading of a missing label).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
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
}

impl EngineError {
    /// The engine could not be reached, did not answer in time or said it is overloaded (a
    /// 503 for our client), rather than answering wrongly (a 502).
    pub fn is_unavailable(&self) -> bool {
        match self {
            EngineError::Timeout { .. } | EngineError::Unreachable { .. } => true,
            EngineError::Status { status, .. } => *status == 503 || *status == 429,
            EngineError::Body { .. } => false,
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
pub struct Client {
    http: reqwest::Client,
    /// Base URL without credentials and without a trailing `/`.
    base: String,
    timeout: Duration,
    /// User and password taken out of the URL, sent as basic auth.
    basic_auth: Option<(String, Secret)>,
}

impl Client {
    /// A client with the settings' credentials, headers and timeout.
    pub fn new(s: &EngineSettings) -> Result<Self, reqwest::Error> {
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
    pub fn engine(&self) -> &str {
        &self.base
    }

    /// An instant query at `at_ms`.
    pub async fn instant(&self, expr: &str, at_ms: i64) -> Result<Vec<Series>, EngineError> {
        self.post("/api/v1/query", &[("query", expr.to_owned()), ("time", seconds(at_ms))]).await
    }

    /// A range query evaluated at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`.
    pub async fn range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>, EngineError> {
        let params = [
            ("query", expr.to_owned()),
            ("start", seconds(start_ms)),
            ("end", seconds(end_ms)),
            ("step", seconds(step_ms)),
        ];
        self.post("/api/v1/query_range", &params).await
    }

    async fn post(&self, path: &str, params: &[(&str, String)]) -> Result<Vec<Series>, EngineError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
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
        let body = self.read_capped(resp).await?;
        self.decode(status.as_u16(), &body)
    }

    /// Reads the answer, at most [`MAX_BODY_BYTES`].
    async fn read_capped(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, EngineError> {
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(self.body(format!("an answer larger than {} MiB", MAX_BODY_BYTES >> 20)));
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
                message: shorten(e.error.as_deref().unwrap_or("no error text")),
            }),
            Err(_) if !(200..300).contains(&status) => Err(EngineError::Status {
                engine: self.base.clone(),
                status,
                message: shorten(&String::from_utf8_lossy(body)),
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
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// At most [`MAX_QUOTED_CHARS`] of a text, on one line.
fn shorten(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
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
    fn long_error_texts_are_shortened() {
        let long = "x".repeat(500);
        assert_eq!(shorten(&long).len(), MAX_QUOTED_CHARS + 3);
    }
}
