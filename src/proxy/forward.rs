//! Forwarding one request: admission, upstream attempts with retries, streaming the answer back
//! unbuffered, and recording every metric on the way out.
//!
//! The request body is read whole (up to `MAX_REQUEST_BODY_BYTES`): it is small next to the
//! answer, it names the model, and a retry must send it again. The response is never buffered
//! when the client asked to stream: the first upstream chunk is forwarded as soon as it arrives,
//! while a copy feeds the usage reader. Retries happen only before anything reached the client.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use super::Proxy;
use super::metrics::client_bucket;
use super::pricing::tier;
use super::usage::{self, ApiKind, RequestInfo, SseUsage, Usage};

/// Largest 429 body read to classify it.
const THROTTLE_BODY_LIMIT: usize = 32 * 1024;
/// Largest non-streaming response accepted (it is validated as JSON before it is sent on).
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;

/// Labels and timing shared by every exit of one request.
#[derive(Debug, Clone)]
struct Ctx {
    method: Method,
    path: String,
    model: String,
    kind: ApiKind,
    started: Instant,
    info: RequestInfo,
}

impl Ctx {
    fn record(&self, p: &Proxy, status: u16, with_duration: bool) {
        let v = p.settings.variant.as_str();
        let code = status.to_string();
        let labels = [self.method.as_str(), self.path.as_str(), code.as_str(), v];
        p.metrics.requests.add(&labels, 1.0);
        if with_duration {
            p.metrics.request_duration.observe(&labels, self.started.elapsed().as_secs_f64());
        }
    }

    fn record_response_size(&self, p: &Proxy, status: u16, bytes: u64) {
        let code = status.to_string();
        let labels = [self.method.as_str(), self.path.as_str(), code.as_str(), p.settings.variant.as_str()];
        p.metrics.response_size.observe(&labels, bytes as f64);
    }

    fn record_usage(&self, p: &Proxy, u: &Usage) {
        if !p.settings.token_counting {
            return;
        }
        let v = p.settings.variant.as_str();
        let t = tier(p.clock.now_ms());
        for (direction, n) in u.by_direction() {
            if n > 0 {
                p.metrics.tokens.add(&[direction, &self.model, t, v], n as f64);
                p.metrics
                    .estimated_cost_usd
                    .add(&[direction, &self.model, t, v], p.settings.pricing.cost(direction, n, t));
            }
        }
    }
}

/// Every proxied request.
pub async fn handle(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let started = Instant::now();
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    let client = client_bucket(&peer);
    let path = p.metrics.path_label(req.uri().path());
    let kind = ApiKind::from_path(req.uri().path());
    let mut ctx =
        Ctx { method: req.method().clone(), path, model: String::new(), kind, started, info: RequestInfo::default() };
    let v = p.settings.variant.clone();
    let Some(_slot) = p.try_take_slot() else {
        p.metrics.rate_limit_rejections.add(&[&client, &v], 1.0);
        ctx.record(&p, 503, false);
        return error(
            kind,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "the proxy is at capacity (MAX_WORKERS); retry later",
        );
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body, p.settings.max_request_bytes).await {
        Ok(b) => b,
        Err(status) => {
            ctx.record(&p, status.as_u16(), true);
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body larger than MAX_REQUEST_BODY_BYTES ({} bytes)", p.settings.max_request_bytes)
            } else {
                "could not read the request body".to_owned()
            };
            return error(kind, status, "invalid_request_error", &msg);
        }
    };
    ctx.info = usage::request_info(&body);
    ctx.model = p.metrics.model_label(ctx.info.model.as_deref().unwrap_or(&p.settings.tokenizer_model));
    if !body.is_empty() {
        p.metrics.request_size.observe(&[ctx.method.as_str(), &ctx.path, &v], body.len() as f64);
        if p.settings.token_counting {
            let t = Instant::now();
            std::hint::black_box(usage::estimate_tokens(ctx.info.text_len));
            p.metrics.token_count_duration.observe(&[&v], t.elapsed().as_secs_f64());
        }
    }
    let upstream = Upstream {
        url: upstream_url(&p.settings.target_url, &parts.uri),
        headers: upstream_headers(&parts.headers, kind, &p.settings.api_key),
        body,
    };
    attempts(&p, ctx, &client, &upstream).await
}

/// What is sent upstream on every attempt.
struct Upstream {
    url: String,
    headers: HeaderMap,
    body: Bytes,
}

