//! Socket vocabulary shared by every listener: the one serving loop every listener runs
//! ([`serve`]: `TCP_NODELAY`, header-read and idle timeouts, a stalled client cut by the kernel,
//! graceful shutdown, the peer address), and the URL at which a local listener's `/metrics` is scraped.
//!
//! `axum::serve` sets no read deadline of any kind: a client that opens connections and never
//! finishes its headers, or keeps idle connections open, holds sockets and tasks for as long as
//! it likes. [`serve`] runs hyper-util's connection builder itself and watches each connection:
//!
//! - *header read timeout*: from the first byte of a request head, the head must be complete
//!   within [`ListenerLimits::header_read`]; otherwise the connection is dropped (counted in
//!   [`ListenerTrips::header_timeouts`]);
//! - *idle timeout*: a connection with no request in flight and no byte of a new one for
//!   [`ListenerLimits::idle`], whether it has served requests or none yet, is closed gracefully
//!   ([`ListenerTrips::idle_closes`]).
//!
//! A connection that has sent nothing yet is idle, not a slow head: HTTP clients open
//! connections they may not use at once (hyper's client races a new connection against its pool
//! and keeps the loser idle; browsers preconnect). Dropping those at the header timeout (30 s)
//! closed them while the client still held them for reuse, and a request sent on one at that
//! moment met a reset: a one-hour soak whose overview refreshed every 30 s counted 12 such
//! drops and failed on one (BENCHMARKS.md, "Keep-alive resets, twelfth stop"). The idle
//! timeout (120 s) is longer than common clients' own (reqwest's pool 90 s), so they close
//! first.
//!
//! A request counts as in flight from the moment its head is parsed until its response body is
//! dropped, so a long-lived response stream (the dashboard's `/api/events`, a proxied SSE
//! answer) is never cut by either timeout, however quiet it is. Request bodies are not timed
//! here: handlers that read bodies bound that themselves (the proxy's `REQUEST_BODY_TIMEOUT`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default time a client has to send a complete request head.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time an idle keep-alive connection stays open.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The two connection deadlines of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time allowed to send a complete request head, from its first byte.
    pub header_read: Duration,
    /// Time a connection may sit without a request (between two, or before its first) before
    /// it is closed.
    pub idle: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self { header_read: DEFAULT_HEADER_READ_TIMEOUT, idle: DEFAULT_IDLE_TIMEOUT }
    }
}

