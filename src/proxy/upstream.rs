//! The proxy's upstream client: HTTP/1.1 connections to `ZAI_TARGET_URL`'s host (TLS for
//! `https`), kept alive in a small pool, with the proxy's two upstream deadlines.
//!
//! The proxy talks to exactly one host, so a general client (a pool keyed by host, redirect and
//! proxy handling, a timeout layer that re-arms a timer on every body chunk, a boxed request
//! state) is mostly unused work per request. This one keeps only what forwarding needs:
//!
//! - a pool of idle `hyper` HTTP/1.1 connections, the last returned used first. A connection
//!   goes back when its answer was read to the end; one whose answer was dropped half-read is
//!   closed with it.
//! - no task per connection: the request's own task drives its connection (writes the request,
//!   reads the head and then the body, in the same polls that wait for them). A spawned
//!   connection task put two task switches and three channel hand-offs (request, head, body)
//!   on every request; under load each switch waits its turn in the runtime's queue, which cost
//!   more latency than CPU. An idle pooled connection is not polled, so an upstream's close is
//!   noticed when the connection is next taken (then the next one is tried), and connections
//!   idle past 90 s are closed as others come back.
//! - `UPSTREAM_CONNECT_TIMEOUT` around connecting (TCP, and the TLS handshake for `https`).
//! - `UPSTREAM_IDLE_TIMEOUT`, the longest silence: waiting for the response head, then between
//!   body chunks. One timer per attempt is armed when the request is sent; a chunk only notes
//!   the instant it arrived, and when the timer fires it is either the deadline or re-armed at
//!   the last chunk plus the timeout. A stream of thousands of chunks costs one timer, not one
//!   timer reset per chunk.
//! - a request refused by a pooled connection before any byte of it was written (the upstream
//!   closed the connection while it sat idle) is sent again on another connection.
//!
//! The upstream is spoken to in HTTP/1.1 (as nginx's `proxy_pass` does), one connection per
//! request in flight, TLS verified with the platform's roots (the same verifier reqwest uses).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// How long an idle pooled connection is reused (reqwest's default); older ones are closed.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Why an upstream attempt failed. The message of the innermost cause ends up in the 502 body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection within `UPSTREAM_CONNECT_TIMEOUT`.
    #[error("connect timed out after UPSTREAM_CONNECT_TIMEOUT ({0:?})")]
    ConnectTimeout(Duration),
    /// TCP connect or TLS handshake failed.
    #[error("cannot connect to the upstream")]
    Connect(#[source] std::io::Error),
    /// The upstream was silent for `UPSTREAM_IDLE_TIMEOUT`.
    #[error("no data from the upstream within UPSTREAM_IDLE_TIMEOUT ({0:?})")]
    Idle(Duration),
    /// The HTTP exchange failed (connection closed, malformed answer).
    #[error("upstream HTTP error")]
    Http(#[source] hyper::Error),
}

/// What [`Client::new`] can refuse.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The platform's certificate verifier could not be set up.
    #[error("cannot set up TLS for ZAI_TARGET_URL")]
    Tls(#[from] rustls::Error),
    /// The URL's host cannot be a TLS server name or a `Host` header.
    #[error("ZAI_TARGET_URL's host cannot be used as a TLS server name or Host header")]
    Host,
}

/// The upstream host: where to connect, how to name it, the path prefix of every request.
struct Target {
    /// Name or address to connect to (IPv6 without brackets).
    connect_host: String,
    port: u16,
    /// `Host` header: the URL's host, with its port when it is not the scheme's default.
    host_header: axum::http::HeaderValue,
    /// `ZAI_TARGET_URL`'s path without the trailing slash.
    path_prefix: String,
    /// `https`: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// Idle connections and the deadlines; shared by the client and the bodies that give their
/// connection back.
struct Pool {
    /// Oldest first: a connection goes back at the end and is taken from the end.
    idle: Mutex<Vec<Idle>>,
    /// How long an idle connection is reused ([`POOL_IDLE`]; shorter in tests).
    max_idle: Duration,
}

struct Idle {
    link: Link,
    since: Instant,
}

/// The byte stream of one upstream connection: TCP, or TLS over it.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

type Connection = hyper::client::conn::http1::Connection<TokioIo<Io>, Full<Bytes>>;

/// One upstream connection: its request sender and its state machine, which whoever waits on
/// the connection (the request's task) drives; no task of its own.
struct Link {
    sender: SendRequest<Full<Bytes>>,
    conn: Pin<Box<Connection>>,
    /// The connection future finished (closed or failed): never polled again, never reused.
    ended: bool,
}

impl Link {
    /// Lets the connection make progress (write the request, read the answer, notice a close).
    /// True when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended
            && let Poll::Ready(result) = self.conn.as_mut().poll(cx)
        {
            if let Err(e) = result {
                tracing::debug!(error = %e, "Upstream connection ended with an error.");
            }
            self.ended = true;
        }
        self.ended
    }

    /// Drives the connection until it takes a request: true, or false when it ended first.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.drive(cx) {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|r| r.is_ok())
    }
}

