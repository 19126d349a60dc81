//! Forwarding one request: admission, upstream attempts with retries, streaming the answer back
//! unbuffered, and recording every metric on the way out.
//!
//! The request body is read whole (up to `MAX_REQUEST_BODY_BYTES`): it is small next to the
//! answer, it names the model, and a retry must send it again. The response is never buffered
//! when the client asked to stream: the first upstream chunk is forwarded as soon as it arrives,
//! while a copy feeds the usage reader. Retries happen only before anything reached the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;

use super::metrics::Limit;
use super::pricing::tier;
use super::upstream::{self as client, UpstreamError};
use super::usage::{self, ApiKind, SseUsage, Usage};
use super::{Proxy, ProxySettings};

/// Largest 429 body read to classify it.
const THROTTLE_BODY_LIMIT: usize = 32 * 1024;
/// Largest non-streaming response accepted (it is validated as JSON before it is sent on).
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;

/// Labels and timing shared by every exit of one request. Labels are shared (`&'static str`,
/// `Arc<str>`), so recording them and cloning the context into a stream never allocates.
#[derive(Debug, Clone)]
struct Ctx {
    method: &'static str,
    path: Arc<str>,
    model: Arc<str>,
    kind: ApiKind,
    started: Instant,
    stream: bool,
    /// Bytes of request message text (for the input estimate).
    text_len: usize,
}

impl Ctx {
    fn record(&self, p: &Proxy, status: StatusCode, with_duration: bool) {
        let labels = [self.method, &*self.path, status.as_str(), p.settings.variant.as_str()];
        p.metrics.requests.add(&labels, 1.0);
        if with_duration {
            p.metrics.request_duration.observe(&labels, self.started.elapsed().as_secs_f64());
        }
    }

