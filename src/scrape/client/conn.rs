//! A plain HTTP/1.1 connection to one target, kept open between its scrapes: our own minimal
//! client on a `TcpStream`, because hyper's connection kept a read buffer grown to 32 KiB, a
//! dispatch channel and a write buffer per idle connection (about 58 KB each, most of the heap
//! at 500 targets).
//!
//! An idle connection is the socket and its origin, nothing else. An exchange works in the
//! caller's body buffer (shared between scrapes): the request is written from it, the head read
//! into it (at most [`HEAD_MAX`]), and the body's framing (length, chunked, until close) undone
//! in place, so the body ends where the caller wants it without a buffer of the connection's
//! own. Only a gzip body needs a second, transient buffer for its compressed bytes.
//!
//! Nothing runs the connection in the background: before a request, a read that must not block
//! tells whether the target closed it since the last scrape, and a new one is opened then.

use std::io::Write as _;

use axum::http::HeaderValue;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use url::{Host, Position, Url};

use super::{ACCEPT, PREALLOC_MAX, ScrapeError, USER_AGENT, root_cause};

/// Largest response head read (status line and headers, interim 1xx heads included): a target
/// that sends an endless head is cut here, not at the body cap.
const HEAD_MAX: usize = 64 << 10;
/// Most header lines in one head (parsed on the stack of a plain function, never held across
/// an await, so the scrape task does not carry them).
const HEADERS_MAX: usize = 100;
/// Longest chunk-size line (size and extensions): its bytes wait in the buffer until complete.
const CHUNK_LINE_MAX: usize = 4 << 10;
/// Largest trailer section of a chunked body (read and ignored).
const TRAILERS_MAX: usize = 16 << 10;
/// Room made in the buffer before a read of the socket when no length says how much is left.
const READ_SIZE: usize = 16 << 10;

/// An open connection to one origin: the socket and a few fields, no buffer.
pub(super) struct Conn {
    /// `host:port` it is connected to.
    origin: (String, u16),
    tcp: TcpStream,
    /// It carried a request before this one.
    pub(super) reused: bool,
    /// Its last response left it fit for another request: the body ended by its length or last
    /// chunk, no `Connection: close` or HTTP/1.0, and nothing came after it.
    keep: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("reused", &self.reused).finish_non_exhaustive()
    }
}

/// What a scrape needs of a response head; the rest is not kept.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    chunked: bool,
    /// `Content-Encoding: gzip`.
    gzip: bool,
    /// `Location`, kept for redirects only.
    location: Option<String>,
    /// The connection ends after this response (`Connection: close`, HTTP/1.0, or both a
    /// length and a transfer coding, which a proxy may have framed differently).
    close: bool,
}

/// Why an exchange on a connection failed.
pub(super) enum Error {
    /// Sending failed, or the connection ended or failed before the first byte of a response.
    Lost(String),
    /// The response started and then failed, or is not HTTP/1.
    Failed(ScrapeError),
}

impl Error {
    /// The kept connection was closed by the target as the request went out: worth one more
    /// try on a new connection.
    pub(super) fn is_retryable(&self) -> bool {
        matches!(self, Self::Lost(_))
    }

    pub(super) fn into_scrape(self) -> ScrapeError {
        match self {
            Self::Lost(why) => ScrapeError::Connect(why),
            Self::Failed(e) => e,
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
        let host = url.host_str().unwrap_or("").to_owned();
        Ok(Self { origin: (host, port), tcp, reused: false, keep: true })
    }

    /// Whether it is connected to the origin of `url`.
    pub(super) fn is_for(&self, url: &Url) -> bool {
        url.host_str() == Some(self.origin.0.as_str()) && url.port_or_known_default() == Some(self.origin.1)
    }

    /// The connection if it can carry another request: its last response allowed that, and a
    /// read that must not block finds nothing (a target that closed it since is seen here, as
    /// the end of the stream or an error, before a request is lost on it; bytes nobody asked
    /// for mean it is out of step).
    pub(super) fn if_open(self) -> Option<Self> {
        if !self.keep {
            return None;
        }
        match self.tcp.try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(self),
            _ => None,
        }
    }

