//! Socket vocabulary shared by every listener: `TCP_NODELAY` on accepted connections, a stalled
//! client's connection closed by the kernel on the dashboard's listener, and the URL at which a
//! local listener's `/metrics` is scraped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A listener whose accepted connections send small writes at once (`TCP_NODELAY`).
///
/// Streamed answers (SSE from the proxy, live events from the dashboard) are many small writes;
/// with Nagle's algorithm on, each one after the first waits for the client's ACK, which a
/// benchmark measured as +35 ms per streamed answer through the proxy.
pub fn no_delay(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(set_nodelay as fn(&mut tokio::net::TcpStream))
}

fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "Cannot set TCP_NODELAY on an accepted connection.");
    }
}

/// The dashboard's listener: [`no_delay`], and a connection whose client takes no byte for
/// `stalled` while data waits for it is closed by the kernel (`TCP_USER_TIMEOUT`).
///
/// A live client that stops reading (a frozen tab, a suspended laptop, a stuck script) cannot
/// be cut by the hub: the server only notices lag when it writes, and it can always write,
/// because the kernel grows the connection's send buffer (to 4 MiB by default) long before
/// the write would block. `benches/sse_fanout.rs` measured 100 such clients holding 75 MiB of
/// kernel memory after 10 minutes, still growing, and every one of them still connected. With a
/// user timeout the kernel gives up on a connection once its data has waited `stalled` for the
/// client's receive window to open (or for an ACK): the next write fails, the connection and
/// its subscription end, and a real browser's TCP keep-alive then finds the connection gone and
/// its EventSource reconnects and resumes with `Last-Event-ID`. A client that reads, however
/// slowly, keeps its connection: only time without any progress counts.
pub fn dashboard(
    listener: TcpListener,
    stalled: Duration,
) -> axum::serve::TapIo<TcpListener, impl FnMut(&mut TcpStream) + Send + 'static> {
    use axum::serve::ListenerExt;
    let ms = u32::try_from(stalled.as_millis()).unwrap_or(u32::MAX);
    listener.tap_io(move |tcp: &mut TcpStream| {
        set_nodelay(tcp);
        if let Err(e) = set_user_timeout(tcp, ms) {
            tracing::debug!(error = %e, "Cannot set TCP_USER_TIMEOUT on an accepted connection.");
        }
    })
}

/// `TCP_USER_TIMEOUT` in milliseconds (0 leaves the system's default).
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
pub fn local_metrics_url(addr: SocketAddr) -> anyhow::Result<url::Url> {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(url::Url::parse(&format!("http://{host}:{}/metrics", addr.port()))?)
}