impl ListenerLimits {
    /// How often a connection checks its deadlines: an eighth of the shorter one, between
    /// 10 ms and 1 s, so a deadline is enforced within about 12 % of its length.
    fn tick(&self) -> Duration {
        (self.header_read.min(self.idle) / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Connections a listener closed on its own, for the owner's metrics.
#[derive(Debug, Default)]
pub struct ListenerTrips {
    /// Connections dropped because their request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Idle keep-alive connections closed.
    pub idle_closes: AtomicU64,
}

/// A listener's configuration for [`serve`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Listening {
    /// Connection deadlines.
    pub limits: ListenerLimits,
    /// Where closes are counted.
    pub trips: Arc<ListenerTrips>,
    /// Close a connection whose client accepts no byte for this long while data waits for it
    /// (see [`set_user_timeout`]); `None` leaves the system's default.
    pub stalled_client: Option<Duration>,
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, asks every open
/// connection to finish its current request, and returns when all are closed (callers bound
/// that wait with their grace period). Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    listening: Listening,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, move |peer| WithPeer { router: router.clone(), peer }, listening, shutdown).await
}

/// [`serve`] for any service, made per connection from the peer's address: a listener with a
/// few fixed paths (the proxy's) dispatches them itself instead of through a `Router`.
pub(crate) async fn serve_with<F, S>(
    listener: TcpListener,
    service_for: F,
    listening: Listening,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    F: Fn(SocketAddr) -> S,
    S: PeerService,
{
    let connections = TaskTracker::new();
    let listening = Arc::new(listening);
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                accept_backoff(&e).await;
                continue;
            }
        };
        connections.spawn(connection(tcp, peer, service_for(peer), listening.clone(), shutdown.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one failed handshake are the client's; anything else (out of file descriptors)
/// is the machine's, so wait a little instead of spinning on it, as `axum::serve` does.
async fn accept_backoff(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        // Once a second while the machine is out of descriptors: at most one line a minute.
        static FAILED: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();
        if let Some(suppressed) = FAILED.admit() {
            tracing::warn!(error = %e, suppressed, "Accepting a connection failed; retrying in 1 s.");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Serves one connection under the watch of its deadlines and the shutdown token.
async fn connection<S: PeerService>(
    tcp: TcpStream,
    peer: SocketAddr,
    inner: S,
    listening: Arc<Listening>,
    shutdown: CancellationToken,
) {
    set_nodelay(&tcp);
    if let Some(stalled) = listening.stalled_client {
        let ms = u32::try_from(stalled.as_millis()).unwrap_or(u32::MAX);
        if let Err(e) = set_user_timeout(&tcp, ms) {
            tracing::debug!(error = %e, "Cannot set TCP_USER_TIMEOUT on an accepted connection.");
        }
    }
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched { inner: tcp, watch: watch.clone() });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None); // hyper's would also cut idle keep-alive at 30 s
    let conn = builder.serve_connection(io, Service { inner, watch: watch.clone() });
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(listening.limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "Connection ended with an error.");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => match watch.verdict(&listening.limits) {
                Verdict::Keep => {}
                Verdict::HeaderTimeout => {
                    listening.trips.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "Request head not complete in time; connection dropped.");
                    return;
                }
                Verdict::Idle if !closing => {
                    closing = true;
                    listening.trips.idle_closes.fetch_add(1, Ordering::Relaxed);
                    conn.as_mut().graceful_shutdown();
                }
                Verdict::Idle => {}
            },
        }
    }
}

/// What one connection is doing, shared by its socket wrapper, its service and its watcher.
#[derive(Debug)]
struct Watch {
    opened: Instant,
    /// Requests whose head was parsed and whose response body is not dropped yet.
    inflight: AtomicUsize,
    /// Milliseconds since `opened` when the head of the next request started arriving;
    /// [`NONE`] while none is arriving (a request in flight, or no byte since the last one or
    /// since accept).
    head_started_ms: AtomicU64,
    /// Milliseconds since `opened` when the last response finished.
    idle_since_ms: AtomicU64,
    /// HTTP/2 multiplexes control frames between requests, so bytes between requests say
    /// nothing about a request head; only the idle rule applies there.
    http2: AtomicBool,
}

/// No request head pending.
const NONE: u64 = u64::MAX;

enum Verdict {
    Keep,
    HeaderTimeout,
    Idle,
}

impl Watch {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            head_started_ms: AtomicU64::new(NONE),
            idle_since_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: with no request in flight, they are the start of the next head.
    fn on_read(&self) {
        if self.inflight.load(Ordering::Relaxed) == 0 && self.head_started_ms.load(Ordering::Relaxed) == NONE {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request head was parsed.
    fn begin(self: &Arc<Self>, version: Version) -> InFlight {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NONE, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn verdict(&self, limits: &ListenerLimits) -> Verdict {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return Verdict::Keep;
        }
        let now = self.now_ms();
        let head = self.head_started_ms.load(Ordering::Relaxed);
        if head != NONE && !self.http2.load(Ordering::Relaxed) {
            let limit = u64::try_from(limits.header_read.as_millis()).unwrap_or(NONE);
            return if now.saturating_sub(head) >= limit { Verdict::HeaderTimeout } else { Verdict::Keep };
        }
        let limit = u64::try_from(limits.idle.as_millis()).unwrap_or(NONE);
        if now.saturating_sub(self.idle_since_ms.load(Ordering::Relaxed)) >= limit {
            Verdict::Idle
        } else {
            Verdict::Keep
        }
    }
}

/// Marks a request in flight until its response body is dropped (sent, or the client left).
#[derive(Debug)]
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, reporting reads to the connection's [`Watch`].
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.on_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What [`serve_with`] runs for each connection: a service that is always ready (its
/// `poll_ready` is never called), answers with a body like axum's, and returns a future that
/// can be moved (typically boxed once by the service itself).
pub trait PeerService:
    tower_service::Service<
        Request<Incoming>,
        Response = Response<axum::body::Body>,
        Error = Infallible,
        Future: Send + Unpin + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> PeerService for S where
    S: tower_service::Service<
            Request<Incoming>,
            Response = Response<axum::body::Body>,
            Error = Infallible,
            Future: Send + Unpin + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A router that sees the peer as `ConnectInfo<SocketAddr>`.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl tower_service::Service<Request<Incoming>> for WithPeer {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<<Router as tower_service::Service<Request<Incoming>>>::Future>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // A Router is always ready.
        Box::pin(self.router.call(req))
    }
}

/// A connection's service as a hyper service: tracks the request in flight.
#[derive(Clone)]
struct Service<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S: PeerService> hyper::service::Service<Request<Incoming>> for Service<S> {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Tracked<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let inflight = self.watch.begin(req.version());
        // Cloning the service is a reference count.
        Tracked { call: self.inner.clone().call(req), inflight: Some(inflight) }
    }
}

/// The service's answer with its in-flight mark attached: the future the service returned,
/// not boxed once more (a request's future is large, and moving it into a box costs a copy).
struct Tracked<F> {
    call: F,
    inflight: Option<InFlight>,
}

impl<F> Future for Tracked<F>
where
    F: Future<Output = Result<Response<axum::body::Body>, Infallible>> + Unpin,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = std::task::ready!(Pin::new(&mut self.call).poll(cx))?;
        let Some(inflight) = self.inflight.take() else { return Poll::Pending };
        Poll::Ready(Ok(response.map(|body| TrackedBody { inner: body, _inflight: inflight })))
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _inflight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Streamed answers (SSE from the proxy, live events from the dashboard) are many small writes;
/// with Nagle's algorithm on, each one after the first waits for the client's ACK, which a
/// benchmark measured as +35 ms per streamed answer through the proxy.
fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "Cannot set TCP_NODELAY on an accepted connection.");
    }
}

