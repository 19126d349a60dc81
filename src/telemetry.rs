//! Logging setup: `RUST_LOG`-style filtering (default `zai_dash=info`), text or JSON lines on
//! stderr. Stdout is reserved for the `listening on ...` line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("zai_dash=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// How often one kind of repeated warning is written at most (README, "When things go wrong").
pub(crate) const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A kind of warning that can repeat on every request or tick (a receiver refusing each write,
/// an engine failing each query): the first occurrence is written, then at most one line per
/// [`LOG_EVERY`], carrying how many were left out since the last one. A flood of identical
/// lines buries the one that matters and costs the disk; the counters in `/metrics` keep the
/// full count.
///
/// One `static` per call site, or a field of the task that owns the condition: that task calls
/// [`LogThrottle::reset`] when the condition clears, so the next occurrence is written at once.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    /// Milliseconds (of [`monotonic_ms`]) of the last line written, plus one; 0 before any.
    last_ms: std::sync::atomic::AtomicU64,
    /// Occurrences not written since the last line.
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    /// A throttle that lets the next occurrence through.
    pub(crate) const fn new() -> Self {
        Self { last_ms: std::sync::atomic::AtomicU64::new(0), suppressed: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether this occurrence is written: `Some(n)` with the `n` occurrences left out since
    /// the last line, or `None` (it is counted and left out).
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(monotonic_ms())
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let every = LOG_EVERY.as_millis() as u64;
        let last = self.last_ms.load(Relaxed);
        let due = last == 0 || now_ms.saturating_add(1) >= last.saturating_add(every);
        if due && self.last_ms.compare_exchange(last, now_ms.saturating_add(1), Relaxed, Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }

    /// The condition cleared: returns the occurrences left out since the last line (for the
    /// line saying it cleared) and lets the next occurrence through at once.
    #[cfg(test)]
    pub(crate) fn reset(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.last_ms.store(0, Relaxed);
        self.suppressed.swap(0, Relaxed)
    }
}

/// Milliseconds since the first call (a monotonic clock for log throttling only).
fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(START.get_or_init(std::time::Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Most characters of text from outside (a receiver's or an engine's error body) quoted in a
/// log line, an error or a page.
pub(crate) const EXCERPT_CHARS: usize = 120;

/// A short, printable, one-line excerpt of text another system sent: control characters
/// (newlines, terminal escapes) and Unicode format characters (bidirectional overrides) become
/// spaces, runs of spaces one, and the text is cut to [`EXCERPT_CHARS`] with `...`. A log line
/// or page quoting it cannot be forged, recoloured or flooded by the sender.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    for c in text.chars() {
        let c = if c.is_control() || is_format_char(c) { ' ' } else { c };
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if chars >= EXCERPT_CHARS {
            out.push_str("...");
            return out;
        }
        if space {
            out.push(' ');
            chars += 1;
            space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// Unicode's invisible formatting characters that reorder or hide text (bidirectional
/// embeddings and overrides, isolates, zero-width characters, the byte order mark).
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_written_once_a_minute_with_the_count_left_out() {
        let t = LogThrottle::new();
        assert_eq!(t.admit_at(1_000), Some(0), "the first one is written");
        assert_eq!(t.admit_at(2_000), None);
        assert_eq!(t.admit_at(60_999), None);
        assert_eq!(t.admit_at(61_000), Some(2), "a minute later, with the two left out");
        assert_eq!(t.admit_at(61_001), None);
        assert_eq!(t.reset(), 1, "the condition cleared: one left out since");
        assert_eq!(t.admit_at(61_002), Some(0), "the next occurrence is written at once");
        assert_eq!(LogThrottle::new().admit_at(0), Some(0), "even at the clock's start");
    }

    #[test]
    fn excerpts_are_one_short_printable_line() {
        assert_eq!(excerpt("  out of\norder\r\n\tsample \u{1b}[31mred "), "out of order sample [31mred");
        assert_eq!(excerpt("a\u{202e}b\u{200b}c"), "a b c");
        let long = excerpt(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 3);
        assert!(long.ends_with("..."));
        assert_eq!(excerpt(""), "");
    }
}
