//! A webhook receiver: an axum server on 127.0.0.1:0 that keeps every JSON body it is sent.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    cancel: CancellationToken,
}

async fn record(State(bodies): State<Arc<Mutex<Vec<Value>>>>, body: String) -> &'static str {
    bodies.lock().unwrap().push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
    "ok"
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/secret-token", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let cancel = CancellationToken::new();
        let app = Router::new().route("/hook/secret-token", post(record)).with_state(bodies.clone());
        let c = cancel.clone();
        tokio::spawn(
            async move { axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await.unwrap() },
        );
        Self { url, bodies, cancel }
    }

    /// Every body received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