/// The upstream client of one proxy.
pub(crate) struct Client {
    target: Target,
    pool: Arc<Pool>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.target.connect_host)
            .field("port", &self.target.port)
            .field("tls", &self.target.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `base` (an `http` or `https` URL with a host, as validated settings hold).
    pub(crate) fn new(base: &url::Url, connect_timeout: Duration, idle_timeout: Duration) -> Result<Self, ClientError> {
        let (connect_host, server_name) = match base.host() {
            Some(url::Host::Domain(d)) => (d.to_owned(), ServerName::try_from(d.to_owned()).ok()),
            Some(url::Host::Ipv4(a)) => (a.to_string(), Some(ServerName::IpAddress(std::net::IpAddr::V4(a).into()))),
            Some(url::Host::Ipv6(a)) => (a.to_string(), Some(ServerName::IpAddress(std::net::IpAddr::V6(a).into()))),
            None => return Err(ClientError::Host),
        };
        let host = base.host_str().ok_or(ClientError::Host)?;
        let host_header = match base.port() {
            Some(port) => axum::http::HeaderValue::from_str(&format!("{host}:{port}")),
            None => axum::http::HeaderValue::from_str(host),
        }
        .map_err(|_| ClientError::Host)?;
        let tls = if base.scheme() == "https" {
            Some((TlsConnector::from(Arc::new(tls_config()?)), server_name.ok_or(ClientError::Host)?))
        } else {
            None
        };
        let target = Target {
            connect_host,
            port: base.port_or_known_default().unwrap_or(80),
            host_header,
            path_prefix: base.path().trim_end_matches('/').to_owned(),
            tls,
        };
        let pool = Arc::new(Pool { idle: Mutex::new(Vec::new()), max_idle: POOL_IDLE });
        Ok(Self { target, pool, connect_timeout, idle_timeout })
    }

    /// The request target sent upstream: `ZAI_TARGET_URL`'s path, then the client's path and
    /// query unchanged.
    pub(crate) fn uri(&self, client: &axum::http::Uri) -> axum::http::Uri {
        let prefix = &self.target.path_prefix;
        let Some(pq) = client.path_and_query() else { return axum::http::Uri::from_static("/") };
        if prefix.is_empty() {
            return axum::http::Uri::from(pq.clone());
        }
        let mut s = String::with_capacity(prefix.len() + pq.as_str().len());
        s.push_str(prefix);
        s.push_str(pq.as_str());
        // Both parts are already valid in a request target, so this parses.
        axum::http::Uri::try_from(s).unwrap_or_else(|_| axum::http::Uri::from(pq.clone()))
    }

    /// The `Host` header value for the upstream.
    pub(crate) fn host_header(&self) -> &axum::http::HeaderValue {
        &self.target.host_header
    }

    /// Sends `req` (origin-form URI, `Host` set) and waits for the response head, within
    /// `UPSTREAM_IDLE_TIMEOUT`. The body returned gives its connection back to the pool when
    /// read to the end.
    pub(crate) async fn send(
        &self,
        mut req: axum::http::Request<Full<Bytes>>,
    ) -> Result<axum::http::Response<Body>, UpstreamError> {
        let mut timer = Box::pin(tokio::time::sleep(self.idle_timeout));
        loop {
            let (mut link, reused) = match self.checkout() {
                Some(link) => (link, true),
                // Boxed: connecting (a TLS handshake's state) is most of this future's size, and
                // a request's future is moved whole into a box; a pooled request never connects.
                None => (Box::pin(self.connect()).await?, false),
            };
            if reused && !link.sender.is_ready() {
                // Its last answer was read; driving it lets hyper finish that exchange.
                let ready = tokio::select! {
                    biased;
                    r = std::future::poll_fn(|cx| link.poll_ready(cx)) => r,
                    () = timer.as_mut() => return Err(UpstreamError::Idle(self.idle_timeout)),
                };
                if !ready {
                    continue; // closed by the upstream while it sat idle
                }
            }
            let mut answer = std::pin::pin!(link.sender.try_send_request(req));
            // The connection is driven first, so an answer read in this poll is taken at once.
            let waiting = std::future::poll_fn(|cx| {
                link.drive(cx);
                answer.as_mut().poll(cx)
            });
            let sent = tokio::select! {
                biased;
                r = waiting => r,
                () = timer.as_mut() => return Err(UpstreamError::Idle(self.idle_timeout)),
            };
            match sent {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    let state = if incoming.is_end_stream() { BodyState::Ended } else { BodyState::Reading };
                    let body = Body {
                        inner: Some(incoming),
                        state,
                        pool: self.pool.clone(),
                        link: Some(link),
                        timer,
                        last_progress: Instant::now(),
                        idle_timeout: self.idle_timeout,
                    };
                    return Ok(axum::http::Response::from_parts(parts, body.settle()));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection closed before the request left: try the next one.
                    Some(back) if reused => req = back,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    /// The most recently returned idle connection still open and young enough.
    fn checkout(&self) -> Option<Link> {
        let Ok(mut idle) = self.pool.idle.lock() else { return None };
        while let Some(c) = idle.pop() {
            if !c.link.ended && !c.link.sender.is_closed() && c.since.elapsed() < self.pool.max_idle {
                return Some(c.link);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Link, UpstreamError> {
        let t = &self.target;
        let connecting = async {
            let tcp = tokio::net::TcpStream::connect((t.connect_host.as_str(), t.port))
                .await
                .map_err(UpstreamError::Connect)?;
            // Streamed chunks leave at once instead of waiting for the previous one's ACK.
            let _ = tcp.set_nodelay(true);
            match &t.tls {
                None => handshake(Io::Plain(tcp)).await,
                Some((tls, name)) => {
                    let stream = tls.connect(name.clone(), tcp).await.map_err(UpstreamError::Connect)?;
                    handshake(Io::Tls(Box::new(stream))).await
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or(Err(UpstreamError::ConnectTimeout(self.connect_timeout)))
    }
}

/// HTTP/1.1 over `io`; the connection is driven by the tasks that use it (see [`Link`]).
async fn handshake(io: Io) -> Result<Link, UpstreamError> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(UpstreamError::Http)?;
    Ok(Link { sender, conn: Box::pin(conn), ended: false })
}

/// TLS 1.2 and 1.3 with the platform's roots and the aws-lc-rs provider (what reqwest used),
/// HTTP/1.1 announced by ALPN.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Reading,
    Ended,
}

/// An upstream response body under `UPSTREAM_IDLE_TIMEOUT`; gives its connection back to the
/// pool when read to the end.
pub(crate) struct Body {
    inner: Option<Incoming>,
    state: BodyState,
    pool: Arc<Pool>,
    /// The connection, driven while the body is read; back to the pool at its end.
    link: Option<Link>,
    timer: Pin<Box<Sleep>>,
    /// When the last chunk (or the head) arrived.
    last_progress: Instant,
    idle_timeout: Duration,
}

impl Body {
    /// A body with nothing to read (a `HEAD` answer, `Content-Length: 0`) ends at once.
    fn settle(mut self) -> Self {
        if self.state == BodyState::Ended {
            self.release();
        }
        self
    }

    /// The answer was read to the end: the connection can carry the next request.
    fn release(&mut self) {
        self.state = BodyState::Ended;
        let Some(link) = self.link.take() else { return };
        let Ok(mut idle) = self.pool.idle.lock() else { return };
        // Nothing polls an idle connection, so one the upstream closed would hold its socket
        // until taken again; those past `max_idle` are closed here, oldest first, as others
        // come back (a pool used at all is swept within a request of expiry).
        let max = self.pool.max_idle;
        if idle.first().is_some_and(|c| c.since.elapsed() >= max) {
            idle.retain(|c| c.since.elapsed() < max);
        }
        if !link.ended {
            idle.push(Idle { link, since: Instant::now() });
        }
    }

    /// `Content-Length` of the answer, when the upstream sent one.
    pub(crate) fn exact_len(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|b| http_body::Body::size_hint(b).exact())
    }

    /// Whether the upstream was silent past the deadline; otherwise the timer is re-armed at the
    /// last progress plus the timeout and polled again, so it wakes this task then.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last_progress + self.idle_timeout;
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
        false
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        if this.state == BodyState::Ended {
            return Poll::Ready(None);
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        // Asking for the body is what lets hyper read it: when the body is not ready, the
        // connection is driven and the body asked again, so a body already in hyper's buffer is
        // delivered in this same poll instead of on a wake-up of this task.
        let polled = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Pending => {
                if let Some(link) = this.link.as_mut() {
                    link.drive(cx);
                }
                Pin::new(inner).poll_frame(cx)
            }
            ready => ready,
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.last_progress = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state = BodyState::Ended;
                this.link = None;
                Poll::Ready(Some(Err(UpstreamError::Http(e))))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Pending if this.idle_expired(cx) => {
                this.state = BodyState::Ended;
                this.link = None; // closes a connection whose answer was not read
                this.inner = None;
                Poll::Ready(Some(Err(UpstreamError::Idle(this.idle_timeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(|| http_body::SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 upstream: each accepted connection runs `answer` on every request head
    /// read from it; counts accepted connections.
    async fn upstream<F, Fut>(answer: F) -> (url::Url, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/base/", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(tcp));
            }
        });
        (url, accepted)
    }

    /// Reads one request head (the tests send bodiless requests); `None` at end of stream.
    async fn read_head(tcp: &mut tokio::net::TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    fn get(client: &Client, path: &str) -> axum::http::Request<Full<Bytes>> {
        let mut req = axum::http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = client.uri(&path.parse().unwrap());
        req.headers_mut().insert(axum::http::header::HOST, client.host_header().clone());
        req
    }

    async fn read_all(mut body: Body) -> Result<Vec<u8>, UpstreamError> {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            out.extend_from_slice(&frame?.into_data().unwrap_or_default());
        }
        Ok(out)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn the_target_path_prefixes_the_clients_path_and_query() {
        let client = |base: &str| {
            Client::new(&url::Url::parse(base).unwrap(), Duration::from_secs(1), Duration::from_secs(1)).unwrap()
        };
        let uri: axum::http::Uri = "/v1/messages?beta=true".parse().unwrap();
        assert_eq!(client("http://up:1/api/anthropic").uri(&uri), "/api/anthropic/v1/messages?beta=true");
        assert_eq!(client("http://up:1/api/anthropic/").uri(&uri), "/api/anthropic/v1/messages?beta=true");
        assert_eq!(client("http://up:1").uri(&"/v1/a%20b".parse().unwrap()), "/v1/a%20b");
        assert_eq!(client("http://up:1").host_header(), "up:1");
        assert_eq!(client("https://up.example").host_header(), "up.example");
        assert_eq!(client("http://[::1]:8/").host_header(), "[::1]:8");
    }

    #[tokio::test]
    async fn connections_are_reused_and_a_closed_one_is_replaced() {
        // The first connection answers twice, then closes without saying so; the client must
        // reuse it for the second request and, noticing the close when it takes the connection
        // from the pool (nothing polls an idle one), open a new one for the third.
        let first = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let closes = closed.clone();
        let (url, accepted) = upstream(move |mut tcp| {
            let (first, closes) = (first.clone(), closes.clone());
            async move {
                let answers = if first.fetch_add(1, Ordering::SeqCst) == 0 { 2 } else { usize::MAX };
                for _ in 0..answers {
                    let Some(head) = read_head(&mut tcp).await else { return };
                    assert!(head.starts_with("GET /base/x HTTP/1.1\r\n"), "{head}");
                    tcp.write_all(OK).await.unwrap();
                }
                drop(tcp);
                closes.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        let client = Client::new(&url, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
        for i in 0..3 {
            let resp = client.send(get(&client, "/x")).await.unwrap_or_else(|e| panic!("request {i}: {e:?}"));
            assert_eq!(read_all(resp.into_body()).await.unwrap(), b"ok");
            if i == 1 {
                // Wait until the upstream closed the pooled connection.
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while closed.load(Ordering::SeqCst) == 0 {
                    assert!(std::time::Instant::now() < deadline, "the upstream never closed the connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one connection for two requests, a new one after the close");
    }

    /// The request's own task drives its connection: sending a request and reading its answer
    /// spawns no task (a spawned connection task cost two task switches per request).
    #[tokio::test]
    async fn a_request_spawns_no_task_for_its_connection() {
        let (url, _) = upstream(|mut tcp| async move {
            while read_head(&mut tcp).await.is_some() {
                tcp.write_all(OK).await.unwrap();
            }
        })
        .await;
        let client = Client::new(&url, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks(); // the test's upstream: its accept loop
        let resp = client.send(get(&client, "/x")).await.unwrap();
        assert_eq!(client.pool.idle.lock().unwrap().len(), 0, "the connection is in use");
        assert_eq!(read_all(resp.into_body()).await.unwrap(), b"ok");
        assert_eq!(
            metrics.num_alive_tasks(),
            before + 1,
            "one new task: the upstream's side of the connection, none on the client's"
        );
        assert_eq!(client.pool.idle.lock().unwrap().len(), 1, "back in the pool once read");
    }

    /// Idle connections are not polled, so expired ones are closed when another comes back:
    /// of two idle since the start, the one left unused past the pool's limit is gone after the
    /// other served a request (it would otherwise keep its socket until taken again).
    #[tokio::test]
    async fn expired_idle_connections_are_closed_when_another_comes_back() {
        let (url, accepted) = upstream(|mut tcp| async move {
            while read_head(&mut tcp).await.is_some() {
                tcp.write_all(OK).await.unwrap();
            }
        })
        .await;
        let mut client = Client::new(&url, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
        let max_idle = Duration::from_secs(1);
        client.pool = Arc::new(Pool { idle: Mutex::new(Vec::new()), max_idle });
        let (a, b) = (client.send(get(&client, "/x")).await.unwrap(), client.send(get(&client, "/x")).await.unwrap());
        for resp in [a, b] {
            assert_eq!(read_all(resp.into_body()).await.unwrap(), b"ok");
        }
        assert_eq!((client.pool.idle.lock().unwrap().len(), accepted.load(Ordering::SeqCst)), (2, 2));
        // The newer idle connection serves two requests 0.6 s apart; by the second, the older
        // one has been idle past the limit.
        for _ in 0..2 {
            tokio::time::sleep(max_idle * 6 / 10).await;
            let resp = client.send(get(&client, "/x")).await.unwrap();
            assert_eq!(read_all(resp.into_body()).await.unwrap(), b"ok");
        }
        assert_eq!(client.pool.idle.lock().unwrap().len(), 1, "the expired connection was closed");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "no new connection was needed");
    }

    #[tokio::test]
    async fn an_answer_dropped_half_read_does_not_return_its_connection() {
        let (url, accepted) = upstream(|mut tcp| async move {
            while let Some(head) = read_head(&mut tcp).await {
                if head.starts_with("GET /base/long") {
                    tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf").await.unwrap();
                } else {
                    tcp.write_all(OK).await.unwrap();
                }
            }
        })
        .await;
        let client = Client::new(&url, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
        let mut long = client.send(get(&client, "/long")).await.unwrap().into_body();
        let first = std::future::poll_fn(|cx| Pin::new(&mut long).poll_frame(cx)).await;
        assert!(first.is_some());
        drop(long);
        let resp = client.send(get(&client, "/x")).await.unwrap();
        assert_eq!(read_all(resp.into_body()).await.unwrap(), b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the half-read connection was not reused");
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_before_the_head_and_between_chunks() {
        let (url, _) = upstream(|mut tcp| async move {
            while let Some(head) = read_head(&mut tcp).await {
                if head.starts_with("GET /base/mute") {
                    std::future::pending::<()>().await;
                }
                // A chunked body whose second chunk never comes.
                tcp.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n").await.unwrap();
            }
        })
        .await;
        let idle = Duration::from_millis(300);
        let client = Client::new(&url, Duration::from_secs(10), idle).unwrap();
        let err = client.send(get(&client, "/mute")).await.err();
        assert!(matches!(err, Some(UpstreamError::Idle(_))), "{err:?}");
        let body = client.send(get(&client, "/stall")).await.unwrap().into_body();
        let err = read_all(body).await.err();
        assert!(matches!(err, Some(UpstreamError::Idle(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_stream_longer_than_the_idle_timeout_is_not_cut_while_chunks_arrive() {
        // Twelve chunks 250 ms apart: three seconds in all, never a second of silence.
        let (url, _) = upstream(|mut tcp| async move {
            let Some(_) = read_head(&mut tcp).await else { return };
            tcp.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                tcp.write_all(b"1\r\n.\r\n").await.unwrap();
            }
            tcp.write_all(b"0\r\n\r\n").await.unwrap();
        })
        .await;
        let client = Client::new(&url, Duration::from_secs(10), Duration::from_secs(1)).unwrap();
        let body = client.send(get(&client, "/stream")).await.unwrap().into_body();
        assert_eq!(read_all(body).await.unwrap(), b"............");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = Client::new(&url, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
        let err = client.send(get(&client, "/x")).await.err();
        assert!(matches!(err, Some(UpstreamError::Connect(_))), "{err:?}");
    }
}
