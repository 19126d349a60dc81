//! Compressed chunks of raw rows: one target's rows of one 10-minute window in one blob.
//!
//! A raw row's payload ([`super::codec`]) is about 200-300 bytes, and a target's consecutive
//! payloads are nearly the same bytes: the same labels in the same order, running totals that
//! grew a little, increases that are mostly zero. Stored one SQLite row each, a target-day took
//! about 5 MB. A chunk stores what changed instead, in the manner of time-series engines'
//! chunks (Gorilla, VLDB 2015): timestamps as deltas of deltas (a steady 5 s cadence costs one
//! byte per row), the elapsed time and variant as deltas, and each payload as a difference
//! against the chunk's recent payloads: runs copied from them, and the bytes that changed.
//!
//! The difference is an LZ77-style encoding whose only dictionary is the last [`DEPTH`]
//! distinct payloads of the chunk, newest first ([`History`]): `literal length, literal bytes,
//! match offset, match length`, repeated. A match's offset is counted from where the copy
//! would continue if the bytes in between had been replaced one for one, so a value that
//! changed in place costs about four bytes; a payload equal to the previous one costs one.
//! Older payloads matter because a quiet target alternates: a row with a request's increases
//! (labels, histogram buckets) between idle rows that carry only totals, so a busy row finds
//! the previous busy row's labels and the idle row after it the idle row before. Decoding
//! needs only that history, so a chunk is read row by row in place ([`ChunkRows`]) and a
//! reader of many targets' chunks holds a few payloads per chunk, not the decoded window.
//!
//! The first byte is a format version: 1 for raw rows, 2 for rolled rows, which also carry how
//! long their pod was present in the bucket (a delta, like the elapsed time). Raw chunks are
//! still written as version 1, so the chunks of existing databases and new ones are one
//! format. A corrupt blob is an error, never a panic or an unbounded allocation: every length
//! is checked against the bytes that remain.

use super::codec::CodecError;

/// Format of chunks of raw rows (no presence).
const VERSION: u8 = 1;
/// Format of chunks of rolled rows: each row's presence follows its variant.
const VERSION_PRESENCE: u8 = 2;
/// Shortest copy worth a match (an op costs about three bytes).
const MIN_MATCH: usize = 4;
/// Size of the encoder's table of 4-byte sequences of the history.
const HASH_BITS: u32 = 11;
/// Distinct payloads a difference may copy from.
const DEPTH: usize = 4;
/// A payload longer than this is refused on decode (rows are a few hundred bytes; a row with
/// thousands of client buckets a few tens of kilobytes).
const MAX_PAYLOAD: usize = 16 << 20;

const TRUNCATED: CodecError = CodecError("truncated chunk");

/// One row of a chunk, as decoded: the payload borrows the decoder's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRow<'a> {
    /// Bucket end, ms.
    pub ts: i64,
    /// Variant id.
    pub variant_id: i64,
    /// Time the row's increases cover, ms.
    pub elapsed_ms: i64,
    /// How long the pod was present in a rolled row's bucket, ms (0 in raw rows).
    pub present_ms: i64,
    /// The row's payload, as [`super::codec::encode`] wrote it.
    pub data: &'a [u8],
}

/// Builds one chunk from rows pushed in time order.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    out: Vec<u8>,
    history: History,
    first_ts: i64,
    last_ts: i64,
    last_delta: i64,
    last_elapsed: i64,
    last_variant: i64,
    /// Previous row's presence; `None` for a raw chunk, which stores none.
    last_present: Option<i64>,
    rows: usize,
}

impl ChunkWriter {
    /// A chunk whose rows come after `start_ms` (the start of its window); `presence`: rows
    /// carry one (rolled rows), else it is 0 and not stored (raw rows).
    pub(crate) fn new(start_ms: i64, presence: bool) -> Self {
        let mut out = Vec::with_capacity(1024);
        out.push(if presence { VERSION_PRESENCE } else { VERSION });
        Self {
            out,
            history: History::default(),
            first_ts: start_ms,
            last_ts: start_ms,
            last_delta: 0,
            last_elapsed: 0,
            last_variant: 0,
            last_present: presence.then_some(0),
            rows: 0,
        }
    }

