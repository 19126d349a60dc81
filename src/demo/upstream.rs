//! A simulated LLM upstream speaking Anthropic Messages and OpenAI Chat Completions, streaming
//! and not, with realistic time to first token, token counts including prompt-cache tokens,
//! and occasional 429 (with a Z.AI frequency code) and 500 answers. It also answers the
//! provider's quota endpoint from the demo's [`Account`], which every answer it serves charges.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Rng;
use super::account::Account;
use crate::proxy::quota::QUOTA_PATH;
use crate::proxy::usage::{self, ApiKind};

/// How an upstream behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    /// Time to first token, uniform between these (ms).
    pub ttft_ms: (u64, u64),
    /// Decoding speed.
    pub tokens_per_s: f64,
    /// Share of requests answered 429.
    pub p_throttle: f64,
    /// Share of requests answered 500.
    pub p_error: f64,
}

impl Profile {
    /// The stable upstream.
    pub(crate) fn production() -> Self {
        Self { ttft_ms: (200, 800), tokens_per_s: 90.0, p_throttle: 0.01, p_error: 0.004 }
    }

    /// A little slower and less reliable, so the comparison has something to show.
    pub(crate) fn canary() -> Self {
        Self { ttft_ms: (300, 1300), tokens_per_s: 70.0, p_throttle: 0.015, p_error: 0.03 }
    }
}

#[derive(Clone)]
struct Sim {
    profile: Profile,
    rng: Arc<Mutex<Rng>>,
    account: Arc<Account>,
}

/// The upstream's router: every POST is answered according to its path's API, and
/// `GET /api/monitor/usage/quota/limit` with `account`'s quota.
pub(crate) fn router(profile: Profile, seed: u64, account: Arc<Account>) -> Router {
    let sim = Sim { profile, rng: Arc::new(Mutex::new(Rng::new(seed))), account };
    Router::new().route(QUOTA_PATH, axum::routing::get(quota)).fallback(answer).with_state(sim)
}

async fn quota(State(sim): State<Sim>) -> Response {
    axum::Json(sim.account.answer()).into_response()
}

/// One simulated answer's shape.
struct Plan {
    kind: ApiKind,
    model: String,
    stream: bool,
    include_usage: bool,
    ttft: Duration,
    per_token: Duration,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

async fn answer(State(sim): State<Sim>, req: Request) -> Response {
    let kind = ApiKind::from_path(req.uri().path());
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await.unwrap_or_default();
    let info = usage::request_info(&body);
    let include_usage = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.pointer("/stream_options/include_usage").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    let (fate, plan) = {
        let mut rng = sim.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fate = rng.unit();
        let p = sim.profile;
        let plan = Plan {
            kind,
            model: info.model.clone().unwrap_or_else(|| "glm-4.7".into()),
            stream: info.stream,
            include_usage,
            ttft: Duration::from_millis(rng.range(p.ttft_ms.0, p.ttft_ms.1)),
            per_token: Duration::from_secs_f64(1.0 / p.tokens_per_s),
            input: usage::estimate_tokens(info.text_len) + rng.range(20, 300),
            output: rng.range(20, 220),
            cache_read: if rng.chance(0.6) { rng.range(500, 6000) } else { 0 },
            cache_write: if rng.chance(0.2) { rng.range(100, 1500) } else { 0 },
        };
        (fate, plan)
    };
    if fate < sim.profile.p_throttle {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return throttled();
    }
    if fate < sim.profile.p_throttle + sim.profile.p_error {
        tokio::time::sleep(plan.ttft / 2).await;
        return failed(kind);
    }
    sim.account.consume(plan.input + plan.output);
    if plan.stream { streamed(plan) } else { whole(plan).await }
}

fn throttled() -> Response {
    let body =
        serde_json::json!({ "error": { "code": "1305", "message": "1305 Too many requests, slow down (simulated)" } });
    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], axum::Json(body)).into_response()
}

