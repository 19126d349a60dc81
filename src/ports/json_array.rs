//! A JSON array handed over as its items' serialized pieces, never joined into one `String`.
//!
//! `/api/metrics?range=1h` answers 1,440 points, about 2 MB of JSON, most of it pieces the
//! store's point cache already holds. Joined, the answer was one 2 MB allocation per request,
//! and the process fixes glibc's mmap threshold at 128 KiB (`heap::limit_arenas`), so every
//! such allocation is a fresh mapping faulted in page by page (about 500 pages) on every
//! request, warm ones too (BENCHMARKS.md, "First request, eighth stop"). Kept as pieces, the
//! response copies them into frames of [`FRAME_BYTES`], each below the threshold and freed as
//! soon as it is written, so the heap reuses the same few.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

/// Bytes a frame of [`JsonArray::frames`] holds at most (unless one item is larger): well below
/// glibc's mmap threshold of 128 KiB, and large enough that a 2 MB answer is 32 writes.
pub const FRAME_BYTES: usize = 64 << 10;

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

    /// The array's bytes in order, in frames of up to [`FRAME_BYTES`] (whole items each, a
    /// comma before its item; an item that with its comma is larger than that is a frame of its
    /// own). Their concatenation is
    /// [`JsonArray::joined`].
    pub fn frames(self) -> Frames {
        Frames { remaining: self.len, array: self, next: 0, opened: false }
    }
}

/// Iterator of [`JsonArray::frames`].
#[derive(Debug)]
pub struct Frames {
    array: JsonArray,
    /// Index of the next item to copy.
    next: usize,
    opened: bool,
    /// Bytes not yet handed out.
    remaining: usize,
}

impl Frames {
    /// Bytes not yet handed out (0 once the closing `]` was).
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let mut frame = BytesMut::with_capacity(FRAME_BYTES.min(self.remaining));
        if !self.opened {
            frame.extend_from_slice(b"[");
            self.opened = true;
        }
        while let Some(item) = self.array.items.get(self.next) {
            let comma = usize::from(self.next > 0);
            if !frame.is_empty() && frame.len() + comma + item.len() > FRAME_BYTES {
                self.remaining -= frame.len();
                return Some(frame.freeze());
            }
            if comma == 1 {
                frame.extend_from_slice(b",");
            }
            frame.extend_from_slice(item.as_bytes());
            self.next += 1;
        }
        frame.extend_from_slice(b"]");
        self.remaining = 0;
        Some(frame.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(sizes: &[usize]) -> Vec<Arc<str>> {
        sizes.iter().enumerate().map(|(i, &n)| Arc::from(format!("\"{}\"", "x".repeat(n) + &i.to_string()))).collect()
    }

    /// Whatever the items' sizes (none, small, exactly filling a frame, larger than one), the
    /// frames joined are the array as `serde_json` writes it, the lengths agree at every step,
    /// and no frame outgrows [`FRAME_BYTES`] unless one item (with its comma) does.
    #[test]
    fn frames_are_the_serialized_array_in_pieces() {
        let cases: Vec<Vec<usize>> = vec![
            vec![],
            vec![0],
            vec![10, 20, 30],
            vec![1400; 1440],
            vec![FRAME_BYTES - 4, 1, FRAME_BYTES - 3, 5],
            vec![3 * FRAME_BYTES, 10, 2 * FRAME_BYTES],
        ];
        for sizes in cases {
            let items = items(&sizes);
            let plain: Vec<String> = items.iter().map(|i| serde_json::from_str(i).unwrap()).collect();
            let oversized = items.iter().any(|i| i.len() + 1 > FRAME_BYTES);
            let expected = serde_json::to_string(&plain).unwrap();
            let array = JsonArray::from_items(items);
            assert_eq!(array.joined(), expected);
            assert_eq!(array.len(), expected.len());
            let mut frames = array.frames();
            let mut got = Vec::new();
            assert_eq!(frames.remaining(), expected.len());
            while let Some(f) = frames.next() {
                assert!(f.len() <= FRAME_BYTES || oversized, "{} bytes", f.len());
                got.extend_from_slice(&f);
                assert_eq!(frames.remaining(), expected.len() - got.len());
            }
            assert_eq!(String::from_utf8(got).unwrap(), expected, "sizes {sizes:?}");
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
