//! Fetching one `/metrics` body: timeout, size cap, gzip, and errors a human can act on.

use std::time::Duration;

use url::Url;

use super::parse::ParseError;

mod conn;

/// Why a scrape failed. The `Display` text is what `/api/targets` shows as `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No complete answer within the scrape timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection refused, DNS failure, TLS failure, reset.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The target answered with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The target redirected to another origin (scheme, host or port), which is not followed:
    /// a scrape URL must not become a way to make zai-dash fetch (and show) anything anywhere.
    #[error("HTTP status {0}: redirect to another origin not followed")]
    Redirect(u16),
    /// The body exceeded the cap.
    #[error("body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The body could not be read (connection cut, bad gzip, ...).
    #[error("reading body failed: {0}")]
    Body(String),
    /// The body is not UTF-8 text.
    #[error("body is not UTF-8 text")]
    NotUtf8,
    /// The body is not a valid Prometheus text exposition. The message says where and what
    /// kind of problem, but never quotes the body: it is shown on pages, and a target (or what
    /// it redirects to) must not be able to put its own text there.
    #[error("malformed exposition: line {}: {}", .0.line, .0.reason_without_text())]
    Parse(#[from] ParseError),
}

impl ScrapeError {
    /// A bounded label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Status(_) | Self::Redirect(_) => "status",
            Self::BodyTooLarge(_) => "too_large",
            Self::Body(_) => "body",
            Self::NotUtf8 | Self::Parse(_) => "parse",
        }
    }
}

/// Redirects followed within the target's own origin.
const MAX_REDIRECTS: usize = 3;

/// The `Accept` header of every scrape: the classic text format.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Largest body buffer reserved from a `Content-Length` before any byte arrived.
const PREALLOC_MAX: usize = 1 << 20;

/// Builds the shared HTTP client for `https://` targets: gzip accepted, redirects followed only
/// within the target's origin (at most three), no connection reuse limits. Plain `http://`
/// targets are scraped over a connection of their own ([`Fetcher`]).
pub fn build_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .gzip(true)
        .redirect(reqwest::redirect::Policy::custom(same_origin_only))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The `User-Agent` of every scrape.
const USER_AGENT: &str = concat!("zai-dash/", env!("ZAI_DASH_VERSION"));

fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let first = attempt.previous().first().map(Url::origin);
    if attempt.previous().len() > MAX_REDIRECTS || first != Some(attempt.url().origin()) {
        attempt.stop()
    } else {
        attempt.follow()
    }
}

/// One target's fetching: a connection of its own to a plain `http://` target, kept open
/// between scrapes, so a steady scrape is one request on an open socket with no per-request
/// client machinery (the shared client's boxed request state and pool were most of a scrape's
/// allocations). `https://` targets go through the shared client.
#[derive(Debug, Default)]
pub struct Fetcher {
    conn: Option<conn::Conn>,
}

impl Fetcher {
    /// GETs `url` into `body` (cleared first), within `timeout` for the whole exchange and at
    /// most `max_bytes` after decompression (so a gzip bomb is cut like any other large body).
    pub async fn fetch(
        &mut self,
        shared: &reqwest::Client,
        url: &Url,
        (timeout, max_bytes): (Duration, usize),
        body: &mut Vec<u8>,
    ) -> Result<(), ScrapeError> {
        body.clear();
        let exchange = async {
            if url.scheme() == "http" {
                self.fetch_plain(url, max_bytes, body).await
            } else {
                fetch_shared(shared, url, timeout, max_bytes, body).await
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None; // cut mid-exchange: the connection's state is unknown
                Err(ScrapeError::Timeout(timeout))
            }
        }
    }