    /// Sends a GET for `url` and reads the response head, skipping interim (1xx) ones. `buf`
    /// (cleared first) carries the request out and the head in; what came after the head (the
    /// start of the body) is left in it for [`Conn::read_body`].
    pub(super) async fn get(
        &mut self,
        url: &Url,
        auth: Option<&HeaderValue>,
        buf: &mut Vec<u8>,
    ) -> Result<Head, Error> {
        buf.clear();
        write_request(buf, url, auth);
        self.tcp.write_all(buf).await.map_err(|e| Error::Lost(root_cause(&e)))?;
        buf.clear();
        // Bytes of `buf` known to hold no end of head, and of interim heads already read.
        let (mut searched, mut interim) = (0, 0);
        loop {
            let limit = HEAD_MAX - interim;
            if let Some(end) = head_end(buf, searched, limit) {
                let (len, head) = parse_head(&buf[..end]).map_err(Error::Failed)?;
                buf.drain(..len);
                searched = 0;
                if (100..200).contains(&head.status) && head.status != 101 {
                    interim += len;
                    continue;
                }
                self.reused = true;
                return Ok(head);
            }
            if buf.len() >= limit {
                let e = format!("response head larger than {} KiB", HEAD_MAX >> 10);
                return Err(Error::Failed(ScrapeError::Connect(e)));
            }
            searched = buf.len();
            let nothing_yet = buf.is_empty() && interim == 0;
            buf.reserve(READ_SIZE.min(limit - buf.len()));
            let failed = match self.tcp.read_buf(buf).await {
                Ok(0) => "connection closed before the response".to_owned(),
                Ok(_) => continue,
                Err(e) => root_cause(&e),
            };
            return Err(if nothing_yet {
                Error::Lost(failed)
            } else {
                Error::Failed(ScrapeError::Connect(format!("{failed} (in the response head)")))
            });
        }
    }

    /// Reads the body of the response `head` into `body`, which holds what came after the
    /// head: decoded when gzip, at most `max_bytes` after decoding.
    pub(super) async fn read_body(
        &mut self,
        head: Head,
        max_bytes: usize,
        body: &mut Vec<u8>,
    ) -> Result<(), ScrapeError> {
        self.keep = false; // until the body ended where its framing said
        let framing = if matches!(head.status, 204 | 304) {
            Framing::Length(0)
        } else if head.chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let mut body_framing = Unframe { framing, data_end: 0, trailers: 0 };
        let until_close = matches!(framing, Framing::UntilClose);
        let extra = if head.gzip {
            // The compressed bytes pass through a buffer of their own; the decoded ones go to
            // `body`, with its room from earlier scrapes.
            let mut raw = Vec::with_capacity(READ_SIZE.max(body.len()));
            raw.extend_from_slice(body);
            body.clear();
            let mut decoder = flate2::write::GzDecoder::new(Capped { out: std::mem::take(body), max_bytes });
            loop {
                let ended = body_framing.advance(&mut raw)?;
                decoder.write_all(&raw[..body_framing.data_end]).map_err(|e| decode_error(&e, max_bytes))?;
                raw.drain(..body_framing.data_end);
                body_framing.data_end = 0;
                if ended {
                    break;
                }
                if fill(&mut self.tcp, &mut raw, body_framing.want()).await? {
                    body_framing.at_eof()?;
                    break;
                }
            }
            *body = decoder.finish().map_err(|e| decode_error(&e, max_bytes))?.out;
            !raw.is_empty()
        } else {
            if let Framing::Length(n) = framing {
                if n > max_bytes as u64 {
                    return Err(ScrapeError::BodyTooLarge(max_bytes));
                }
                // Sized once from the announced length, at most 1 MiB up front (a target that
                // announces much and sends nothing must not make every scrape reserve the cap).
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                body.reserve(n.saturating_sub(body.len()).min(PREALLOC_MAX));
            }
            loop {
                let ended = body_framing.advance(body)?;
                if body_framing.data_end > max_bytes {
                    return Err(ScrapeError::BodyTooLarge(max_bytes));
                }
                if ended {
                    break;
                }
                if fill(&mut self.tcp, body, body_framing.want()).await? {
                    body_framing.at_eof()?;
                    break;
                }
            }
            let extra = body.len() > body_framing.data_end;
            body.truncate(body_framing.data_end);
            extra
        };
        self.keep = !head.close && !until_close && !extra;
        Ok(())
    }
}