    /// Appends a row; rows come in strictly increasing time order.
    pub(crate) fn push(&mut self, row: ChunkRow<'_>, scratch: &mut Scratch) {
        debug_assert!(self.rows == 0 || row.ts > self.last_ts, "chunk rows out of time order");
        let delta = row.ts.wrapping_sub(self.last_ts);
        put_signed(&mut self.out, delta.wrapping_sub(self.last_delta));
        put_signed(&mut self.out, row.elapsed_ms.wrapping_sub(self.last_elapsed));
        put_signed(&mut self.out, row.variant_id.wrapping_sub(self.last_variant));
        match self.last_present.as_mut() {
            Some(last) => {
                put_signed(&mut self.out, row.present_ms.wrapping_sub(*last));
                *last = row.present_ms;
            }
            None => debug_assert_eq!(row.present_ms, 0, "a raw chunk stores no presence"),
        }
        diff(&self.history, row.data, &mut self.out, scratch);
        (self.last_ts, self.last_delta, self.last_elapsed, self.last_variant) =
            (row.ts, delta, row.elapsed_ms, row.variant_id);
        self.history.push(row.data);
        if self.rows == 0 {
            self.first_ts = row.ts;
        }
        self.rows += 1;
    }

    /// Memory the chunk holds so far (its encoded bytes as allocated), for the allocator's
    /// policy ([`crate::heap::note_transient`]).
    pub(crate) fn held_bytes(&self) -> usize {
        self.out.capacity()
    }

    /// Rows pushed so far.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Time of the oldest row pushed.
    pub(crate) fn first_ts(&self) -> i64 {
        self.first_ts
    }

    /// Time of the newest row pushed.
    pub(crate) fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// The encoded chunk.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// The encoder's working memory, shared by every chunk being written (one table, not one per
/// target).
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Position + 1 in the history of a 4-byte sequence by its hash (0: none).
    table: Vec<u32>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self { table: vec![0; 1 << HASH_BITS] }
    }
}

/// Reads a chunk's rows one at a time, from its whole blob or from pieces of it appended as
/// they are needed ([`ChunkRows::begin`]).
#[derive(Debug)]
pub(crate) struct ChunkRows {
    /// The chunk's bytes from `offset` on that are in memory; the rows before `pos` are read.
    bytes: Vec<u8>,
    pos: usize,
    /// Where `bytes` starts in the chunk.
    offset: usize,
    /// The chunk's length.
    len: usize,
    history: History,
    cur: Vec<u8>,
    ts: i64,
    delta: i64,
    elapsed: i64,
    variant: i64,
    /// Presence of the current row; `None` in a raw chunk (every row's is 0).
    present: Option<i64>,
}

/// What [`ChunkRows::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Decoded the next row.
    Row,
    /// Every row is read.
    End,
    /// The next row does not end in the bytes appended so far: [`ChunkRows::fill`] first.
    More,
}

/// Bytes a chunk read piece by piece appends at a time ([`ChunkRows::fill`]): a few dozen
/// rows of a steady target, a few of a busy one.
pub(crate) const PIECE_BYTES: usize = 2048;

impl ChunkRows {
    /// A reader of the chunk `bytes` of the window starting at `start_ms`.
    pub(crate) fn new(start_ms: i64, bytes: Vec<u8>) -> Result<Self, CodecError> {
        let len = bytes.len();
        Self::begin(start_ms, bytes, len)
    }

    /// A reader of a chunk of `len` bytes of the window starting at `start_ms`, of which
    /// `first` holds the start; the rest is appended by [`ChunkRows::fill`] when
    /// [`ChunkRows::step`] asks for it. A reader of many targets' chunks at once (a sealed
    /// window of 500 targets) holds a piece of each rather than each whole blob (BENCHMARKS.md,
    /// "Memory and first request, fifteenth stop").
    pub(crate) fn begin(start_ms: i64, first: Vec<u8>, len: usize) -> Result<Self, CodecError> {
        let present = match first.first() {
            Some(&VERSION) => None,
            Some(&VERSION_PRESENCE) => Some(0),
            Some(_) => return Err(CodecError("unknown chunk format version")),
            None => return Err(TRUNCATED),
        };
        if first.len() > len {
            return Err(CodecError("chunk piece longer than its chunk"));
        }
        Ok(Self {
            bytes: first,
            pos: 1,
            offset: 0,
            len,
            history: History::default(),
            cur: Vec::new(),
            ts: start_ms,
            delta: 0,
            elapsed: 0,
            variant: 0,
            present,
        })
    }