/// Asks the kernel to close a connection whose client takes no byte for `ms` while data waits
/// for it (`TCP_USER_TIMEOUT`; 0 leaves the system's default).
///
/// A live client that stops reading (a frozen tab, a suspended laptop, a stuck script) cannot
/// be cut by the hub: the server only notices lag when it writes, and it can always write,
/// because the kernel grows the connection's send buffer (to 4 MiB by default) long before
/// the write would block. `benches/sse_fanout.rs` measured 100 such clients holding 75 MiB of
/// kernel memory after 10 minutes, still growing, and every one of them still connected. With a
/// user timeout the kernel gives up on a connection once its data has waited `ms` for the
/// client's receive window to open (or for an ACK): the next write fails, the connection and
/// its subscription end, and a real browser's TCP keep-alive then finds the connection gone and
/// its EventSource reconnects and resumes with `Last-Event-ID`. A client that reads, however
/// slowly, keeps its connection: only time without any progress counts.
#[cfg(target_os = "linux")]
fn set_user_timeout(tcp: &TcpStream, ms: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_uint::from(ms);
    // SAFETY: the descriptor belongs to `tcp`, alive for the call; the option value is a
    // c_uint read by the kernel and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn set_user_timeout(_tcp: &TcpStream, _ms: u32) -> std::io::Result<()> {
    Ok(())
}

/// The URL to scrape a local listener at: loopback when it listens on every interface.
pub(crate) fn local_metrics_url(addr: SocketAddr) -> anyhow::Result<url::Url> {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(url::Url::parse(&format!("http://{host}:{}/metrics", addr.port()))?)
}
