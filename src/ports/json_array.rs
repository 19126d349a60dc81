//! A JSON array handed over as its items' serialized pieces, never joined into one `String`.
//!
//! `/api/metrics?range=1h` answers 1,440 points, about 2 MB of JSON, most of it pieces the
//! store's point cache already holds. Joined, the answer was one 2 MB allocation per request,
//! and the process fixes glibc's mmap threshold at 128 KiB (`heap::limit_arenas`), so such an
//! allocation is a fresh mapping faulted in page by page (about 420 pages) on every request,
//! warm ones too. Copied into 64 KiB frames instead, the frames churned the heap's top (glibc
//! returns a free top over 128 KiB at once), about 300 pages a request. So the response is the
//! pieces themselves, sharing the cached items' memory, with static separators between them:
//! nothing of the answer's size is allocated (BENCHMARKS.md, "First request, eighth stop").
//!
//! Items are written one after the other, `,` between them, into shared buffers of up to
//! [`CHUNK_BYTES`] ([`PieceWriter`]): an hour's 1,440 points are ~32 allocations rather than
//! 1,440 (each taken under the process's one arena lock, `heap`), and consecutive items of
//! one buffer go out as one frame, separators included: ~65 frames for that hour rather than
//! ~2,900, each a write hyper queues (BENCHMARKS.md, "First request, ninth stop").

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

/// Bytes of one shared buffer at most, unless one item is larger: well below the 128 KiB at
/// which glibc maps an allocation of its own (`heap::limit_arenas`), so a buffer comes from the
/// heap, and large enough that an hour's answer is a few dozen of them.
pub const CHUNK_BYTES: usize = 64 << 10;

/// One item's JSON: bytes `start..end` of a buffer it may share with the items written before
/// and after it (`,` between two). Cloning it shares the buffer.
#[derive(Debug, Clone)]
pub struct Piece {
    buf: Arc<Vec<u8>>,
    start: u32,
    end: u32,
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    /// The item's JSON.
    pub fn as_str(&self) -> &str {
        // Only `PieceWriter` and `Piece::new` make pieces, from whole serialized values.
        std::str::from_utf8(self.bytes()).unwrap_or_default()
    }

    /// Byte length of the item's JSON.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the item's JSON is empty (never, for a serialized value).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether `next` follows this piece in the same buffer with only a `,` between them.
    fn followed_by(&self, next: &Piece) -> bool {
        Arc::ptr_eq(&self.buf, &next.buf)
            && next.start == self.end + 1
            && self.buf.get(self.end as usize) == Some(&b',')
    }
}

/// Serializes values one after the other into shared buffers, one [`Piece`] each, with `M`
/// (what the caller keeps with a piece, e.g. a point's timestamp) alongside.
#[derive(Debug)]
pub struct PieceWriter<M> {
    /// One value's JSON, reused: how long it is decides whether it fits the buffer.
    scratch: Vec<u8>,
    buf: Vec<u8>,
    /// Metadata, start and end of the items written into `buf`, not yet handed out.
    open: Vec<(M, u32, u32)>,
    /// Items handed out, in segments of at most [`SEGMENT_BYTES`]: collected by doubling, a
    /// day's 2,880 points (40 bytes each) grew to 4,096 slots, 160 KiB, a fresh mapping above
    /// the process's 128 KiB mmap threshold (`heap::limit_arenas`) on every such read; the
    /// segments are joined into one vector of exactly their length at [`PieceWriter::finish`].
    out: Vec<Vec<(M, Piece)>>,
}

/// Bytes of one segment of a [`PieceWriter`]'s output at most: well below the mmap threshold.
const SEGMENT_BYTES: usize = 32 << 10;

impl<M> Default for PieceWriter<M> {
    fn default() -> Self {
        Self { scratch: Vec::with_capacity(2048), buf: Vec::new(), open: Vec::new(), out: Vec::new() }
    }
}

impl<M> PieceWriter<M> {
    /// Serializes `value` as the next item.
    pub fn push<T: Serialize + ?Sized>(&mut self, meta: M, value: &T) -> Result<(), serde_json::Error> {
        self.push_with(meta, |out| serde_json::to_writer(out, value))
    }

    /// The next item as `write` writes its JSON (one value, whole): for a value with a faster
    /// writer of its own than its `Serialize` (`Point::write_json`).
    pub fn push_with(
        &mut self,
        meta: M,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) -> Result<(), serde_json::Error> {
        self.scratch.clear();
        write(&mut self.scratch)?;
        let comma = usize::from(!self.buf.is_empty());
        if self.buf.len() + comma + self.scratch.len() > self.buf.capacity() {
            self.seal();
            self.buf = Vec::with_capacity(CHUNK_BYTES.max(self.scratch.len()));
        }
        if !self.buf.is_empty() {
            self.buf.push(b',');
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.scratch);
        let len = |n: usize| u32::try_from(n).map_err(<serde_json::Error as serde::ser::Error>::custom);
        self.open.push((meta, len(start)?, len(self.buf.len())?));
        Ok(())
    }

