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

/// A receiver that takes connections and never answers: a delivery to it hangs until the
/// sender gives up. It tells which connections are still open.
#[allow(dead_code)] // tests/storage_health.rs shares this module without using it
pub struct Hanging {
    pub url: String,
    open: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    cancel: CancellationToken,
}

#[allow(dead_code)]
impl Hanging {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open: Arc<Mutex<std::collections::BTreeSet<u64>>> = Arc::default();
        let cancel = CancellationToken::new();
        let (c, set) = (cancel.clone(), open.clone());
        tokio::spawn(async move {
            for id in 0u64.. {
                let (mut conn, _) = tokio::select! {
                    () = c.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                set.lock().unwrap().insert(id);
                let (c, set) = (c.clone(), set.clone());
                tokio::spawn(async move {
                    // Reads (and drops) the request until the sender closes the connection.
                    let mut buf = [0u8; 4096];
                    loop {
                        tokio::select! {
                            () = c.cancelled() => return,
                            n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf) => {
                                if !matches!(n, Ok(n) if n > 0) { break; }
                            }
                        }
                    }
                    set.lock().unwrap().remove(&id);
                });
            }
        });
        Self { url, open, cancel }
    }

    /// Connections the sender has not closed.
    pub fn open(&self) -> std::collections::BTreeSet<u64> {
        self.open.lock().unwrap().clone()
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