    /// Decodes the next row into [`Self::current`]; false after the last. For a reader of a
    /// whole chunk ([`ChunkRows::new`]).
    pub(crate) fn advance(&mut self) -> Result<bool, CodecError> {
        match self.step()? {
            Step::Row => Ok(true),
            Step::End => Ok(false),
            Step::More => Err(TRUNCATED),
        }
    }

    /// Decodes the next row into [`Self::current`] if the bytes appended so far hold it. A row
    /// that does not decode while bytes of the chunk are still missing asks for more: a piece
    /// ends anywhere in a row, and a corrupt chunk is reported once every byte is in.
    pub(crate) fn step(&mut self) -> Result<Step, CodecError> {
        if self.offset + self.pos >= self.len {
            return Ok(Step::End);
        }
        let mut r = Reader { bytes: &self.bytes, pos: self.pos };
        let mut next = || -> Result<_, CodecError> {
            let (delta, elapsed, variant) = (r.signed()?, r.signed()?, r.signed()?);
            let present = if self.present.is_some() { r.signed()? } else { 0 };
            patch(&mut r, &self.history, &mut self.cur)?;
            Ok((delta, elapsed, variant, present))
        };
        let (delta, elapsed, variant, present) = match next() {
            Ok(row) => row,
            Err(_) if self.offset + self.bytes.len() < self.len => return Ok(Step::More),
            Err(e) => return Err(e),
        };
        self.pos = r.pos;
        self.delta = self.delta.wrapping_add(delta);
        self.ts = self.ts.wrapping_add(self.delta);
        self.elapsed = self.elapsed.wrapping_add(elapsed);
        self.variant = self.variant.wrapping_add(variant);
        if let Some(p) = self.present.as_mut() {
            *p = p.wrapping_add(present);
        }
        self.history.push(&self.cur);
        Ok(Step::Row)
    }

    /// Appends the next piece of the chunk (up to [`PIECE_BYTES`]), which `read` copies into
    /// the slice it is given from the chunk's offset it is given; the rows already read are
    /// dropped first.
    pub(crate) fn fill<E>(&mut self, read: impl FnOnce(&mut [u8], usize) -> Result<(), E>) -> Result<(), E> {
        self.bytes.drain(..self.pos);
        self.offset += self.pos;
        self.pos = 0;
        let (have, from) = (self.bytes.len(), self.offset + self.bytes.len());
        let n = PIECE_BYTES.min(self.len.saturating_sub(from));
        self.bytes.resize(have + n, 0);
        let read = read(&mut self.bytes[have..], from);
        if read.is_err() {
            self.bytes.truncate(have);
        }
        read
    }

    /// Bytes this reader holds: the piece it reads and its decoder's payloads.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.bytes.capacity() + self.cur.capacity() + self.history.dict.capacity() + self.history.spare.capacity()
    }

    /// The row the last [`Self::advance`] decoded.
    pub(crate) fn current(&self) -> ChunkRow<'_> {
        ChunkRow {
            ts: self.ts,
            variant_id: self.variant,
            elapsed_ms: self.elapsed,
            present_ms: self.present.unwrap_or(0),
            data: &self.cur,
        }
    }
}

/// Every row of a chunk, owned: for the rare paths that rewrite a chunk (a late row landing
/// in a sealed window).
pub(crate) fn decode_all(start_ms: i64, bytes: Vec<u8>) -> Result<Vec<OwnedRow>, CodecError> {
    let mut rows = ChunkRows::new(start_ms, bytes)?;
    let mut out = Vec::new();
    while rows.advance()? {
        let r = rows.current();
        out.push(OwnedRow {
            ts: r.ts,
            variant_id: r.variant_id,
            elapsed_ms: r.elapsed_ms,
            present_ms: r.present_ms,
            data: r.data.to_vec(),
        });
    }
    Ok(out)
}

/// A decoded row that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedRow {
    /// Bucket end, ms.
    pub ts: i64,
    /// Variant id.
    pub variant_id: i64,
    /// Time the row's increases cover, ms.
    pub elapsed_ms: i64,
    /// Presence (rolled rows; 0 in raw rows).
    pub present_ms: i64,
    /// The payload.
    pub data: Vec<u8>,
}

