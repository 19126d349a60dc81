//! OS signals to a cancellation token: the first SIGTERM or SIGINT starts a graceful shutdown,
//! a second one exits at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first signal; exits the process with status 130 on the second.
pub async fn watch_signals(token: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("Signal received; shutting down gracefully (send another to exit at once).");
    token.cancel();
    wait_for_signal().await;
    tracing::warn!("Second signal received; exiting immediately.");
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