    fn record_response_size(&self, p: &Proxy, status: StatusCode, bytes: u64) {
        let labels = [self.method, &*self.path, status.as_str(), p.settings.variant.as_str()];
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

/// Every proxied request: path rule, body (before a worker slot, under a deadline), slot,
/// then the upstream attempts.
/// `client` is the peer's `client` label value (computed once per connection).
pub(crate) async fn handle(p: Arc<Proxy>, client: &'static str, req: axum::http::Request<Incoming>) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let kind = ApiKind::from_path(parts.uri.path());
    let mut ctx = Ctx {
        method: p.metrics.method_label(&parts.method),
        path: p.metrics.path_label(parts.uri.path()),
        model: p.default_model.clone(),
        kind,
        started,
        stream: false,
        text_len: 0,
    };
    if has_dot_segment(parts.uri.path()) {
        p.metrics.trips.add(Limit::DotSegment);
        ctx.record(&p, StatusCode::BAD_REQUEST, true);
        let msg = "path segments \".\" and \"..\" (also percent-encoded) are not allowed";
        return error(kind, StatusCode::BAD_REQUEST, "invalid_request_error", msg);
    }
    let body = match read_body(body, &parts.headers, &p.settings).await {
        Ok(b) => b,
        Err(e) => {
            p.metrics.trips.add(e.limit());
            ctx.record(&p, e.status(), true);
            return error(kind, e.status(), "invalid_request_error", &e.to_string());
        }
    };
    let info = usage::request_info(&body);
    (ctx.stream, ctx.text_len) = (info.stream, info.text_len);
    if let Some(model) = info.model.as_deref() {
        ctx.model = p.metrics.model_label(model);
    }
    let Some(slot) = p.try_take_slot() else {
        p.metrics.rate_limit_rejections.add(&[client, &p.settings.variant], 1.0);
        ctx.record(&p, StatusCode::SERVICE_UNAVAILABLE, false);
        let msg = "the proxy is at capacity (MAX_WORKERS); retry later";
        return error(kind, StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", msg);
    };
    observe_request(&p, &ctx, body.len());
    let headers = upstream_headers(parts.headers, kind, &p.keys, p.client.host_header());
    let upstream = Upstream { uri: p.client.uri(&parts.uri), headers, method: parts.method, body };
    let answer = attempts(&p, ctx, client, upstream).await;
    hold_until_sent(answer, slot)
}

/// Keeps the worker slot until the answer's body is sent or dropped: a streamed answer occupies
/// its worker (and `MAX_WORKERS`) for as long as it streams, not only until its headers left.
fn hold_until_sent(answer: Response, slot: super::WorkerSlot) -> Response {
    let (parts, body) = answer.into_parts();
    Response::from_parts(parts, Body::new(Held { body, _slot: slot }))
}

/// A body with a worker slot riding along; it frees the slot when dropped.
struct Held {
    body: Body,
    _slot: super::WorkerSlot,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Request size and zai-proxy's token counting time, for a non-empty body.
fn observe_request(p: &Proxy, ctx: &Ctx, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let v = p.settings.variant.as_str();
    p.metrics.request_size.observe(&[ctx.method, &ctx.path, v], bytes as f64);
    if p.settings.token_counting {
        let t = Instant::now();
        std::hint::black_box(usage::estimate_tokens(ctx.text_len));
        p.metrics.token_count_duration.observe(&[v], t.elapsed().as_secs_f64());
    }
}

/// Whether a path has a `.` or `..` segment, raw or percent-encoded in any case (`%2e%2E`),
/// also behind an encoded or back slash. The upstream URL parser resolves such segments, so
/// `/v1/../../admin` would leave `ZAI_TARGET_URL`'s path prefix with the key attached.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false; // most paths: one scan, no segment split
    }
    path.split('/').any(|segment| {
        if !segment.contains(['.', '%']) {
            return false;
        }
        percent_decode(segment).split(|b| *b == b'/' || *b == b'\\').any(|part| part == b"." || part == b"..")
    })
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// What is sent upstream on every attempt.
struct Upstream {
    method: Method,
    /// Origin-form: `ZAI_TARGET_URL`'s path, then the client's path and query.
    uri: Uri,
    /// With `Host` and the configured key.
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

async fn attempts(p: &Arc<Proxy>, ctx: Ctx, client: &str, mut up: Upstream) -> Response {
    let v = p.settings.variant.as_str();
    let mut attempt: u32 = 0;
    loop {
        let waited = p.limiter.acquire().await;
        p.metrics.rate_limit_wait.observe(&[client, v], waited.as_secs_f64());
        let last = attempt >= p.settings.max_retries;
        let outcome = match p.client.send(up.request(last)).await {
            Err(e) => {
                // The error names no URL: neither ZAI_TARGET_URL's nor the client's query can leak.
                p.metrics.upstream_errors.add(&["upstream_connection", v], 1.0);
                tracing::debug!(error = %e, attempt, "Upstream attempt failed.");
                if last {
                    ctx.record(p, StatusCode::BAD_GATEWAY, true);
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
                let backoff = p.settings.retry_base.saturating_mul(2u32.saturating_pow(attempt));
                tokio::time::sleep(backoff.max(at_least)).await;
                p.metrics.retry_attempts.add(&[reason, v], 1.0);
                p.metrics.retry_attempts.add(&["retry", v], 1.0);
                attempt += 1;
            }
        }
    }
}

/// The upstream's answer: head and body.
type UpstreamResponse = axum::http::Response<client::Body>;

async fn respond(p: &Arc<Proxy>, ctx: &Ctx, resp: UpstreamResponse, last: bool) -> Retry {
    let status = resp.status();
    let v = p.settings.variant.as_str();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return throttled(p, ctx, resp, last).await;
    }
    if status.is_success() {
        return if ctx.stream {
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

/// A 2xx answer to a non-streaming request: read it whole, check it is JSON (an empty or
/// malformed answer is retried), record usage. One pass over the body does all three, without
/// a JSON tree.
async fn buffered_success(p: &Arc<Proxy>, ctx: &Ctx, resp: UpstreamResponse, last: bool) -> Retry {
    let (status, headers, body) = split(resp);
    let body = read_upstream(body, RESPONSE_LIMIT).await;
    let summary = body.as_deref().and_then(|b| usage::summarize_response(ctx.kind, b));
    let (Some(body), Some(summary)) = (body, summary) else {
        p.metrics.upstream_errors.add(&["truncated_response", p.settings.variant.as_str()], 1.0);
        if !last {
            return Retry::After("truncated_response", Duration::ZERO);
        }
        ctx.record(p, StatusCode::BAD_GATEWAY, true);
        return Retry::Done(error(
            ctx.kind,
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream returned an empty or malformed response after retries",
        ));
    };
    let usage = usage::reported(summary.usage).unwrap_or_else(|| estimate(p, ctx, summary.text_len));
    ctx.record_usage(p, &usage);
    p.limiter_success();
    ctx.record(p, status, true);
    ctx.record_response_size(p, status, body.len() as u64);
    Retry::Done(answer(status, headers, Body::from(body)))
}

/// The client's answer: status, the upstream's headers as [`strip_response_headers`] left them (so
/// hyper sets `Content-Length` from the body actually sent: a body cut at a limit must not keep
/// the upstream's), and the body.
fn answer(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The local estimate for a response without usage, timed like zai-proxy's token counting.
fn estimate(p: &Proxy, ctx: &Ctx, response_text_len: usize) -> Usage {
    let t = Instant::now();
    let output = usage::estimate_tokens(response_text_len);
    let took = t.elapsed().as_secs_f64().max(1e-9);
    let v = p.settings.variant.as_str();
    let model = p.settings.tokenizer_model.as_str();
    p.metrics.token_rate_seconds.observe(&["output", model, v], took);
    p.metrics.token_rate.observe(&["output", model, v], output as f64 / took);
    Usage { input: usage::estimate_tokens(ctx.text_len), output, estimated: true, ..Usage::default() }
}

/// A 2xx answer to a streaming request: wait for the first bytes (an empty stream is retried),
/// then stream everything through.
async fn stream_success(p: &Arc<Proxy>, ctx: &Ctx, resp: UpstreamResponse, last: bool) -> Retry {
    let (status, headers, mut upstream) = split(resp);
    let first = loop {
        match next_chunk(&mut upstream).await {
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
        ctx.record(p, StatusCode::BAD_GATEWAY, true);
        return Retry::Done(error(
            ctx.kind,
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream returned an empty stream after retries",
        ));
    };
    Retry::Done(tee_response(p, ctx, status, headers, upstream, Some(first), true))
}

fn stream_back(p: &Arc<Proxy>, ctx: &Ctx, resp: UpstreamResponse, success: bool) -> Response {
    let (status, headers, body) = split(resp);
    tee_response(p, ctx, status, headers, body, None, success)
}

/// Status, the headers for the client ([`strip_response_headers`]) and the body of an upstream answer.
fn split(resp: UpstreamResponse) -> (StatusCode, HeaderMap, client::Body) {
    let (mut parts, body) = resp.into_parts();
    strip_response_headers(&mut parts.headers);
    (parts.status, parts.headers, body)
}

/// The next data chunk of an upstream body (trailers are not forwarded).
async fn next_chunk(body: &mut client::Body) -> Option<Result<Bytes, UpstreamError>> {
    std::future::poll_fn(|cx| poll_chunk(body, cx)).await
}

fn poll_chunk(body: &mut client::Body, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpstreamError>>> {
    loop {
        return match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(data))),
                Err(_) => continue,
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
    }
}

fn tee_response(
    p: &Arc<Proxy>,
    ctx: &Ctx,
    status: StatusCode,
    headers: HeaderMap,
    body: client::Body,
    first: Option<Bytes>,
    success: bool,
) -> Response {
    let tee = Tee {
        proxy: p.clone(),
        ctx: ctx.clone(),
        status,
        first,
        inner: body,
        sse: SseUsage::new(ctx.kind),
        bytes: 0,
        first_token: None,
        success,
        done: false,
    };
    answer(status, headers, Body::from_stream(tee))
}

/// Forwards upstream chunks unchanged while reading usage and the first token from a copy;
/// records the request when the stream ends, and a `write_error` if the client goes away first.
struct Tee {
    proxy: Arc<Proxy>,
    ctx: Ctx,
    status: StatusCode,
    /// A chunk already read (to tell an empty stream from a live one), sent first.
    first: Option<Bytes>,
    inner: client::Body,
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
        let next = match this.first.take() {
            Some(chunk) => Poll::Ready(Some(Ok(chunk))),
            None => poll_chunk(&mut this.inner, cx),
        };
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes = this.bytes.saturating_add(chunk.len() as u64);
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
        self.ctx.record(p, self.status, true);
        self.ctx.record_response_size(p, self.status, self.bytes);
        if !self.success {
            return;
        }
        let sse = std::mem::replace(&mut self.sse, SseUsage::new(self.ctx.kind));
        let usage = sse.finish(self.ctx.text_len);
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
async fn throttled(p: &Arc<Proxy>, ctx: &Ctx, resp: UpstreamResponse, last: bool) -> Retry {
    let v = p.settings.variant.as_str();
    p.metrics.upstream_errors.add(&["429", v], 1.0);
    let (status, headers, body) = split(resp);
    let body = read_upstream(body, THROTTLE_BODY_LIMIT).await.unwrap_or_default();
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
    ctx.record(p, StatusCode::TOO_MANY_REQUESTS, true);
    let mut out = answer(status, headers, Body::from(body));
    out.headers_mut().insert("x-zai-error-class", HeaderValue::from_static(class));
    if let Some(c) = code.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        out.headers_mut().insert("x-zai-error-code", c);
    }
    Retry::Done(out)
}

/// Z.AI business codes in a 429 body: 1308/1310 quota (never retried), 1303/1305 frequency,
/// 1302 concurrency, 1312 model congestion, anything else unknown.
pub(crate) fn classify_throttle(body: &[u8]) -> (&'static str, Option<u64>) {
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

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body larger than MAX_REQUEST_BODY_BYTES ({0} bytes)")]
    TooLarge(usize),
    #[error("request body not received within REQUEST_BODY_TIMEOUT ({0:?})")]
    Timeout(Duration),
    #[error("could not read the request body")]
    Broken,
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Broken => StatusCode::BAD_REQUEST,
        }
    }

    fn limit(&self) -> Limit {
        match self {
            Self::TooLarge(_) => Limit::BodyTooLarge,
            Self::Timeout(_) | Self::Broken => Limit::BodyTimeout,
        }
    }
}

/// The whole request body within `REQUEST_BODY_TIMEOUT` and `MAX_REQUEST_BODY_BYTES`. A body
/// declared larger than the cap is refused before any of it is read.
async fn read_body(mut body: Incoming, headers: &HeaderMap, s: &ProxySettings) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > s.max_request_bytes) {
        return Err(BodyError::TooLarge(s.max_request_bytes));
    }
    let frames = futures_util::stream::poll_fn(move |cx| {
        loop {
            return match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue, // trailers
                },
                Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    });
    match tokio::time::timeout(s.body_timeout, collect(frames, s.max_request_bytes, declared.unwrap_or(0))).await {
        Ok(Ok(Some(b))) => Ok(b),
        Ok(Ok(None)) => Err(BodyError::TooLarge(s.max_request_bytes)),
        Ok(Err(())) => Err(BodyError::Broken),
        Err(_) => Err(BodyError::Timeout(s.body_timeout)),
    }
}

/// Collects a body of at most `limit` bytes (`None` past it) into one buffer. A body of one
/// chunk is returned as it is; a longer one is copied once into a buffer sized from
/// `size_hint` (its `Content-Length`), so a 30 MB body is held once, not twice as collecting
/// chunks and then concatenating them would.
async fn collect<S, E>(mut chunks: S, limit: usize, size_hint: usize) -> Result<Option<Bytes>, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let Some(first) = chunks.next().await.transpose()? else { return Ok(Some(Bytes::new())) };
    let Some(second) = chunks.next().await.transpose()? else {
        return Ok((first.len() <= limit).then_some(first));
    };
    let mut buf = Vec::with_capacity(size_hint.max(first.len() + second.len()).min(limit));
    for chunk in [first, second] {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    while let Some(chunk) = chunks.next().await.transpose()? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(buf)))
}

/// An upstream body, at most `limit` bytes (cut there: a cut JSON answer fails validation and
/// is retried; a cut 429 body is only classified); `None` when reading it failed.
async fn read_upstream(mut body: client::Body, limit: usize) -> Option<Bytes> {
    let hint = body.exact_len().map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut taken = 0usize;
    let capped = futures_util::stream::poll_fn(move |cx| {
        if taken >= limit {
            return std::task::Poll::Ready(None);
        }
        poll_chunk(&mut body, cx).map(|item| {
            item.map(|r| {
                r.map(|mut chunk| {
                    chunk.truncate(limit - taken);
                    taken += chunk.len();
                    chunk
                })
            })
        })
    });
    collect(capped, limit, hint).await.ok().flatten()
}

impl Upstream {
    /// The request of one attempt: the URI and body are shared, the header map is copied, or
    /// moved on the last attempt (the only one when `MAX_RETRIES` is 0).
    fn request(&mut self, last: bool) -> axum::http::Request<Full<Bytes>> {
        let mut req = axum::http::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = if last { std::mem::take(&mut self.headers) } else { self.headers.clone() };
        req
    }
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) never cross a proxy.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Client headers that carry credentials: never forwarded, whatever the scheme. `Cookie` is one:
/// with `serve --proxy`, a browser on the same host would send the dashboard's session along.
fn is_credential(name: &str) -> bool {
    matches!(name, "authorization" | "cookie" | "x-api-key" | "api-key" | "proxy-authorization")
}

/// Client headers not forwarded: hop-by-hop, credentials, and those replaced: the length (hyper
/// sets it from the body sent), the encodings (the proxy reads usage from the answer, so it
/// asks for `identity`) and the host.
fn not_forwarded(name: &str) -> bool {
    is_hop_by_hop(name) || is_credential(name) || matches!(name, "content-length" | "accept-encoding" | "host")
}

/// Upstream headers not sent to the client: hop-by-hop, and the length (hyper sets it from the
/// body sent: a body cut at a limit must not keep the upstream's).
fn not_returned(name: &str) -> bool {
    is_hop_by_hop(name) || name == "content-length"
}

/// Removes the headers `dropped` names and those listed in `Connection`, in place: one pass over
/// the names, each matched once, and a removal only for a header present.
fn strip(headers: &mut HeaderMap, dropped: fn(&str) -> bool) {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in headers.keys() {
        if dropped(name.as_str()) && !names.contains(name) {
            names.push(name.clone());
        }
    }
    for name in names {
        headers.remove(name);
    }
}

/// The configured key as a header in each API's scheme, made once: `x-api-key` (Anthropic) or
/// a bearer token (OpenAI). `None` when the key cannot be a header value.
#[derive(Debug)]
pub(crate) struct UpstreamKeys {
    anthropic: Option<HeaderValue>,
    openai: Option<HeaderValue>,
}

impl UpstreamKeys {
    pub(crate) fn new(key: &str) -> Self {
        let sensitive = |v: HeaderValue| {
            let mut v = v;
            v.set_sensitive(true);
            v
        };
        Self {
            anthropic: HeaderValue::from_str(key).ok().map(sensitive),
            openai: HeaderValue::from_str(&format!("Bearer {key}")).ok().map(sensitive),
        }
    }
}

/// The client's headers minus hop-by-hop, host, length, encoding and every credential; then the
/// configured key in the API's own scheme and the upstream's `Host`. Done in place on the
/// client's map, which the request no longer needs.
fn upstream_headers(mut headers: HeaderMap, kind: ApiKind, keys: &UpstreamKeys, host: &HeaderValue) -> HeaderMap {
    strip(&mut headers, not_forwarded);
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    headers.insert(header::HOST, host.clone());
    let secret = match kind {
        ApiKind::Anthropic => keys.anthropic.clone().map(|v| (HeaderName::from_static("x-api-key"), v)),
        ApiKind::OpenAi => keys.openai.clone().map(|v| (header::AUTHORIZATION, v)),
    };
    if let Some((name, value)) = secret {
        headers.insert(name, value);
    }
    headers
}

/// The upstream's response headers made fit for the client, in place: without hop-by-hop
/// headers, and without `Content-Length`, which hyper sets from the body sent.
fn strip_response_headers(headers: &mut HeaderMap) {
    strip(headers, not_returned);
}

/// A proxy-made error in the API's own envelope.
pub(crate) fn error(kind: ApiKind, status: StatusCode, kind_name: &str, message: &str) -> Response {
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
        let (keys, host) = (UpstreamKeys::new("server-key"), HeaderValue::from_static("up:1"));
        let a = upstream_headers(h.clone(), ApiKind::Anthropic, &keys, &host);
        assert_eq!(a["x-api-key"], "server-key");
        assert!(a.get(header::AUTHORIZATION).is_none());
        assert!(
            a.get("x-custom-hop").is_none()
                && a.get(header::CONNECTION).is_none()
                && a.get(header::TRANSFER_ENCODING).is_none()
        );
        assert_eq!(a["anthropic-version"], "2023-06-01");
        let o = upstream_headers(h, ApiKind::OpenAi, &keys, &host);
        assert_eq!(o[header::AUTHORIZATION], "Bearer server-key");
        assert!(o.get("x-api-key").is_none());
    }

    #[test]
    fn dot_segments_raw_encoded_and_behind_slashes() {
        for bad in ["/v1/../x", "/./x", "/v1/%2e%2E/x", "/v1/.%2e", "/v1/%2E", "/v1/a%2f..%2fb", "/v1/..\\x", "/.."] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for ok in ["/v1/messages", "/v1/a..b", "/v1/.well-known", "/v1/%2e%2e%2e", "/v1/100%", "/v1/%zz"] {
            assert!(!has_dot_segment(ok), "{ok}");
        }
    }

    #[test]
    fn every_credential_header_is_dropped() {
        let mut h = HeaderMap::new();
        for name in ["authorization", "cookie", "x-api-key", "api-key", "proxy-authorization"] {
            assert!(is_credential(name));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("client"));
        }
        h.insert(header::HOST, HeaderValue::from_static("proxy:8081"));
        let host = HeaderValue::from_static("up:1");
        let out = upstream_headers(h, ApiKind::Anthropic, &UpstreamKeys::new("server-key"), &host);
        assert_eq!(out.len(), 3, "accept-encoding, the configured key and host: {out:?}");
        assert_eq!(out[header::HOST], "up:1");
        assert_eq!(out["x-api-key"], "server-key");
    }
}