    /// Hands out the items of the open buffer, its unused room given back first: pieces live as
    /// long as the cache keeps any point of their buffer, and a dashboard's repeated read of
    /// the newest bucket or two would otherwise keep a whole [`CHUNK_BYTES`] for a few KB, one
    /// per refresh, for as long as the range is cached.
    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        if self.buf.len() < self.buf.capacity() / 2 {
            self.buf.shrink_to_fit();
        }
        let buf = Arc::new(std::mem::take(&mut self.buf));
        let slots = (SEGMENT_BYTES / std::mem::size_of::<(M, Piece)>().max(1)).max(1);
        for (m, start, end) in self.open.drain(..) {
            if self.out.last().is_none_or(|last| last.len() == last.capacity()) {
                self.out.push(Vec::with_capacity(slots));
            }
            if let Some(segment) = self.out.last_mut() {
                segment.push((m, Piece { buf: buf.clone(), start, end }));
            }
        }
    }

    /// Every item written, in order, in a vector of exactly their number.
    pub fn finish(mut self) -> Vec<(M, Piece)> {
        self.seal();
        if self.out.len() == 1 {
            let mut only = self.out.pop().unwrap_or_default();
            only.shrink_to_fit();
            return only;
        }
        let mut all = Vec::with_capacity(self.out.iter().map(Vec::len).sum());
        self.out.into_iter().for_each(|mut segment| all.append(&mut segment));
        all
    }
}

/// The array `[item,item,...]` of already serialized items, byte for byte what
/// `serde_json::to_string` gives for the sequence the items were serialized from (compact JSON
/// joins a sequence's elements with `,` between `[` and `]`).
#[derive(Debug, Clone, Default)]
pub struct JsonArray {
    items: Vec<Piece>,
    len: usize,
}

impl JsonArray {
    /// The array of `items`, each one value's JSON.
    pub fn from_items(items: Vec<Piece>) -> Self {
        let len = 2 + items.iter().map(Piece::len).sum::<usize>() + items.len().saturating_sub(1);
        Self { items, len }
    }

    /// Serializes each of `values` on its own.
    pub fn serialize<T: Serialize>(values: &[T]) -> Result<Self, serde_json::Error> {
        let mut w = PieceWriter::default();
        values.iter().try_for_each(|v| w.push((), v))?;
        Ok(Self::from_items(w.finish().into_iter().map(|((), p)| p).collect()))
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
            out.push_str(item.as_str());
        }
        out.push(']');
        out
    }

    /// The array's bytes in order: `[`, the items (sharing their buffers' memory, not copied;
    /// a run of items that follow each other in one buffer as one frame, their commas
    /// included) with a `,` between two runs, `]`. Their concatenation is [`JsonArray::joined`].
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

    /// The run of items from `self.next` on that follow each other in one buffer, as one frame.
    fn run(&mut self) -> Bytes {
        let items = &self.array.items;
        let first = &items[self.next];
        let mut last = self.next;
        while items.get(last + 1).is_some_and(|n| items[last].followed_by(n)) {
            last += 1;
        }
        let (start, end) = (first.start as usize, items[last].end as usize);
        self.next = last + 1;
        Bytes::from_owner(Run { buf: first.buf.clone(), start, end })
    }
}

/// Bytes `start..end` of a shared buffer as the owner of a frame's memory.
struct Run {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Run {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let more = self.next < self.array.items.len();
        let (frame, state) = match (self.state, more) {
            (Next::Done, _) => return None,
            (Next::Open, true) => (Bytes::from_static(b"["), Next::Item),
            (Next::Comma, true) => (Bytes::from_static(b","), Next::Item),
            (Next::Item, true) => (self.run(), Next::Comma),
            (Next::Open, false) => (Bytes::from_static(b"[]"), Next::Done),
            (_, false) => (Bytes::from_static(b"]"), Next::Done),
        };
        self.state = state;
        self.remaining -= frame.len();
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(sizes: &[usize]) -> Vec<String> {
        sizes.iter().enumerate().map(|(i, &n)| "x".repeat(n) + &i.to_string()).collect()
    }