/// Outcome of one attempt that may be retried.
enum Retry {
    /// Retry with this reason after at least this delay.
    After(&'static str, Duration),
    /// Done: this is the response.
    Done(Response),
}

async fn attempts(p: &Arc<Proxy>, ctx: Ctx, client: &str, up: &Upstream) -> Response {
    let v = p.settings.variant.as_str();
    let mut attempt: u32 = 0;
    loop {
        let waited = p.limiter.acquire().await;
        p.metrics.rate_limit_wait.observe(&[client, v], waited.as_secs_f64());
        let last = attempt >= p.settings.max_retries;
        let outcome = match p
            .client
            .request(ctx.method.clone(), &up.url)
            .headers(up.headers.clone())
            .body(up.body.clone())
            .send()
            .await
        {
            Err(e) => {
                p.metrics.upstream_errors.add(&["upstream_connection", v], 1.0);
                tracing::debug!(error = %e, attempt, "Upstream attempt failed.");
                if last {
                    ctx.record(p, 502, true);
                    Retry::Done(error(
                        ctx.kind,
                        StatusCode::BAD_GATEWAY,
                        "api_error",
                        &format!("upstream unreachable: {}", root_cause(&e)),
                    ))
                } else {
                    Retry::After("network_error", Duration::ZERO)
                }
            }
            Ok(resp) => respond(p, &ctx, resp, last).await,
        };
        match outcome {
            Retry::Done(r) => return r,
            Retry::After(reason, at_least) => {
                let backoff = p.settings.retry_base * 2u32.saturating_pow(attempt);
                tokio::time::sleep(backoff.max(at_least)).await;
                p.metrics.retry_attempts.add(&[reason, v], 1.0);
                p.metrics.retry_attempts.add(&["retry", v], 1.0);
                attempt += 1;
            }
        }
    }
}

async fn respond(p: &Arc<Proxy>, ctx: &Ctx, resp: reqwest::Response, last: bool) -> Retry {
    let status = resp.status();
    let v = p.settings.variant.as_str();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return throttled(p, ctx, resp, last).await;
    }
    if status.is_success() {
        return if ctx.info.stream {
            stream_success(p, ctx, resp, last).await
        } else {
            buffered_success(p, ctx, resp, last).await
        };
    }
    if status.as_u16() >= 400 {
        p.metrics.upstream_errors.add(&[status.as_str(), v], 1.0);
    }
    // Any other answer is the client's to see, as the upstream sent it.
    Retry::Done(stream_back(p, ctx, resp, false))
}

/// A 2xx answer to a non-streaming request: read it whole, check it is JSON, record usage.
async fn buffered_success(p: &Arc<Proxy>, ctx: &Ctx, resp: reqwest::Response, last: bool) -> Retry {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_upstream(resp, RESPONSE_LIMIT).await;
    // Parsed once: the check that it is JSON, the usage and the estimate all use this value.
    let json =
        body.as_ref().filter(|b| !b.is_empty()).and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
    let (Some(body), Some(json)) = (body, json) else {
        p.metrics.upstream_errors.add(&["truncated_response", p.settings.variant.as_str()], 1.0);
        if !last {
            return Retry::After("truncated_response", Duration::ZERO);
        }
        ctx.record(p, 502, true);
        return Retry::Done(error(
            ctx.kind,
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream returned an empty or malformed response after retries",
        ));
    };
    let usage = usage::reported(ctx.kind, &json).unwrap_or_else(|| estimate(p, ctx, &json));
    ctx.record_usage(p, &usage);
    p.limiter_success();
    ctx.record(p, status.as_u16(), true);
    ctx.record_response_size(p, status.as_u16(), body.len() as u64);
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    copy_response_headers(&headers, out.headers_mut());
    Retry::Done(out)
}

/// The local estimate for a response without usage, timed like zai-proxy's token counting.
fn estimate(p: &Proxy, ctx: &Ctx, body: &serde_json::Value) -> Usage {
    let t = Instant::now();
    let output = usage::estimate_tokens(usage::response_text_len(ctx.kind, body));
    let took = t.elapsed().as_secs_f64().max(1e-9);
    let v = p.settings.variant.as_str();
    let model = p.settings.tokenizer_model.as_str();
    p.metrics.token_rate_seconds.observe(&["output", model, v], took);
    p.metrics.token_rate.observe(&["output", model, v], output as f64 / took);
    Usage { input: usage::estimate_tokens(ctx.info.text_len), output, estimated: true, ..Usage::default() }
}

/// A 2xx answer to a streaming request: wait for the first bytes (an empty stream is retried),
/// then stream everything through.
async fn stream_success(p: &Arc<Proxy>, ctx: &Ctx, resp: reqwest::Response, last: bool) -> Retry {
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut upstream = resp.bytes_stream();
    let first = loop {
        match upstream.next().await {
            Some(Ok(chunk)) if chunk.is_empty() => continue,
            Some(Ok(chunk)) => break Some(chunk),
            Some(Err(_)) | None => break None,
        }
    };
    let Some(first) = first else {
        p.metrics.upstream_errors.add(&["empty_streaming", p.settings.variant.as_str()], 1.0);
        if !last {
            return Retry::After("empty_streaming", Duration::ZERO);
        }
        ctx.record(p, 502, true);
        return Retry::Done(error(
            ctx.kind,
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream returned an empty stream after retries",
        ));
    };
    let rest = futures_util::stream::once(std::future::ready(Ok(first))).chain(upstream);
    Retry::Done(tee_response(p, ctx, status, &headers, Box::pin(rest), true))
}