/// Reads more of the socket into `buf`, with room for `want` bytes made first. True at the end
/// of the stream.
async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> Result<bool, ScrapeError> {
    buf.reserve(want);
    match tcp.read_buf(buf).await {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(ScrapeError::Body(root_cause(&e))),
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Neither: the body ends when the target closes the connection.
    UntilClose,
}

/// Where a chunked body's reading is.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: the bytes left of it.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last (empty) chunk, in the trailer section.
    Trailers,
    Done,
}

/// Undoes the framing in place: `buf[..data_end]` is body, the bytes after it are as read from
/// the socket and not used yet.
struct Unframe {
    framing: Framing,
    data_end: usize,
    /// Trailer bytes read so far.
    trailers: usize,
}

impl Unframe {
    /// Turns the unused bytes of `buf` into body as far as they go. True when the body ended;
    /// what follows it then stays after `data_end`.
    fn advance(&mut self, buf: &mut Vec<u8>) -> Result<bool, ScrapeError> {
        let state = match &mut self.framing {
            Framing::Length(left) => {
                let k = (buf.len() - self.data_end).min(usize::try_from(*left).unwrap_or(usize::MAX));
                self.data_end += k;
                *left -= k as u64;
                return Ok(*left == 0);
            }
            Framing::UntilClose => {
                self.data_end = buf.len();
                return Ok(false);
            }
            Framing::Chunked(state) => state,
        };
        let mut at = self.data_end; // the first byte not used yet
        let ended = loop {
            let raw = &buf[at..];
            match *state {
                Chunk::Size => match httparse::parse_chunk_size(raw) {
                    Ok(httparse::Status::Complete((n, 0))) => (at, *state) = (at + n, Chunk::Trailers),
                    Ok(httparse::Status::Complete((n, size))) => (at, *state) = (at + n, Chunk::Data(size)),
                    Ok(httparse::Status::Partial) if raw.len() > CHUNK_LINE_MAX => {
                        let e = format!("chunk-size line longer than {} KiB", CHUNK_LINE_MAX >> 10);
                        return Err(ScrapeError::Body(e));
                    }
                    Ok(httparse::Status::Partial) => break false,
                    Err(_) => return Err(ScrapeError::Body("invalid chunk-size line".to_owned())),
                },
                Chunk::Data(_) if raw.is_empty() => break false,
                Chunk::Data(left) => {
                    let k = raw.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    buf.copy_within(at..at + k, self.data_end);
                    (at, self.data_end) = (at + k, self.data_end + k);
                    *state = if left == k as u64 { Chunk::DataEnd } else { Chunk::Data(left - k as u64) };
                }
                Chunk::DataEnd => match raw {
                    [b'\r', b'\n', ..] => (at, *state) = (at + 2, Chunk::Size),
                    [] | [b'\r'] => break false,
                    _ => return Err(ScrapeError::Body("chunk data not followed by CRLF".to_owned())),
                },
                Chunk::Trailers => {
                    let line = memchr::memchr(b'\n', raw);
                    if self.trailers + line.unwrap_or(raw.len()) > TRAILERS_MAX {
                        let e = format!("trailer section larger than {} KiB", TRAILERS_MAX >> 10);
                        return Err(ScrapeError::Body(e));
                    }
                    let Some(i) = line else { break false };
                    let empty = matches!(raw[..i], [] | [b'\r']);
                    (at, self.trailers) = (at + i + 1, self.trailers + i + 1);
                    if empty {
                        *state = Chunk::Done;
                    }
                }
                Chunk::Done => break true,
            }
        };
        // The bytes not used yet move down behind the body.
        let unused = buf.len() - at;
        buf.copy_within(at.., self.data_end);
        buf.truncate(self.data_end + unused);
        Ok(ended)
    }

