//! [`Label`]: the key of a row's maps (status codes, models, error types, retry reasons,
//! caller buckets), a string that short values hold inline.
//!
//! Every row a scrape makes, and every row the store decodes, filled its maps with one `String`
//! per key: at 500 targets the biggest share of the process' allocations, and the churn that
//! refaults trimmed heap holes every tick (BENCHMARKS.md, "Memory, ninth stop" and
//! "Allocations, tenth stop"). The keys are short (`200`, `glm-4.7`, `source-07`,
//! `rate_limited`), so up to [`INLINE`] bytes live in the value itself: making, copying and
//! dropping one allocates nothing. A longer one (a long model name) is shared behind an `Arc`,
//! so copies of it (window sums, rollups, held rows) cost a count, not a copy. Nothing is kept
//! process-wide: a hostile target's many distinct values cost what they cost as `String`s and
//! go with the rows that hold them (their number per target is capped where rows are made,
//! `scrape::increase`'s `LABEL_VALUE_CAP`).
//!
//! A label compares, orders and hashes as its text, so maps keyed by it iterate in the order
//! the `String`-keyed maps did (the store's encoding and every sum depend on that order) and
//! are looked up by `&str`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// Longest text held inline: a label is as large as a `String` (24 bytes).
pub const INLINE: usize = 22;

/// A map key of a row: text held inline up to [`INLINE`] bytes, shared beyond.
#[derive(Clone)]
pub struct Label(Repr);

#[derive(Clone)]
enum Repr {
    /// `len` bytes of `bytes` are the text (valid UTF-8: copied from a `&str`).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared(Arc<str>),
}

impl Label {
    /// The label's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // Only ever filled from a `&str` of `len` bytes (`From<&str>`), so this holds.
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Shared(s) => s,
        }
    }

    /// True when the text is held inline (no allocation behind it).
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            // `s.len() <= INLINE`, which fits a `u8`.
            Label(Repr::Inline { len: s.len() as u8, bytes })
        } else {
            Label(Repr::Shared(Arc::from(s)))
        }
    }
}

impl From<&String> for Label {
    fn from(s: &String) -> Self {
        Label::from(s.as_str())
    }
}

impl From<String> for Label {
    fn from(s: String) -> Self {
        Label::from(s.as_str())
    }
}

impl From<&Label> for Label {
    fn from(s: &Label) -> Self {
        s.clone()
    }
}

impl Default for Label {
    fn default() -> Self {
        Label::from("")
    }
}

impl Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Label {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for Label {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Label {
    /// As the text orders (what `Borrow<str>` requires of a map key).
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Label {
    /// As the text hashes (what `Borrow<str>` requires of a map key).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Label {
    /// As the text's: rows print as they did with `String` keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_label_is_as_large_as_a_string() {
        assert_eq!(std::mem::size_of::<Label>(), std::mem::size_of::<String>());
    }

    #[test]
    fn short_labels_are_inline_and_long_ones_shared() {
        for s in ["", "200", "source-07", "glm-4.7", "x".repeat(INLINE).as_str()] {
            let l = Label::from(s);
            assert!(l.is_inline(), "{s}");
            assert_eq!(l.as_str(), s);
        }
        let long = "claude-sonnet-4-5-20250929-extended";
        let l = Label::from(long);
        assert!(!l.is_inline());
        assert_eq!(l, long);
        assert_eq!(l.clone().as_str(), long);
        let multibyte = "modèle-é".repeat(3);
        assert_eq!(Label::from(multibyte.as_str()).as_str(), multibyte);
    }

    #[test]
    fn labels_order_as_their_text() {
        // Inline and shared labels mixed: the map must iterate as a `String`-keyed one.
        let texts = ["500", "200", "a-very-long-model-name-of-many-bytes", "", "2", "a", "é", "source-63"];
        let by_label: Vec<String> = texts
            .iter()
            .map(|t| (Label::from(*t), ()))
            .collect::<BTreeMap<_, _>>()
            .into_keys()
            .map(|l| l.to_string())
            .collect();
        let by_string: Vec<String> =
            texts.iter().map(|t| (t.to_string(), ())).collect::<BTreeMap<_, _>>().into_keys().collect();
        assert_eq!(by_label, by_string);
        let map: BTreeMap<Label, i32> = texts.iter().enumerate().map(|(i, t)| (Label::from(*t), i as i32)).collect();
        assert_eq!(map.get("a-very-long-model-name-of-many-bytes"), Some(&2));
        assert_eq!(map.get("200"), Some(&1));
        assert_eq!(format!("{:?}", Label::from("200")), "\"200\"");
    }
}