fn stream_back(p: &Arc<Proxy>, ctx: &Ctx, resp: reqwest::Response, success: bool) -> Response {
    let status = resp.status();
    let headers = resp.headers().clone();
    tee_response(p, ctx, status, &headers, Box::pin(resp.bytes_stream()), success)
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

fn tee_response(
    p: &Arc<Proxy>,
    ctx: &Ctx,
    status: StatusCode,
    headers: &HeaderMap,
    body: ByteStream,
    success: bool,
) -> Response {
    let tee = Tee {
        proxy: p.clone(),
        ctx: ctx.clone(),
        status,
        inner: body,
        sse: SseUsage::new(ctx.kind),
        bytes: 0,
        first_token: None,
        success,
        done: false,
    };
    let mut out = Response::new(Body::from_stream(tee));
    *out.status_mut() = status;
    copy_response_headers(headers, out.headers_mut());
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out
}

/// Forwards upstream chunks unchanged while reading usage and the first token from a copy;
/// records the request when the stream ends, and a `write_error` if the client goes away first.
struct Tee {
    proxy: Arc<Proxy>,
    ctx: Ctx,
    status: StatusCode,
    inner: ByteStream,
    sse: SseUsage,
    bytes: u64,
    first_token: Option<Duration>,
    success: bool,
    done: bool,
}

impl Stream for Tee {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes += chunk.len() as u64;
                if this.success && this.sse.feed(&chunk).first_content && this.first_token.is_none() {
                    this.first_token = Some(this.ctx.started.elapsed());
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.proxy.metrics.upstream_errors.add(&["read_error", this.proxy.settings.variant.as_str()], 1.0);
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                if !this.done {
                    this.done = true;
                    this.finish();
                }
                Poll::Ready(None)
            }
        }
    }
}

impl Tee {
    fn finish(&mut self) {
        let p = &self.proxy;
        let code = self.status.as_u16();
        self.ctx.record(p, code, true);
        self.ctx.record_response_size(p, code, self.bytes);
        if !self.success {
            return;
        }
        let sse = std::mem::replace(&mut self.sse, SseUsage::new(self.ctx.kind));
        let usage = sse.finish(self.ctx.info.text_len);
        self.ctx.record_usage(p, &usage);
        p.limiter_success();
        let v = p.settings.variant.as_str();
        if let Some(ttft) = self.first_token {
            p.metrics.time_to_first_token.observe(&[&self.ctx.model, v], ttft.as_secs_f64());
            if usage.output > 1 {
                let decode = self.ctx.started.elapsed().saturating_sub(ttft).as_secs_f64();
                p.metrics.time_per_output_token.observe(&[&self.ctx.model, v], decode / (usage.output - 1) as f64);
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if !self.done {
            // The client went away mid-stream; dropping `inner` cancels the upstream request.
            self.proxy.metrics.upstream_errors.add(&["write_error", self.proxy.settings.variant.as_str()], 1.0);
        }
    }
}

/// A 429: classify the provider's code, back off, retry unless it is a quota exhaustion.
async fn throttled(p: &Arc<Proxy>, ctx: &Ctx, resp: reqwest::Response, last: bool) -> Retry {
    let v = p.settings.variant.as_str();
    p.metrics.upstream_errors.add(&["429", v], 1.0);
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_upstream(resp, THROTTLE_BODY_LIMIT).await.unwrap_or_default();
    let (class, code) = classify_throttle(&body);
    if matches!(class, "frequency" | "unknown")
        && let Some(adj) = p.limiter.record_throttle()
    {
        p.adjusted(adj);
    }
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    if class != "quota" && !last {
        return Retry::After("429", retry_after);
    }
    ctx.record(p, 429, true);
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    copy_response_headers(&headers, out.headers_mut());
    out.headers_mut().insert("x-zai-error-class", HeaderValue::from_static(class));
    if let Some(c) = code.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        out.headers_mut().insert("x-zai-error-code", c);
    }
    Retry::Done(out)
}

/// Z.AI business codes in a 429 body: 1308/1310 quota (never retried), 1303/1305 frequency,
/// 1302 concurrency, 1312 model congestion, anything else unknown.
pub fn classify_throttle(body: &[u8]) -> (&'static str, Option<u64>) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("code"))
        .and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok())))
        .or_else(|| {
            let msg = v.pointer("/error/message").or_else(|| v.get("msg")).or_else(|| v.get("message"))?.as_str()?;
            msg.split(|c: char| !c.is_ascii_digit()).find(|s| s.len() == 4)?.parse().ok()
        });
    let class = match code {
        Some(1308 | 1310) => "quota",
        Some(1303 | 1305) => "frequency",
        Some(1302) => "concurrency",
        Some(1312) => "model_congestion",
        _ => "unknown",
    };
    (class, code)
}