    /// However many items, the writer hands them out in a vector of exactly their number, never
    /// grown past it by doubling (a day's points: 160 KiB instead of 115, a fresh mapping per
    /// read), and in order across its segments.
    #[test]
    fn items_come_out_in_order_in_a_vector_of_their_number() {
        for n in [0, 1, 5, 1_365, 1_366, 2_880, 5_000] {
            let mut w = PieceWriter::default();
            (0..n).for_each(|i| w.push(i, &i).unwrap());
            let out = w.finish();
            assert_eq!(out.capacity(), n, "{n} items");
            assert!(out.iter().enumerate().all(|(i, (m, p))| *m == i && p.as_str() == i.to_string()), "{n} items");
        }
    }

    fn pieces(values: &[String]) -> Vec<Piece> {
        let mut w = PieceWriter::default();
        values.iter().for_each(|v| w.push((), v).unwrap());
        w.finish().into_iter().map(|((), p)| p).collect()
    }

    /// The frames in order, checking the lengths at every step; how many frames held items.
    fn drain(array: JsonArray) -> (String, usize) {
        let len = array.len();
        let mut frames = array.frames();
        let (mut got, mut runs) = (Vec::new(), 0);
        assert_eq!(frames.remaining(), len);
        while let Some(f) = frames.next() {
            runs += usize::from(!matches!(&f[..], b"[" | b"," | b"]" | b"[]"));
            got.extend_from_slice(&f);
            assert_eq!(frames.remaining(), len - got.len());
        }
        (String::from_utf8(got).unwrap(), runs)
    }

    /// Whatever the items (none, one, empty strings, many, one larger than a buffer), the
    /// frames joined are the array as `serde_json` writes it, the lengths agree at every step,
    /// and items written one after the other go out as one frame per buffer, not one each (an
    /// hour's 1,440 points were ~2,900 frames).
    #[test]
    fn a_few_items_keep_a_buffer_of_their_size_not_a_whole_chunk() {
        let mut w = PieceWriter::default();
        for v in values(&[300, 200]) {
            w.push((), &v).unwrap();
        }
        let pieces = w.finish();
        let kept = pieces[0].1.buf.capacity();
        assert!(kept < 1024, "a buffer of {kept} bytes kept for two items of about 500");
        // A full buffer is kept whole: nothing to give back.
        let mut w = PieceWriter::default();
        for v in values(&vec![1000; 200]) {
            w.push((), &v).unwrap();
        }
        let pieces = w.finish();
        assert!(pieces[0].1.buf.len() * 2 > pieces[0].1.buf.capacity());
    }

    #[test]
    fn frames_are_the_serialized_array_one_per_buffer() {
        let cases: Vec<Vec<usize>> =
            vec![vec![], vec![0], vec![10, 20, 30], vec![1400; 1440], vec![100_000, 3], vec![3, 100_000, 3]];
        for sizes in cases {
            let values = values(&sizes);
            let expected = serde_json::to_string(&values).unwrap();
            let items = pieces(&values);
            let buffers = items.iter().map(|p| Arc::as_ptr(&p.buf)).collect::<std::collections::HashSet<_>>().len();
            let array = JsonArray::from_items(items);
            assert_eq!(array.joined(), expected);
            assert_eq!(array.len(), expected.len());
            let (got, runs) = drain(array);
            assert_eq!(got, expected, "sizes {sizes:?}");
            assert_eq!(runs, buffers, "frames holding items, sizes {sizes:?}");
            assert!(buffers <= 2 + expected.len() / (CHUNK_BYTES / 2), "{buffers} buffers, sizes {sizes:?}");
        }
    }

    /// A selection of the items (one variant's points of a cached window) is still the array
    /// of exactly those items: items that do not follow each other in their buffer are never
    /// joined into one frame with what lay between them.
    #[test]
    fn a_selection_of_pieces_is_the_array_of_just_those() {
        let values = values(&[50; 300]);
        let items = pieces(&values);
        for keep in [2, 3, 7] {
            let chosen: Vec<usize> = (0..values.len()).filter(|i| i % keep != 1).collect();
            let expected = serde_json::to_string(&chosen.iter().map(|&i| &values[i]).collect::<Vec<_>>()).unwrap();
            let array = JsonArray::from_items(chosen.iter().map(|&i| items[i].clone()).collect());
            assert_eq!(array.len(), expected.len());
            assert_eq!(drain(array).0, expected, "every item but each {keep}th + 1");
        }
    }

    #[test]
    fn serialize_is_serde_json_of_the_slice() {
        let values = vec![serde_json::json!({"a": 1, "b": [1, 2]}), serde_json::json!(null), serde_json::json!("x")];
        let array = JsonArray::serialize(&values).unwrap();
        assert_eq!(array.joined(), serde_json::to_string(&values).unwrap());
        assert_eq!(drain(array).0, serde_json::to_string(&values).unwrap());
        assert_eq!(JsonArray::serialize::<u8>(&[]).unwrap().joined(), "[]");
    }
}
