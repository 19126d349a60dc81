//! OS signals to a cancellation token: the first SIGTERM or SIGINT starts a graceful shutdown,
//! a second one exits at once.
//!
//! The handlers are installed by [`watch_signals`] itself, before it returns the future that
//! waits: a spawned task installs nothing until it first runs, and a SIGTERM that arrived in
//! between (an orchestrator stopping a pod right after `listening on` was printed) took the
//! default action and killed the process without a graceful shutdown.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Installs the signal handlers now, and returns the future that cancels `token` on the first
/// signal and exits the process with status 130 on the second. Needs a tokio runtime.
pub(crate) fn watch_signals(token: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
    let mut signals = Signals::install();
    async move {
        signals.recv().await;
        tracing::info!("Signal received; shutting down gracefully (send another to exit at once).");
        token.cancel();
        signals.recv().await;
        tracing::warn!("Second signal received; exiting immediately.");
        std::process::exit(130);
    }
}

/// SIGTERM and SIGINT streams, registered when built.
#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind| match signal(kind) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(%error, "Cannot install a signal handler; that signal will not shut down gracefully.");
                None
            }
        };
        Self { term: install(SignalKind::terminate()), int: install(SignalKind::interrupt()) }
    }

    async fn recv(&mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => {}
            _ = next(&mut self.int) => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }

    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