impl Proxy {
    fn limiter_success(&self) {
        if let Some(adj) = self.limiter.record_success() {
            self.adjusted(adj);
        }
    }

    fn adjusted(&self, adj: super::limiter::Adjustment) {
        let v = self.settings.variant.as_str();
        self.metrics.rate_limit_adjustments.add(&[adj.label(), v], 1.0);
        self.metrics.rate_limit_rps.set(&[v], self.limiter.current());
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, StatusCode> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            Err(if too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST })
        }
    }
}

async fn read_upstream(mut resp: reqwest::Response, limit: usize) -> Option<Bytes> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if buf.len() + chunk.len() > limit {
            buf.extend_from_slice(&chunk[..limit - buf.len()]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(Bytes::from(buf))
}

/// `ZAI_TARGET_URL` + the client's raw path and query.
fn upstream_url(target: &str, uri: &axum::http::Uri) -> String {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{target}{pq}")
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) never cross a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &HeaderName, connection: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || connection
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The client's headers minus hop-by-hop, host, length, encoding and every credential; then the
/// configured key in the API's own scheme.
fn upstream_headers(client: &HeaderMap, kind: ApiKind, key: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in client {
        let dropped = is_hop_by_hop(name, client)
            || [header::HOST, header::CONTENT_LENGTH, header::AUTHORIZATION, header::ACCEPT_ENCODING].contains(name)
            || name.as_str() == "x-api-key";
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let secret = match kind {
        ApiKind::Anthropic => HeaderValue::from_str(key).map(|v| ("x-api-key", v)),
        ApiKind::OpenAi => HeaderValue::from_str(&format!("Bearer {key}")).map(|v| ("authorization", v)),
    };
    if let Ok((name, mut value)) = secret {
        value.set_sensitive(true);
        out.insert(name, value);
    }
    out
}

fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name, from) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// A proxy-made error in the API's own envelope.
pub fn error(kind: ApiKind, status: StatusCode, kind_name: &str, message: &str) -> Response {
    let body = match kind {
        ApiKind::Anthropic => {
            serde_json::json!({ "type": "error", "error": { "type": kind_name, "message": message } })
        }
        ApiKind::OpenAi => {
            serde_json::json!({ "error": { "message": message, "type": kind_name, "code": status.as_u16() } })
        }
    };
    (status, axum::Json(body)).into_response()
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_classes_follow_zai_codes() {
        assert_eq!(classify_throttle(br#"{"error":{"code":"1308","message":"quota"}}"#), ("quota", Some(1308)));
        assert_eq!(classify_throttle(br#"{"code":1305}"#), ("frequency", Some(1305)));
        assert_eq!(classify_throttle(br#"{"msg":"1302 too many concurrent"}"#), ("concurrency", Some(1302)));
        assert_eq!(classify_throttle(br#"{"error":{"code":1312}}"#).0, "model_congestion");
        assert_eq!(classify_throttle(b"slow down"), ("unknown", None));
    }

    #[test]
    fn credentials_are_replaced_and_hop_by_hop_headers_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client-secret"));
        h.insert("x-api-key", HeaderValue::from_static("client-key"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-custom-hop"));
        h.insert("x-custom-hop", HeaderValue::from_static("1"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let a = upstream_headers(&h, ApiKind::Anthropic, "server-key");
        assert_eq!(a["x-api-key"], "server-key");
        assert!(a.get(header::AUTHORIZATION).is_none());
        assert!(
            a.get("x-custom-hop").is_none()
                && a.get(header::CONNECTION).is_none()
                && a.get(header::TRANSFER_ENCODING).is_none()
        );
        assert_eq!(a["anthropic-version"], "2023-06-01");
        let o = upstream_headers(&h, ApiKind::OpenAi, "server-key");
        assert_eq!(o[header::AUTHORIZATION], "Bearer server-key");
        assert!(o.get("x-api-key").is_none());
    }

    #[test]
    fn upstream_url_keeps_path_and_query() {
        let uri: axum::http::Uri = "/api/anthropic/v1/messages?beta=true".parse().unwrap();
        assert_eq!(upstream_url("http://up:1", &uri), "http://up:1/api/anthropic/v1/messages?beta=true");
    }
}