    /// The plain HTTP exchange, following redirects within the origin.
    async fn fetch_plain(&mut self, url: &Url, max_bytes: usize, body: &mut Vec<u8>) -> Result<(), ScrapeError> {
        let auth = conn::basic_auth(url);
        let mut current = url.clone();
        for hop in 0..=MAX_REDIRECTS {
            let kept = self.conn.take().filter(|c| c.is_for(&current)).and_then(conn::Conn::if_open);
            let mut c = match kept {
                Some(c) => c,
                None => conn::Conn::open(&current).await?,
            };
            let head = match c.get(&current, auth.as_ref(), body).await {
                Ok(head) => head,
                // The target closed the kept connection as the request went out: once more on
                // a new one (a GET can be repeated).
                Err(e) if c.reused && e.is_retryable() => {
                    let mut fresh = conn::Conn::open(&current).await?;
                    let head = fresh.get(&current, auth.as_ref(), body).await.map_err(conn::Error::into_scrape)?;
                    c = fresh;
                    head
                }
                Err(e) => return Err(e.into_scrape()),
            };
            if (300..400).contains(&head.status) {
                // The body is not read: the connection goes, the next request opens another.
                match conn::same_origin_location(&current, &head) {
                    Some(next) if hop < MAX_REDIRECTS => {
                        current = next;
                        continue;
                    }
                    _ => return Err(ScrapeError::Redirect(head.status)),
                }
            }
            if !(200..300).contains(&head.status) {
                return Err(ScrapeError::Status(head.status));
            }
            c.read_body(head, max_bytes, body).await?;
            self.conn = Some(c);
            return Ok(());
        }
        Err(ScrapeError::Redirect(302))
    }
}

/// Body buffers shared by the scrape tasks: a scrape takes one and gives it back when its body
/// is processed, so bodies are read into memory already grown instead of a new buffer each
/// time, while only as many buffers exist as scrapes ran at once (a buffer per target would
/// keep every target's largest body in memory).
#[derive(Debug, Default)]
pub struct Buffers(std::sync::Mutex<Vec<Vec<u8>>>);

/// Buffers kept for reuse at most.
const BUFFERS_KEPT: usize = 8;
/// A buffer grown past this (one large body) is freed rather than kept.
const BUFFER_KEPT_MAX: usize = 1 << 20;

impl Buffers {
    /// A buffer, empty, possibly with room from an earlier body.
    pub fn take(&self) -> Vec<u8> {
        self.0.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_default()
    }

    /// Gives a buffer back for the next scrape.
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > BUFFER_KEPT_MAX {
            return;
        }
        buffer.clear();
        if let Ok(mut kept) = self.0.lock()
            && kept.len() < BUFFERS_KEPT
        {
            kept.push(buffer);
        }
    }
}

/// An `https://` exchange through the shared client.
async fn fetch_shared(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
    max_bytes: usize,
    body: &mut Vec<u8>,
) -> Result<(), ScrapeError> {
    // No per-request timeout: `fetch` bounds the whole exchange already (one timer, not two).
    let mut resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, reqwest::header::HeaderValue::from_static(ACCEPT))
        .send()
        .await
        .map_err(|e| classify(e, timeout))?;
    if resp.status().is_redirection() {
        return Err(ScrapeError::Redirect(resp.status().as_u16()));
    }
    if !resp.status().is_success() {
        return Err(ScrapeError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(ScrapeError::BodyTooLarge(max_bytes));
    }
    // Sized once when the length is announced (and within the cap), instead of regrown chunk
    // by chunk; at most 1 MiB up front, so a target that announces a large body and sends
    // nothing does not make every scrape reserve the whole cap.
    let announced = resp.content_length().map_or(0, |n| usize::try_from(n).unwrap_or(0));
    body.reserve(announced.min(PREALLOC_MAX));
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(e, timeout))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(ScrapeError::BodyTooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(())
}

/// The error as `last_error` shows it. reqwest's own message names the URL, credentials
/// included; it is dropped before anything is read from the error.
fn classify(e: reqwest::Error, timeout: Duration) -> ScrapeError {
    let e = e.without_url();
    if e.is_timeout() {
        ScrapeError::Timeout(timeout)
    } else if e.is_connect() || e.is_request() {
        ScrapeError::Connect(root_cause(&e))
    } else {
        ScrapeError::Body(root_cause(&e))
    }
}

