//! The demo's traffic generator: a steady stream of Anthropic and OpenAI requests, streaming and
//! not, across two models, spread over the proxies by weight. It never waits on a slow answer
//! to send the next request (each request is its own task, at most 64 at once).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Rng;

/// Sends about `rate` requests per second to `targets` (base URL, weight) until cancelled.
pub(crate) async fn run(targets: Vec<(String, f64)>, rate: f64, seed: u64, cancel: CancellationToken) {
    let client = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(64));
    let mut rng = Rng::new(seed ^ 0x5bd1_e995);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let total: f64 = targets.iter().map(|t| t.1).sum();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut pick = rng.unit() * total;
        let base = targets
            .iter()
            .find(|t| {
                pick -= t.1;
                pick < 0.0
            })
            .or(targets.last())
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
        let (path, body) = request(&mut rng);
        let (client, cancel) = (client.clone(), cancel.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let send = async {
                let resp = client
                    .post(format!("{base}{path}"))
                    .header("authorization", "Bearer demo-client-token")
                    .header("anthropic-version", "2023-06-01")
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await?;
                resp.bytes().await.map(|_| ())
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                _ = send => {}
            }
        });
    }
}

/// A random request: path and JSON body.
fn request(rng: &mut Rng) -> (&'static str, serde_json::Value) {
    let model = if rng.chance(0.7) { "glm-4.7" } else { "glm-4.5-air" };
    let stream = rng.chance(0.6);
    let prompt = "Summarise the latest deployment notes. ".repeat(usize::try_from(rng.range(5, 120)).unwrap_or(5));
    let fate = rng.unit();
    if fate < 0.2 {
        let body = serde_json::json!({
            "model": model, "stream": stream, "stream_options": { "include_usage": true },
            "messages": [{ "role": "user", "content": prompt }],
        });
        return ("/v1/chat/completions", body);
    }
    let path = if fate < 0.6 { "/api/anthropic/v1/messages" } else { "/v1/messages" };
    let body = serde_json::json!({
        "model": model, "max_tokens": 1024, "stream": stream,
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": prompt }] }],
    });
    (path, body)
}