    /// Room worth making before the next read: no more than a length says is left.
    fn want(&self) -> usize {
        match self.framing {
            Framing::Length(left) => usize::try_from(left).unwrap_or(usize::MAX).min(READ_SIZE),
            Framing::Chunked(_) | Framing::UntilClose => READ_SIZE,
        }
    }

    /// The end of the stream came: the body's end only when nothing else marks it.
    fn at_eof(&self) -> Result<(), ScrapeError> {
        match self.framing {
            Framing::UntilClose => Ok(()),
            _ => Err(body_cut()),
        }
    }
}

/// Writes the request for `url` into `out`: path and query, the origin as `Host`, what is
/// accepted, and the URL's credentials when it has some.
fn write_request(out: &mut Vec<u8>, url: &Url, auth: Option<&HeaderValue>) {
    let target = &url[Position::BeforePath..Position::AfterQuery];
    let target = if target.is_empty() { "/" } else { target };
    let host = &url[Position::BeforeHost..Position::AfterPort];
    for part in ["GET ", target, " HTTP/1.1\r\nHost: ", host, "\r\nUser-Agent: ", USER_AGENT, "\r\nAccept: ", ACCEPT] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b"\r\nAccept-Encoding: gzip\r\n");
    if let Some(auth) = auth {
        out.extend_from_slice(b"Authorization: ");
        out.extend_from_slice(auth.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Where the head in `buf` ends (after its empty line), looking at new bytes only (from
/// `searched`) and within the first `limit`.
fn head_end(buf: &[u8], searched: usize, limit: usize) -> Option<usize> {
    let window = &buf[..buf.len().min(limit)];
    let from = searched.saturating_sub(2);
    memchr::memchr_iter(b'\n', window.get(from..)?).map(|i| from + i + 1).find_map(|after| match window.get(after..) {
        Some([b'\n', ..]) => Some(after + 1),
        Some([b'\r', b'\n', ..]) => Some(after + 2),
        _ => None,
    })
}

/// Parses a complete head: its length and what a scrape needs of it.
fn parse_head(bytes: &[u8]) -> Result<(usize, Head), ScrapeError> {
    let malformed = |why: &str| ScrapeError::Connect(format!("malformed response head: {why}"));
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete")),
        Err(e) => return Err(malformed(&e.to_string())),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(malformed("no status line"));
    };
    let mut head =
        Head { status, content_length: None, chunked: false, gzip: false, location: None, close: version == 0 };
    let mut codings = 0;
    for header in response.headers.iter() {
        let (name, value) = (header.name, header.value.trim_ascii());
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(|&b| b == b',') {
                let n = decimal(part.trim_ascii()).ok_or_else(|| malformed("invalid Content-Length"))?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(malformed("conflicting Content-Length values"));
                }
                head.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
                codings += 1;
                head.chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.gzip = value.eq_ignore_ascii_case(b"gzip");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close |= value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("location") && (300..400).contains(&status) {
            head.location = std::str::from_utf8(value).ok().map(str::to_owned);
        }
    }
    if codings > 0 {
        // Only chunked is undone; anything else is not what a scrape asked for.
        if codings > 1 || !head.chunked {
            return Err(malformed("unsupported Transfer-Encoding"));
        }
        head.close |= head.content_length.take().is_some();
    }
    Ok((len, head))
}

/// A `Content-Length` value: digits only (no sign, no space).
fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
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

/// The redirect's target when it stays within the origin of `url` (scheme, host and port).
pub(super) fn same_origin_location(url: &Url, head: &Head) -> Option<Url> {
    let next = url.join(head.location.as_deref()?).ok()?;
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

    #[tokio::test]
    async fn a_connection_the_target_closed_is_seen_before_a_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/metrics", listener.local_addr().unwrap())).unwrap();
        let open = Conn::open(&url).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let open = open.if_open().expect("open while the target holds it");
        drop(socket);
        // The close reaches the client's socket after a moment: wait for it, with a deadline.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut kept = Some(open);
        while let Some(c) = kept.take() {
            assert!(tokio::time::Instant::now() < deadline, "the close was never seen");
            kept = c.if_open();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

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
