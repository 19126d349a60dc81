//! The exposition format's lexical pieces, shared by the line parser (`parse`) and the label
//! set parser (`labels`): which bytes separate tokens, which make names, and how a bad token
//! is quoted in an error. Kept apart so the two parsers depend on it, not on each other.

/// Separators inside a line: the format allows spaces and tabs.
pub(super) const BLANKS_BYTES: [u8; 2] = [b' ', b'\t'];

/// Longest text quoted verbatim in an error reason; garbage lines can be huge.
const MAX_QUOTED_CHARS: usize = 40;

/// `s` without the blanks it starts with.
pub(super) fn trim_blanks(s: &str) -> &str {
    let skip = s.as_bytes().iter().take_while(|c| BLANKS_BYTES.contains(c)).count();
    &s[skip..]
}

/// Bit of [`IDENT`]: may start a label name.
const LABEL_START: u8 = 1;
/// Bit of [`IDENT`]: may continue a label name.
const LABEL_REST: u8 = 2;
/// Bit of [`IDENT`]: may start a metric name.
const METRIC_START: u8 = 4;
/// Bit of [`IDENT`]: may continue a metric name.
const METRIC_REST: u8 = 8;

/// Which bytes names are made of, by byte: one table lookup per byte instead of a chain of
/// comparisons (names are most of an exposition's bytes).
const IDENT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let letter = b.is_ascii_alphabetic() || b == b'_';
        if letter {
            t[c] = LABEL_START | LABEL_REST | METRIC_START | METRIC_REST;
        } else if b.is_ascii_digit() {
            t[c] = LABEL_REST | METRIC_REST;
        } else if b == b':' {
            t[c] = METRIC_START | METRIC_REST;
        }
        c += 1;
    }
    t
};

/// Length of the identifier at the start of `b`: `[a-zA-Z_:][a-zA-Z0-9_:]*`
/// for metric names, the same without `:` for label names.
pub(super) fn ident_len(b: &[u8], allow_colon: bool) -> usize {
    let (start, rest) = if allow_colon { (METRIC_START, METRIC_REST) } else { (LABEL_START, LABEL_REST) };
    match b.first() {
        Some(&c) if IDENT[usize::from(c)] & start != 0 => {
            1 + b[1..].iter().take_while(|&&c| IDENT[usize::from(c)] & rest != 0).count()
        }
        _ => 0,
    }
}

/// Debug-quotes `s` for an error reason, truncated to a readable length.
pub(super) fn quoted(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{:?}...", &s[..end]),
        None => format!("{s:?}"),
    }
}