/// The innermost error message: "Connection refused (os error 111)" rather than reqwest's
/// "error sending request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use futures_util::StreamExt as _;

    use super::*;

    const LIMITS: (Duration, usize) = (Duration::from_secs(5), 1 << 20);

    /// Serves `router` on a loopback port; counts the connections it accepted.
    async fn serve(router: axum::Router) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, router).await });
        (base, accepted)
    }

    async fn fetch(fetcher: &mut Fetcher, url: &str, limits: (Duration, usize)) -> Result<String, ScrapeError> {
        let mut body = Vec::new();
        let url = Url::parse(url).unwrap();
        fetcher.fetch(&build_client(), &url, limits, &mut body).await?;
        Ok(String::from_utf8(body).unwrap())
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn a_kept_connection_serves_the_next_scrape_and_a_closed_one_is_reopened() {
        let router = axum::Router::new()
            .route("/metrics", get(|| async { "up 1\n" }))
            .route("/close", get(|| async { ([(header::CONNECTION, "close")], "up 1\n") }));
        let (base, accepted) = serve(router).await;
        let mut fetcher = Fetcher::default();
        for _ in 0..3 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/metrics"), LIMITS).await.unwrap(), "up 1\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for three scrapes");
        for _ in 0..2 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/close"), LIMITS).await.unwrap(), "up 1\n");
        }
        assert_eq!(fetch(&mut fetcher, &format!("http://{base}/metrics"), LIMITS).await.unwrap(), "up 1\n");
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "the target closed it after each of its two answers");
    }

    #[tokio::test]
    async fn headers_say_what_is_accepted_and_carry_the_urls_credentials() {
        let router = axum::Router::new().route(
            "/metrics",
            get(|h: HeaderMap| async move {
                let get = |n: header::HeaderName| h.get(n).map_or("", |v| v.to_str().unwrap()).to_owned();
                format!(
                    "{}|{}|{}|{}",
                    get(header::ACCEPT),
                    get(header::ACCEPT_ENCODING),
                    get(header::AUTHORIZATION),
                    get(header::USER_AGENT)
                )
            }),
        );
        let (base, _) = serve(router).await;
        let seen = fetch(&mut Fetcher::default(), &format!("http://us%40er:pw@{base}/metrics?x=1"), LIMITS).await;
        let seen = seen.unwrap();
        let fields: Vec<&str> = seen.split('|').collect();
        assert_eq!(fields[0], ACCEPT);
        assert_eq!(fields[1], "gzip");
        assert_eq!(fields[2], "Basic dXNAZXI6cHc=", "us@er:pw");
        assert!(fields[3].starts_with("zai-dash/"));
    }

    #[tokio::test]
    async fn gzip_is_decoded_and_the_cap_holds_after_decoding() {
        let small = gzip(b"up 1\n");
        let bomb = gzip(&vec![b'#'; 4 << 20]);
        assert!(bomb.len() < 64 << 10, "compresses to {} bytes", bomb.len());
        let router = axum::Router::new()
            .route("/small", get(move || async move { ([(header::CONTENT_ENCODING, "gzip")], small) }))
            .route("/bomb", get(move || async move { ([(header::CONTENT_ENCODING, "gzip")], bomb) }))
            .route("/bad", get(|| async { ([(header::CONTENT_ENCODING, "gzip")], "not gzip") }))
            .route("/long", get(|| async { "x".repeat(2 << 20) }));
        let (base, _) = serve(router).await;
        let mut fetcher = Fetcher::default();
        assert_eq!(fetch(&mut fetcher, &format!("http://{base}/small"), LIMITS).await.unwrap(), "up 1\n");
        let bomb = fetch(&mut fetcher, &format!("http://{base}/bomb"), LIMITS).await;
        assert!(matches!(bomb, Err(ScrapeError::BodyTooLarge(_))), "{bomb:?}");
        let long = fetch(&mut fetcher, &format!("http://{base}/long"), LIMITS).await;
        assert!(matches!(long, Err(ScrapeError::BodyTooLarge(_))), "{long:?}");
        let bad = fetch(&mut fetcher, &format!("http://{base}/bad"), LIMITS).await;
        assert!(matches!(bad, Err(ScrapeError::Body(_))), "{bad:?}");
        assert_eq!(fetch(&mut fetcher, &format!("http://{base}/small"), LIMITS).await.unwrap(), "up 1\n");
    }

    #[tokio::test]
    async fn redirects_stay_within_the_origin_and_end() {
        let (other, _) = serve(axum::Router::new().route("/metrics", get(|| async { "elsewhere 1\n" }))).await;
        let away = format!("http://{other}/metrics");
        let router = axum::Router::new()
            .route("/metrics", get(|| async { "up 1\n" }))
            .route("/moved", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/metrics")]) }))
            .route("/loop", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }))
            .route(
                "/away",
                get(move || async move { (StatusCode::FOUND, [(header::LOCATION, away)]).into_response() }),
            );
        let (base, _) = serve(router).await;
        let mut fetcher = Fetcher::default();
        assert_eq!(fetch(&mut fetcher, &format!("http://{base}/moved"), LIMITS).await.unwrap(), "up 1\n");
        let looped = fetch(&mut fetcher, &format!("http://{base}/loop"), LIMITS).await;
        assert!(matches!(looped, Err(ScrapeError::Redirect(302))), "{looped:?}");
        let away = fetch(&mut fetcher, &format!("http://{base}/away"), LIMITS).await;
        assert!(matches!(away, Err(ScrapeError::Redirect(302))), "{away:?}");
    }

    #[tokio::test]
    async fn the_timeout_covers_the_whole_exchange() {
        let router = axum::Router::new().route(
            "/metrics",
            get(|| async {
                let stream = futures_util::stream::once(async { Ok::<_, std::io::Error>("up ") })
                    .chain(futures_util::stream::pending());
                axum::body::Body::from_stream(stream)
            }),
        );
        let (base, _) = serve(router).await;
        let limits = (Duration::from_millis(300), 1 << 20);
        let mut fetcher = Fetcher::default();
        let slow = fetch(&mut fetcher, &format!("http://{base}/metrics"), limits).await;
        assert!(matches!(slow, Err(ScrapeError::Timeout(_))), "{slow:?}");
        let refused = fetch(&mut fetcher, "http://127.0.0.1:1/metrics", limits).await;
        assert!(matches!(refused, Err(ScrapeError::Connect(_))), "{refused:?}");
    }
    /// What a raw target sends for one request.
    struct Reply {
        bytes: Vec<u8>,
        /// Written one byte per write, so the client sees it arrive in pieces.
        bytewise: bool,
        /// The connection is closed after it.
        close: bool,
    }

    fn reply(bytes: impl Into<Vec<u8>>) -> Option<Reply> {
        Some(Reply { bytes: bytes.into(), bytewise: false, close: false })
    }

    /// A target on a raw socket writing exact bytes: `script(connection, request)` says what to
    /// answer the request-th request of the connection-th connection (`None`: close without an
    /// answer). Returns its address and the count of connections it accepted.
    async fn raw_target(
        script: impl Fn(usize, usize) -> Option<Reply> + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (counter, script) = (accepted.clone(), Arc::new(script));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (n, script) = (counter.fetch_add(1, Ordering::SeqCst), script.clone());
                tokio::spawn(async move {
                    let _ = socket.set_nodelay(true);
                    for request in 0.. {
                        // The request head, byte by byte up to its empty line.
                        let (mut head, mut byte) = (Vec::new(), [0u8; 1]);
                        while !head.ends_with(b"\r\n\r\n") {
                            match socket.read(&mut byte).await {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        let Some(reply) = script(n, request) else { return };
                        let written = if reply.bytewise {
                            let mut r = Ok(());
                            for b in &reply.bytes {
                                r = socket.write_all(std::slice::from_ref(b)).await;
                                if r.is_err() {
                                    break;
                                }
                                // Lets the client run (after the runtime polled the sockets)
                                // between two bytes, so it reads them apart.
                                tokio::task::yield_now().await;
                            }
                            r
                        } else {
                            socket.write_all(&reply.bytes).await
                        };
                        if written.is_err() || reply.close {
                            return;
                        }
                    }
                });
            }
        });
        (base, accepted)
    }

    const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=value\r\nup 1\n\r\n7 ; a=\"b;c\";d\r\ndown 0\n\r\n0;last\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n";

    #[tokio::test]
    async fn a_chunked_body_with_extensions_and_trailers_is_read_and_its_connection_kept() {
        let (base, accepted) = raw_target(|_, _| reply(CHUNKED)).await;
        let mut fetcher = Fetcher::default();
        for _ in 0..3 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\ndown 0\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the trailers ended the body, nothing was left after it");
    }

    #[tokio::test]
    async fn a_chunked_gzip_body_in_pieces_is_decoded() {
        let zipped = gzip(b"up 1\ndown 0\n");
        let (a, b) = zipped.split_at(zipped.len() / 2);
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in [a, b] {
            answer.extend(format!("{:x};ext\r\n", part.len()).bytes());
            answer.extend(part);
            answer.extend(b"\r\n");
        }
        answer.extend(b"0\r\n\r\n");
        let (base, accepted) =
            raw_target(move |_, _| Some(Reply { bytes: answer.clone(), bytewise: true, close: false })).await;
        let mut fetcher = Fetcher::default();
        for _ in 0..2 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\ndown 0\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_written_one_byte_at_a_time_is_read_whole() {
        let sized = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nup 1\ndown 0\n";
        let (base, accepted) = raw_target(move |_, request| {
            let bytes = if request % 2 == 0 { sized } else { CHUNKED };
            Some(Reply { bytes: bytes.into(), bytewise: true, close: false })
        })
        .await;
        let mut fetcher = Fetcher::default();
        for _ in 0..4 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\ndown 0\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_without_length_ends_when_the_target_closes() {
        let (base, accepted) = raw_target(|_, _| {
            Some(Reply { bytes: b"HTTP/1.1 200 OK\r\n\r\nup 1\n".to_vec(), bytewise: false, close: true })
        })
        .await;
        let mut fetcher = Fetcher::default();
        for _ in 0..2 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_close_http_1_0_and_bytes_after_the_body_end_the_connection() {
        // The target keeps every connection open and would answer again on it: only the client
        // decides not to reuse it.
        for answer in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, Close\r\n\r\nup 1\n",
            "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nup 1\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nup 1\nHTTP/1.1 200 OK\r\n",
        ] {
            let (base, accepted) = raw_target(move |_, _| reply(answer)).await;
            let mut fetcher = Fetcher::default();
            for _ in 0..3 {
                assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\n");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3, "{answer:?}");
        }
    }

    #[tokio::test]
    async fn interim_responses_before_the_head_are_skipped() {
        let answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nup 1\n";
        let (base, accepted) = raw_target(move |_, _| reply(answer)).await;
        let mut fetcher = Fetcher::default();
        for _ in 0..2 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_head_over_the_cap_and_a_malformed_head_are_clear_errors() {
        let huge = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 5\r\n\r\nup 1\n", "a".repeat(70 << 10));
        let answers = [
            (huge, "larger than 64 KiB"),
            ("HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nup 1\n".to_owned(), "malformed response head"),
            ("SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(), "malformed response head"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nup 1\n".to_owned(), "Content-Length"),
            ("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nup 1\n".to_owned(), "Content-Length"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nup 1\n".to_owned(), "Transfer-Encoding"),
        ];
        for (answer, says) in answers {
            let (base, _) = raw_target(move |_, _| reply(answer.clone())).await;
            let e = fetch(&mut Fetcher::default(), &format!("http://{base}/m"), LIMITS).await.unwrap_err();
            assert_eq!(e.kind(), "connect", "{e}");
            assert!(e.to_string().contains(says), "{e} should say {says:?}");
        }
    }

    #[tokio::test]
    async fn a_length_over_the_cap_fails_before_the_body_comes() {
        // The body never comes: waiting for it would be a timeout, not `too_large`.
        let (base, _) = raw_target(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\nup")).await;
        let limits = (Duration::from_secs(2), 1 << 20);
        let e = fetch(&mut Fetcher::default(), &format!("http://{base}/m"), limits).await.unwrap_err();
        assert!(matches!(e, ScrapeError::BodyTooLarge(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_body_cut_by_the_target_is_a_body_error() {
        for answer in [
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nup 1\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nup 1\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nup 1\n\r\n0\r\n",
        ] {
            let (base, _) =
                raw_target(move |_, _| Some(Reply { bytes: answer.into(), bytewise: false, close: true })).await;
            let e = fetch(&mut Fetcher::default(), &format!("http://{base}/m"), LIMITS).await.unwrap_err();
            assert!(matches!(e, ScrapeError::Body(_)), "{answer:?}: {e:?}");
        }
    }

    #[tokio::test]
    async fn a_kept_connection_the_target_closed_is_replaced_without_a_failed_scrape() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nup 1\n";
        // Closed after its answer (seen before the next request, or the request is lost on it).
        let (base, accepted) =
            raw_target(move |_, _| Some(Reply { bytes: ok.into(), bytewise: false, close: true })).await;
        let mut fetcher = Fetcher::default();
        for _ in 0..3 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // Closed as the second request arrives: the request is lost and sent again.
        let (base, accepted) = raw_target(move |_, request| (request == 0).then(|| reply(ok)).flatten()).await;
        let mut fetcher = Fetcher::default();
        for _ in 0..3 {
            assert_eq!(fetch(&mut fetcher, &format!("http://{base}/m"), LIMITS).await.unwrap(), "up 1\n");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "each connection lost its second request");
    }
}
