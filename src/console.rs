//! What the commands print on stdout, written with error handling: `println!` panics when the
//! reader has gone away (`zai-dash rules | head` closes the pipe after ten lines), because Rust
//! programs ignore `SIGPIPE` and a write to a closed pipe fails with `EPIPE`.
//!
//! A closed pipe is not a failure of the command: the reader took what it wanted. So
//! [`print`] reports it as [`PrintError::Closed`], on which the commands end quietly with
//! status 0 (README, "When things go wrong"); any other write error is an error like any other.
//! A line that only announces a running server ([`announce`]) never stops it.

use std::io::{ErrorKind, Write};

/// Why stdout did not take the output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrintError {
    /// The reader went away (a closed pipe): the output ends here, quietly.
    #[error("stdout was closed by its reader")]
    Closed,
    /// Any other failure of stdout.
    #[error("cannot write to stdout: {0}")]
    Io(std::io::Error),
}

/// Writes `text` to stdout as it is and flushes it.
pub(crate) fn print(text: &str) -> Result<(), PrintError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| match e.kind() {
        ErrorKind::BrokenPipe => PrintError::Closed,
        _ => PrintError::Io(e),
    })
}

/// Writes one line to stdout.
pub(crate) fn print_line(line: &str) -> Result<(), PrintError> {
    print(&format!("{line}\n"))
}

/// Writes a line announcing a running server (`listening on ...`). A stdout that fails is
/// logged, not fatal: the server is reachable without the line.
pub(crate) fn announce(line: &str) {
    if let Err(e) = print_line(line) {
        tracing::warn!(error = %e, line, "Cannot write to stdout; serving anyway.");
    }
}