impl OwnedRow {
    /// The row borrowed, as a chunk takes it.
    pub(crate) fn as_row(&self) -> ChunkRow<'_> {
        ChunkRow {
            ts: self.ts,
            variant_id: self.variant_id,
            elapsed_ms: self.elapsed_ms,
            present_ms: self.present_ms,
            data: &self.data,
        }
    }
}

/// The last [`DEPTH`] distinct payloads of a chunk, newest first, laid end to end: what a
/// difference copies from. Writer and reader keep the same history.
#[derive(Debug, Default)]
struct History {
    /// The payloads, newest first.
    dict: Vec<u8>,
    /// Their lengths, newest first.
    lens: std::collections::VecDeque<usize>,
    spare: Vec<u8>,
}

impl History {
    /// The newest payload (empty before the first).
    fn newest(&self) -> &[u8] {
        &self.dict[..self.lens.front().copied().unwrap_or(0)]
    }

    /// Adds a row's payload, unless it repeats the newest.
    fn push(&mut self, payload: &[u8]) {
        if !self.lens.is_empty() && payload == self.newest() {
            return;
        }
        self.lens.push_front(payload.len());
        self.lens.truncate(DEPTH);
        let kept: usize = self.lens.iter().skip(1).sum();
        self.spare.clear();
        self.spare.extend_from_slice(payload);
        self.spare.extend_from_slice(&self.dict[..kept]);
        std::mem::swap(&mut self.dict, &mut self.spare);
    }
}

/// Writes `cur` as a difference against `history` (see the module doc): its length plus one,
/// then the ops; a length of 0 says "the same bytes as the newest payload" (an idle row).
fn diff(history: &History, cur: &[u8], out: &mut Vec<u8>, scratch: &mut Scratch) {
    if !history.lens.is_empty() && cur == history.newest() {
        out.push(0);
        return;
    }
    let dict = &history.dict;
    put_varint(out, cur.len() as u64 + 1);
    index(dict, scratch);
    let (mut i, mut lit_start, mut expected) = (0usize, 0usize, 0usize);
    while i < cur.len() {
        let aligned = expected + (i - lit_start);
        let mut best = (match_len(dict, aligned, cur, i), aligned);
        if let Some(h) = cur.get(i..i + MIN_MATCH).map(hash) {
            let slot = scratch.table[h] as usize;
            if slot > 0 {
                let len = match_len(dict, slot - 1, cur, i);
                if len > best.0 {
                    best = (len, slot - 1);
                }
            }
        }
        if best.0 < MIN_MATCH {
            i += 1;
            continue;
        }
        put_varint(out, (i - lit_start) as u64);
        out.extend_from_slice(&cur[lit_start..i]);
        put_signed(out, best.1 as i64 - aligned as i64);
        put_varint(out, (best.0 - MIN_MATCH) as u64);
        i += best.0;
        expected = best.1 + best.0;
        lit_start = i;
    }
    if lit_start < cur.len() {
        put_varint(out, (cur.len() - lit_start) as u64);
        out.extend_from_slice(&cur[lit_start..]);
    }
}

/// Rebuilds into `cur` a payload that [`diff`] wrote against `history`.
fn patch(r: &mut Reader<'_>, history: &History, cur: &mut Vec<u8>) -> Result<(), CodecError> {
    cur.clear();
    let Some(len) = r.len(MAX_PAYLOAD + 1)?.checked_sub(1) else {
        cur.extend_from_slice(history.newest());
        return Ok(());
    };
    let dict = &history.dict;
    cur.reserve(len.min(r.remaining().saturating_mul(4).max(dict.len())));
    let mut expected = 0usize;
    while cur.len() < len {
        let lit = r.len(len - cur.len())?;
        cur.extend_from_slice(r.take(lit)?);
        expected = expected.saturating_add(lit);
        if cur.len() == len {
            break;
        }
        let from = (expected as i64).checked_add(r.signed()?).ok_or(CodecError("match offset overflow"))?;
        let n = r.len(len - cur.len())?.checked_add(MIN_MATCH).ok_or(CodecError("match length overflow"))?;
        let from = usize::try_from(from).map_err(|_| CodecError("match before the history"))?;
        let src = dict.get(from..from.saturating_add(n)).ok_or(CodecError("match beyond the history"))?;
        if cur.len() + n > len {
            return Err(CodecError("match beyond the payload's length"));
        }
        cur.extend_from_slice(src);
        expected = from + n;
    }
    Ok(())
}

