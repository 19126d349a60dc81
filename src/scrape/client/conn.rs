//! A plain HTTP/1.1 connection to one target, kept open between its scrapes (hyper's
//! connection-level client, without a pool or boxed request state in between).
//!
//! Nothing runs the connection in the background: hyper's connection future (`driver`) is
//! polled together with whatever the scrape waits for (the response head, the body), so an idle
//! connection costs no task and no wake-up. Before a request the driver is polled once: a target
//! that closed the connection since the last scrape is seen then, and a new one is opened.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::{Host, Position, Url};

use super::{ACCEPT, PREALLOC_MAX, ScrapeError, USER_AGENT, root_cause};

type Driver = http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>;

/// An open connection to one origin.
pub(super) struct Conn {
    /// `host:port` it is connected to.
    origin: (String, u16),
    /// The `Host` header of its requests.
    host: HeaderValue,
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: Pin<Box<Driver>>,
    /// It carried a request before this one.
    pub(super) reused: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("reused", &self.reused).finish_non_exhaustive()
    }
}

/// Why an exchange on a connection failed.
pub(super) enum Error {
    /// The request could not be sent or the response head not read.
    Exchange(hyper::Error),
    /// The connection ended before the response came.
    Closed,
}

impl Error {
    /// The kept connection was closed by the target as the request went out: worth one more
    /// try on a new connection.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Exchange(e) => e.is_canceled() || e.is_incomplete_message() || e.is_closed(),
        }
    }

    pub(super) fn into_scrape(self) -> ScrapeError {
        match self {
            Self::Closed => ScrapeError::Connect("connection closed before the response".to_owned()),
            Self::Exchange(e) => ScrapeError::Connect(root_cause(&e)),
        }
    }
}

impl Conn {
    /// Connects to the origin of `url`.
    pub(super) async fn open(url: &Url) -> Result<Self, ScrapeError> {
        let port = url.port_or_known_default().unwrap_or(80);
        let tcp = match url.host() {
            Some(Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
            Some(Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
            Some(Host::Domain(name)) => TcpStream::connect((name, port)).await,
            None => return Err(ScrapeError::Connect("the URL has no host".to_owned())),
        }
        .map_err(|e| ScrapeError::Connect(root_cause(&e)))?;
        let _ = tcp.set_nodelay(true);
        let (sender, driver) =
            http1::handshake(TokioIo::new(tcp)).await.map_err(|e| ScrapeError::Connect(root_cause(&e)))?;
        let host_str = url.host_str().unwrap_or("");
        let host = match url.port() {
            Some(p) => HeaderValue::from_str(&format!("{host_str}:{p}")),
            None => HeaderValue::from_str(host_str),
        }
        .map_err(|_| ScrapeError::Connect("the URL's host is not a valid header value".to_owned()))?;
        Ok(Self { origin: (host_str.to_owned(), port), host, sender, driver: Box::pin(driver), reused: false })
    }

    /// Whether it is connected to the origin of `url`.
    pub(super) fn is_for(&self, url: &Url) -> bool {
        url.host_str() == Some(self.origin.0.as_str()) && url.port_or_known_default() == Some(self.origin.1)
    }

    /// The connection if it is still open: the driver, polled once, has not finished (a
    /// target that closed it is noticed here, before a request is lost on it).
    pub(super) fn if_open(mut self) -> Option<Self> {
        (self.driver.as_mut().now_or_never().is_none() && !self.sender.is_closed()).then_some(self)
    }

    /// Sends a GET for `url` and waits for the response head.
    pub(super) async fn get(&mut self, url: &Url, auth: Option<&HeaderValue>) -> Result<Response<Incoming>, Error> {
        let mut request = Request::get(&url[Position::BeforePath..Position::AfterQuery])
            .header(header::HOST, self.host.clone())
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .header(header::ACCEPT, HeaderValue::from_static(ACCEPT))
            .header(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let request = request.body(Empty::new()).map_err(|_| Error::Closed)?;
        let Self { sender, driver, .. } = self;
        let ready = std::future::poll_fn(|cx| sender.poll_ready(cx));
        drive(driver.as_mut(), ready).await?.map_err(Error::Exchange)?;
        let response = drive(driver.as_mut(), sender.send_request(request)).await?.map_err(Error::Exchange)?;
        self.reused = true;
        Ok(response)
    }

    /// Reads the body into `body`: decoded when gzip, at most `max_bytes` after decoding.
    pub(super) async fn read_body(
        &mut self,
        response: Response<Incoming>,
        max_bytes: usize,
        body: &mut Vec<u8>,
    ) -> Result<(), ScrapeError> {
        let gzip = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let announced = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !gzip {
            if announced.is_some_and(|n| n > max_bytes as u64) {
                return Err(ScrapeError::BodyTooLarge(max_bytes));
            }
            // Sized once from the announced length, at most 1 MiB up front (a target that
            // announces much and sends nothing must not make every scrape reserve the cap).
            body.reserve(announced.map_or(0, |n| usize::try_from(n).unwrap_or(0)).min(PREALLOC_MAX));
        }
        let mut incoming = response.into_body();
        let mut decoder = gzip.then(|| flate2::write::GzDecoder::new(Capped { out: std::mem::take(body), max_bytes }));
        loop {
            let frame = drive(self.driver.as_mut(), incoming.frame()).await.map_err(|_| body_cut())?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| ScrapeError::Body(root_cause(&e)))?;
            let Ok(data) = frame.into_data() else { continue };
            match &mut decoder {
                Some(d) => d.write_all(&data).map_err(|e| decode_error(&e, max_bytes))?,
                None => {
                    if body.len() + data.len() > max_bytes {
                        return Err(ScrapeError::BodyTooLarge(max_bytes));
                    }
                    body.extend_from_slice(&data);
                }
            }
        }
        if let Some(d) = decoder {
            let decoded = d.finish().map_err(|e| decode_error(&e, max_bytes))?;
            *body = decoded.out;
        }
        Ok(())
    }
}

fn body_cut() -> ScrapeError {
    ScrapeError::Body("connection closed before the body ended".to_owned())
}

/// The gzip decoder's error: the cap, or bad data.
fn decode_error(e: &std::io::Error, max_bytes: usize) -> ScrapeError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        ScrapeError::BodyTooLarge(max_bytes)
    } else {
        ScrapeError::Body(format!("error decoding response body: {}", root_cause(e)))
    }
}

