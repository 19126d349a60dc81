//! `zai-dash healthcheck`: asks the server on this machine whether it is alive.
//!
//! Container images run it as their `HEALTHCHECK`, so the runtime image needs no curl or wget.
//! It reads the same `LISTEN_ADDR` as the server; an all-interfaces address (`:8080`,
//! `0.0.0.0`, `::`) is probed on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{HealthcheckArgs, parse_duration, parse_listen_addr};

/// Why the health check failed; the message is printed as one line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthcheckError {
    /// A flag did not parse.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The request did not complete (refused, timed out).
    #[error("GET {url} failed: {source}")]
    Request {
        /// The probed URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server answered, but not 200.
    #[error("GET {url} answered {status}")]
    Status {
        /// The probed URL.
        url: String,
        /// The status received.
        status: reqwest::StatusCode,
    },
}

/// The address to probe for a server listening on `listen`.
pub(crate) fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, listen.port())
}

/// Runs the check once: `Ok` when `/healthz` answered 200 within the timeout.
pub(crate) async fn run(args: &HealthcheckArgs) -> Result<(), HealthcheckError> {
    let listen = parse_listen_addr("LISTEN_ADDR", &args.listen_addr)?;
    let timeout: Duration = parse_duration("--timeout", &args.timeout)?;
    let url = format!("http://{}/healthz", probe_addr(listen));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|source| HealthcheckError::Request { url: url.clone(), source })?;
    let resp =
        client.get(&url).send().await.map_err(|source| HealthcheckError::Request { url: url.clone(), source })?;
    if resp.status() == reqwest::StatusCode::OK {
        Ok(())
    } else {
        Err(HealthcheckError::Status { url, status: resp.status() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_interfaces_are_probed_on_loopback() {
        let p = |s: &str| probe_addr(s.parse().unwrap()).to_string();
        assert_eq!(p("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(p("[::]:9"), "[::1]:9");
        assert_eq!(p("10.1.2.3:80"), "10.1.2.3:80");
    }
}