/// Indexes every 4-byte sequence of the history by its hash (the newest payload's win).
fn index(dict: &[u8], scratch: &mut Scratch) {
    scratch.table.fill(0);
    for (i, w) in dict.windows(MIN_MATCH).enumerate().rev() {
        scratch.table[hash(w)] = (i + 1) as u32;
    }
}

fn hash(w: &[u8]) -> usize {
    let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
}

/// Length of the common run of `prev[at..]` and `cur[i..]`.
fn match_len(prev: &[u8], at: usize, cur: &[u8], i: usize) -> usize {
    match prev.get(at..) {
        Some(p) => p.iter().zip(&cur[i..]).take_while(|(a, b)| a == b).count(),
        None => 0,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos).ok_or(TRUNCATED)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn signed(&mut self) -> Result<i64, CodecError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A length of at most `max`.
    fn len(&mut self, max: usize) -> Result<usize, CodecError> {
        usize::try_from(self.varint()?).ok().filter(|&n| n <= max).ok_or(CodecError("length out of range"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let s = self.bytes.get(self.pos..self.pos.saturating_add(n)).ok_or(TRUNCATED)?;
        self.pos += n;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A chunk of `rows`, with their presences when any row has one (rolled rows).
    fn encode_rows(start: i64, rows: &[OwnedRow]) -> Vec<u8> {
        let mut w = ChunkWriter::new(start, rows.iter().any(|r| r.present_ms != 0));
        let mut scratch = Scratch::default();
        for r in rows {
            w.push(r.as_row(), &mut scratch);
        }
        assert_eq!(w.rows(), rows.len());
        w.finish()
    }

    /// Payloads that evolve like a target's: mostly the same, a few bytes changed in place,
    /// sometimes a byte inserted or removed, sometimes a wholly different payload.
    fn evolving_rows(rng: &mut Rng, n: usize) -> Vec<OwnedRow> {
        let mut data: Vec<u8> = (0..200).map(|_| rng.below(256) as u8).collect();
        let mut ts = 600_000;
        (0..n)
            .map(|_| {
                match rng.below(10) {
                    0 => data = (0..rng.below(400)).map(|_| rng.below(256) as u8).collect(),
                    1 if !data.is_empty() => {
                        let at = rng.below(data.len() as u64) as usize;
                        data.remove(at);
                    }
                    2 => {
                        let at = rng.below(data.len() as u64 + 1) as usize;
                        data.insert(at, rng.below(256) as u8);
                    }
                    _ => {
                        for _ in 0..rng.below(4) {
                            let at = rng.below(data.len() as u64 + 1) as usize;
                            if let Some(b) = data.get_mut(at) {
                                *b = b.wrapping_add(1);
                            }
                        }
                    }
                }
                ts += if rng.below(8) == 0 { 5_000 * (1 + rng.below(5) as i64) } else { 5_000 };
                OwnedRow {
                    ts,
                    variant_id: 1 + rng.below(2) as i64,
                    elapsed_ms: 4_900 + rng.below(200) as i64,
                    present_ms: 0,
                    data: data.clone(),
                }
            })
            .collect()
    }

    #[test]
    fn rows_round_trip_exactly() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..300 {
            let rows = evolving_rows(&mut rng, 1 + case % 130);
            let blob = encode_rows(600_000, &rows);
            assert_eq!(decode_all(600_000, blob).unwrap(), rows, "case {case}");
        }
    }

    #[test]
    fn rolled_rows_round_trip_with_their_presence() {
        // Minutes as the rollup writes them: a pod present for part of some minutes (it came
        // or went), absent from others (a gap in its timestamps), elapsed time that varies.
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for case in 0..200 {
            let mut rows = evolving_rows(&mut rng, 1 + case % 150);
            for (i, r) in rows.iter_mut().enumerate() {
                r.ts = 60_000 * (1 + i as i64 + (i as i64 / 7) * (case as i64 % 3));
                r.elapsed_ms = 55_000 + rng.below(10_000) as i64;
                r.present_ms = if rng.below(5) == 0 { 1 + rng.below(60_000) as i64 } else { 60_000 };
            }
            let blob = encode_rows(0, &rows);
            assert_eq!(blob[0], VERSION_PRESENCE);
            assert_eq!(decode_all(0, blob).unwrap(), rows, "case {case}");
        }
    }

    #[test]
    fn a_raw_chunk_written_before_presence_existed_still_reads() {
        // Version 1, as the first chunked build wrote it: two rows 5 s apart with payload
        // [1, 2, 3], the second "the same payload" (time, elapsed and variant unchanged).
        let blob = vec![1, 0x90, 0x4E, 0x90, 0x4E, 0x02, 0x04, 0x03, 1, 2, 3, 0, 0, 0, 0];
        let row = |ts| OwnedRow { ts, variant_id: 1, elapsed_ms: 5_000, present_ms: 0, data: vec![1, 2, 3] };
        assert_eq!(decode_all(0, blob.clone()).unwrap(), vec![row(5_000), row(10_000)]);
        assert_eq!(encode_rows(0, &[row(5_000), row(10_000)]), blob, "raw chunks are still written so");
    }

    #[test]
    fn empty_payloads_and_identical_payloads_round_trip() {
        let rows: Vec<OwnedRow> = [vec![], vec![], vec![7; 300], vec![7; 300], vec![]]
            .into_iter()
            .enumerate()
            .map(|(i, data)| OwnedRow {
                ts: 5_000 * (i as i64 + 1),
                variant_id: 1,
                elapsed_ms: 5_000,
                present_ms: 0,
                data,
            })
            .collect();
        assert_eq!(decode_all(0, encode_rows(0, &rows)).unwrap(), rows);
    }

    #[test]
    fn a_steady_target_costs_a_few_bytes_per_row() {
        let payload = crate::store::codec::encode(
            &Default::default(),
            &crate::point::Totals { requests_2xx: 12_345.0, ..Default::default() },
            &Default::default(),
        );
        let rows: Vec<OwnedRow> = (1..=120)
            .map(|i| OwnedRow { ts: 5_000 * i, variant_id: 1, elapsed_ms: 5_000, present_ms: 0, data: payload.clone() })
            .collect();
        let blob = encode_rows(0, &rows);
        // The first row in full (version, time, elapsed, variant, lengths: 8 bytes), then 4
        // bytes per unchanged row: time, elapsed, variant, "same payload".
        let bound = payload.len() + 8 + 119 * 4;
        assert!(blob.len() <= bound, "{} bytes for 120 rows of {} bytes", blob.len(), payload.len());
    }

    #[test]
    fn a_row_like_one_a_few_rows_back_copies_from_it() {
        // A quiet target: a request's row (labels, histogram increments) now and then between
        // idle rows. Each copies from the last row of its own kind, not only from the previous.
        let mut rng = Rng(7);
        let idle: Vec<u8> = (0..120).map(|_| rng.below(256) as u8).collect();
        let busy: Vec<u8> = (0..260).map(|_| rng.below(256) as u8).collect();
        let rows: Vec<OwnedRow> = (1..=120)
            .map(|i| OwnedRow {
                ts: 5_000 * i,
                variant_id: 1,
                elapsed_ms: 5_000,
                present_ms: 0,
                data: if i % 3 == 0 { busy.clone() } else { idle.clone() },
            })
            .collect();
        let blob = encode_rows(0, &rows);
        assert_eq!(decode_all(0, blob.clone()).unwrap(), rows);
        assert!(blob.len() < idle.len() + busy.len() + 120 * 8, "{} bytes", blob.len());
    }

    /// Every row of `blob` read piece by piece, the first piece `first` bytes long, as
    /// [`super::super::sealed`]'s window reads a chunk from its blob; and how many bytes the
    /// reader's buffer held at most.
    fn read_in_pieces(start: i64, blob: &[u8], first: usize) -> (Result<Vec<OwnedRow>, CodecError>, usize) {
        let mut rows = match ChunkRows::begin(start, blob[..first.min(blob.len())].to_vec(), blob.len()) {
            Ok(rows) => rows,
            Err(e) => return (Err(e), 0),
        };
        let (mut out, mut held) = (Vec::new(), 0);
        loop {
            held = held.max(rows.bytes.len());
            match rows.step() {
                Ok(Step::Row) => out.push(OwnedRow {
                    ts: rows.current().ts,
                    variant_id: rows.current().variant_id,
                    elapsed_ms: rows.current().elapsed_ms,
                    present_ms: rows.current().present_ms,
                    data: rows.current().data.to_vec(),
                }),
                Ok(Step::End) => return (Ok(out), held),
                Ok(Step::More) => rows
                    .fill(|buf, at| {
                        buf.copy_from_slice(&blob[at..at + buf.len()]);
                        Ok::<_, ()>(())
                    })
                    .unwrap_or_default(),
                Err(e) => return (Err(e), held),
            }
        }
    }

    #[test]
    fn a_chunk_read_in_pieces_gives_the_rows_read_whole() {
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        for case in 0..200 {
            let mut rows = evolving_rows(&mut rng, 1 + case % 130);
            if case % 5 == 0 {
                // A payload longer than a piece: a row that several pieces hold together.
                let at = rng.below(rows.len() as u64) as usize;
                rows[at].data = (0..3 * PIECE_BYTES + 17).map(|_| rng.below(256) as u8).collect();
            }
            if case % 7 == 0 {
                for (i, r) in rows.iter_mut().enumerate() {
                    r.present_ms = 1 + i as i64; // a rolled chunk: a presence per row
                }
            }
            let blob = encode_rows(600_000, &rows);
            for first in [1, 2, 7, PIECE_BYTES, blob.len()] {
                let (read, held) = read_in_pieces(600_000, &blob, first);
                assert_eq!(read.unwrap(), rows, "case {case}, first piece {first}");
                let longest = rows.iter().map(|r| r.data.len()).max().unwrap_or(0);
                assert!(
                    held <= first.max(2 * PIECE_BYTES + 2 * longest + 16),
                    "case {case}: held {held} of a {} byte chunk",
                    blob.len()
                );
            }
        }
    }

    #[test]
    fn a_corrupt_chunk_read_in_pieces_fails_as_it_does_whole() {
        let mut rng = Rng(7);
        let mut rows = evolving_rows(&mut rng, 120);
        for r in rows.iter_mut().step_by(40) {
            r.data = (0..PIECE_BYTES).map(|_| rng.below(256) as u8).collect(); // nothing to copy from
        }
        let blob = encode_rows(0, &rows);
        assert!(blob.len() > 3 * PIECE_BYTES, "a chunk of several pieces ({} bytes)", blob.len());
        for case in 0..500 {
            let mut bad = blob.clone();
            match case % 3 {
                0 => bad.truncate(1 + rng.below(bad.len() as u64 - 1) as usize),
                _ => {
                    for _ in 0..1 + rng.below(4) {
                        let at = 1 + rng.below(bad.len() as u64 - 1) as usize;
                        bad[at] = rng.below(256) as u8;
                    }
                }
            }
            let whole = decode_all(0, bad.clone()).map_err(|e| e.to_string());
            let (pieces, _) = read_in_pieces(0, &bad, 1 + case % 64);
            assert_eq!(pieces.map_err(|e| e.to_string()), whole, "case {case}");
        }
    }

    #[test]
    fn a_corrupt_chunk_is_an_error_never_a_panic() {
        let mut rng = Rng(42);
        let rows = evolving_rows(&mut rng, 60);
        let blob = encode_rows(0, &rows);
        assert!(ChunkRows::new(0, vec![]).is_err());
        assert!(ChunkRows::new(0, vec![99]).is_err(), "unknown version");
        for cut in 1..blob.len() {
            let _ = decode_all(0, blob[..cut].to_vec()); // must return, whatever it returns
        }
        for _ in 0..2_000 {
            let mut bad = blob.clone();
            for _ in 0..1 + rng.below(4) {
                let at = 1 + rng.below(bad.len() as u64 - 1) as usize;
                bad[at] = rng.below(256) as u8;
            }
            let _ = decode_all(0, bad);
        }
        // A length claiming more than the blob holds is refused before anything is allocated.
        let mut huge = vec![VERSION, 0, 0, 0];
        put_varint(&mut huge, u64::MAX >> 1);
        assert!(decode_all(0, huge).is_err());
    }
}