/// Where decoded bytes go, refusing more than the cap.
struct Capped {
    out: Vec<u8>,
    max_bytes: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.max_bytes {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "decoded body over the cap"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `fut` while driving the connection (which does the reading and writing). The
/// connection ending first is [`Error::Closed`] unless `fut` completes in the same poll.
async fn drive<F: Future>(mut driver: Pin<&mut Driver>, fut: F) -> Result<F::Output, Error> {
    let mut fut = std::pin::pin!(fut);
    let mut ended = false;
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if !ended && driver.as_mut().poll(cx).is_ready() {
            ended = true;
        }
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Ok(out)),
            Poll::Pending if ended => Poll::Ready(Err(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The redirect's target when it stays within the origin of `url` (scheme, host and port).
pub(super) fn same_origin_location(url: &Url, response: &Response<Incoming>) -> Option<Url> {
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    let next = url.join(location).ok()?;
    (next.origin() == url.origin()).then_some(next)
}

/// The `Authorization` header for credentials in the URL (`http://user:pass@host/`), used as
/// a scrape uses them and never shown.
pub(super) fn basic_auth(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let mut plain = percent_decoded(url.username());
    plain.push(b':');
    plain.extend(percent_decoded(url.password().unwrap_or("")));
    let mut value = HeaderValue::from_str(&format!("Basic {}", base64(&plain))).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn percent_decoded(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
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

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_basic_auth_needs_it() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn credentials_of_the_url_become_a_sensitive_basic_header() {
        let url = Url::parse("http://us%40er:p%3Ass@h:1/metrics").unwrap();
        let value = basic_auth(&url).unwrap();
        assert_eq!(value.to_str().unwrap(), format!("Basic {}", base64(b"us@er:p:ss")));
        assert!(value.is_sensitive());
        assert!(basic_auth(&Url::parse("http://h/metrics").unwrap()).is_none());
        assert_eq!(percent_decoded("a%zz%4"), b"a%zz%4");
    }
}