fn failed(kind: ApiKind) -> Response {
    let body = match kind {
        ApiKind::Anthropic => {
            serde_json::json!({ "type": "error", "error": { "type": "api_error", "message": "simulated upstream failure" } })
        }
        ApiKind::OpenAi => {
            serde_json::json!({ "error": { "message": "simulated upstream failure", "type": "server_error", "code": 500 } })
        }
    };
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

const WORDS: &[&str] =
    &["the ", "proxy ", "streams ", "tokens ", "quickly ", "and ", "counts ", "every ", "one ", "carefully "];

fn text(n: u64) -> String {
    (0..n).map(|i| WORDS[(i as usize) % WORDS.len()]).collect()
}

async fn whole(p: Plan) -> Response {
    tokio::time::sleep(p.ttft + p.per_token * u32::try_from(p.output).unwrap_or(0)).await;
    let body = match p.kind {
        ApiKind::Anthropic => serde_json::json!({
            "id": "msg_demo", "type": "message", "role": "assistant", "model": p.model,
            "content": [{ "type": "text", "text": text(p.output) }],
            "stop_reason": "end_turn",
            "usage": { "input_tokens": p.input, "output_tokens": p.output,
                       "cache_read_input_tokens": p.cache_read, "cache_creation_input_tokens": p.cache_write },
        }),
        ApiKind::OpenAi => serde_json::json!({
            "id": "chatcmpl-demo", "object": "chat.completion", "model": p.model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text(p.output) }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": p.input + p.cache_read, "completion_tokens": p.output,
                       "total_tokens": p.input + p.cache_read + p.output,
                       "prompt_tokens_details": { "cached_tokens": p.cache_read } },
        }),
    };
    axum::Json(body).into_response()
}

/// SSE events with the delays that precede them.
fn events(p: &Plan) -> Vec<(Duration, String)> {
    let chunk = 5u64;
    let deltas = p.output.div_ceil(chunk);
    let step = p.per_token * u32::try_from(chunk).unwrap_or(1);
    let data = |v: serde_json::Value| format!("data: {v}\n\n");
    let mut out = Vec::new();
    match p.kind {
        ApiKind::Anthropic => {
            let start = serde_json::json!({ "type": "message_start", "message": { "id": "msg_demo", "model": p.model,
                "usage": { "input_tokens": p.input, "output_tokens": 1, "cache_read_input_tokens": p.cache_read,
                           "cache_creation_input_tokens": p.cache_write } } });
            out.push((p.ttft, format!("event: message_start\n{}", data(start))));
            for i in 0..deltas {
                let delta = serde_json::json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": text(chunk) } });
                out.push((
                    if i == 0 { Duration::ZERO } else { step },
                    format!("event: content_block_delta\n{}", data(delta)),
                ));
            }
            let end = serde_json::json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": p.output } });
            out.push((step, format!("event: message_delta\n{}", data(end))));
            out.push((Duration::ZERO, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into()));
        }
        ApiKind::OpenAi => {
            out.push((
                p.ttft,
                data(
                    serde_json::json!({ "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" } }] }),
                ),
            ));
            for i in 0..deltas {
                let c = serde_json::json!({ "choices": [{ "index": 0, "delta": { "content": text(chunk) } }] });
                out.push((if i == 0 { Duration::ZERO } else { step }, data(c)));
            }
            if p.include_usage {
                let u = serde_json::json!({ "choices": [], "usage": { "prompt_tokens": p.input + p.cache_read,
                    "completion_tokens": p.output, "prompt_tokens_details": { "cached_tokens": p.cache_read } } });
                out.push((step, data(u)));
            }
            out.push((Duration::ZERO, "data: [DONE]\n\n".into()));
        }
    }
    out
}

fn streamed(p: Plan) -> Response {
    let stream = futures_util::stream::unfold(events(&p).into_iter(), |mut it| async move {
        let (delay, event) = it.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok::<_, Infallible>(Bytes::from(event)), it))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    r
}
