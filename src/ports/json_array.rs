//! A JSON array handed over as its items' serialized pieces, never joined into one `String`.
//!
//! `/api/metrics?range=1h` answers 1,440 points, about 2 MB of JSON, most of it pieces the
//! store's point cache already holds. Joined, the answer was one 2 MB allocation per request,
//! and the process fixes glibc's mmap threshold at 128 KiB (`heap::limit_arenas`), so such an
//! allocation is a fresh mapping faulted in page by page (about 420 pages) on every request,
//! warm ones too. Copied into 64 KiB frames instead, the frames churned the heap's top (glibc
//! returns a free top over 128 KiB at once), about 300 pages a request. So the response is the
//! pieces themselves, each a frame sharing the cached item's memory, with static separators
//! between them: nothing of the answer's size is allocated (BENCHMARKS.md, "First request,
//! eighth stop").

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

/// The array `[item,item,...]` of already serialized items, byte for byte what
/// `serde_json::to_string` gives for the sequence the items were serialized from (compact JSON
/// joins a sequence's elements with `,` between `[` and `]`).
#[derive(Debug, Clone, Default)]
pub struct JsonArray {
    items: Vec<Arc<str>>,
    len: usize,
}

impl JsonArray {
    /// The array of `items`, each one value's JSON.
    pub fn from_items(items: Vec<Arc<str>>) -> Self {
        let len = 2 + items.iter().map(|i| i.len()).sum::<usize>() + items.len().saturating_sub(1);
        Self { items, len }
    }

    /// Serializes each of `values` on its own.
    pub fn serialize<T: Serialize>(values: &[T]) -> Result<Self, serde_json::Error> {
        let items = values.iter().map(|v| serde_json::to_string(v).map(Arc::from)).collect::<Result<_, _>>()?;
        Ok(Self::from_items(items))
    }

    /// Length of the whole array in bytes (the response's `Content-Length`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no items (`[]`, two bytes, is still its JSON).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The array joined into one `String`, for tests and callers that need it whole.
    pub fn joined(&self) -> String {
        let mut out = String::with_capacity(self.len);
        out.push('[');
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(item);
        }
        out.push(']');
        out
    }

    /// The array's bytes in order: `[`, each item (sharing its memory, not copied) with a `,`
    /// between two, `]`. Their concatenation is [`JsonArray::joined`].
    pub fn frames(self) -> Frames {
        Frames { remaining: self.len, array: self, next: 0, state: Next::Open }
    }
}

/// What [`Frames`] hands out next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Open,
    Item,
    Comma,
    Done,
}

/// Iterator of [`JsonArray::frames`].
#[derive(Debug)]
pub struct Frames {
    array: JsonArray,
    /// Index of the next item.
    next: usize,
    state: Next,
    /// Bytes not yet handed out.
    remaining: usize,
}

impl Frames {
    /// Bytes not yet handed out (0 once the closing `]` was).
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

/// An item as the owner of a frame's memory.
struct Piece(Arc<str>);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let item = self.array.items.get(self.next);
        let (frame, state) = match (self.state, item) {
            (Next::Done, _) => return None,
            (Next::Open, Some(_)) => (Bytes::from_static(b"["), Next::Item),
            (Next::Comma, Some(_)) => (Bytes::from_static(b","), Next::Item),
            (Next::Item, Some(item)) => {
                self.next += 1;
                (Bytes::from_owner(Piece(item.clone())), Next::Comma)
            }
            (Next::Open, None) => (Bytes::from_static(b"[]"), Next::Done),
            (_, None) => (Bytes::from_static(b"]"), Next::Done),
        };
        self.state = state;
        self.remaining -= frame.len();
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(sizes: &[usize]) -> Vec<Arc<str>> {
        sizes.iter().enumerate().map(|(i, &n)| Arc::from(format!("\"{}\"", "x".repeat(n) + &i.to_string()))).collect()
    }

    /// Whatever the items (none, one, empty strings, many), the frames joined are the array as
    /// `serde_json` writes it, the lengths agree at every step, and every item's frame is the
    /// item's own memory (nothing of the answer's size is copied).
    #[test]
    fn frames_are_the_serialized_array_in_its_items_own_memory() {
        let cases: Vec<Vec<usize>> = vec![vec![], vec![0], vec![10, 20, 30], vec![1400; 1440], vec![100_000, 3]];
        for sizes in cases {
            let items = items(&sizes);
            let plain: Vec<String> = items.iter().map(|i| serde_json::from_str(i).unwrap()).collect();
            let expected = serde_json::to_string(&plain).unwrap();
            let array = JsonArray::from_items(items.clone());
            assert_eq!(array.joined(), expected);
            assert_eq!(array.len(), expected.len());
            let mut frames = array.frames();
            let mut got = Vec::new();
            let mut shared = 0;
            assert_eq!(frames.remaining(), expected.len());
            while let Some(f) = frames.next() {
                shared += usize::from(items.iter().any(|i| i.as_ptr() == f.as_ptr() && i.len() == f.len()));
                got.extend_from_slice(&f);
                assert_eq!(frames.remaining(), expected.len() - got.len());
            }
            assert_eq!(String::from_utf8(got).unwrap(), expected, "sizes {sizes:?}");
            assert_eq!(shared, items.len(), "frames that are an item's own memory, sizes {sizes:?}");
        }
    }

    #[test]
    fn serialize_is_serde_json_of_the_slice() {
        let values = vec![serde_json::json!({"a": 1, "b": [1, 2]}), serde_json::json!(null), serde_json::json!("x")];
        let array = JsonArray::serialize(&values).unwrap();
        assert_eq!(array.joined(), serde_json::to_string(&values).unwrap());
        assert_eq!(JsonArray::serialize::<u8>(&[]).unwrap().joined(), "[]");
    }
}
