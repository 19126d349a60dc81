//! Persisting each target's scrape state cheaply: a full checkpoint now and then, and at every
//! scrape only the values that changed.
//!
//! The state (absolute values of every series, running totals, admitted label values) is what
//! lets a restart resume without a spike or a lost interval, so it must be on disk with every
//! committed row. Rewriting it whole at every scrape cost about 5 KB per target every 5 s, most
//! of zai-dash's disk write volume. Instead:
//! - a **checkpoint** (the whole state, JSON) is written at a target's first scrape, every
//!   [`CHECKPOINT_EVERY_MS`], whenever the series or admitted label values change (the
//!   positions of the values moved), when the target goes down, and when its task stops;
//! - between checkpoints each scrape writes a **journal entry**: the positions and new values of
//!   the slots that changed since the previous entry, typically a few bytes per changed series
//!   because counters mostly grow by small integers.
//!
//! On start-up the journal after each checkpoint is replayed into it ([`consolidate`]), so the
//! scraper resumes from exactly the state of its last committed scrape.

use super::increase::TargetState;
use crate::point::Totals;
use crate::ports::ingest::{SavedState, StateWrite};
use crate::redact::RedactedUrl;

/// A live target's state is checkpointed at least this often (10 minutes): the journal to
/// replay at start-up stays short, and old entries can be deleted. The checkpoints fall on the
/// windows `(k * 10 min, (k + 1) * 10 min]` the store seals raw rows by: a checkpoint is due at
/// a target's first scrape in each window ([`window_of`]), so once a window is sealed every
/// live target's checkpoint covers the journal entries its raw rows carried, and the seal has
/// none to keep (`store::sealed::keep_carried_entries`).
pub const CHECKPOINT_EVERY_MS: i64 = 600_000;

/// The checkpoint window of a time: left-open windows, as the store's raw generations.
fn window_of(ms: i64) -> i64 {
    ms.saturating_sub(1).div_euclid(CHECKPOINT_EVERY_MS)
}

/// Version byte of the journal entries this build writes: 2 added decimal increases, 3 runs of
/// equal whole increases ([`encode_changes`]). Entries of versions 1 (whole increases and raw
/// values only) and 2 are still read; a build that knows only an older version restores a
/// target from a newer entry as a new baseline (its totals kept), as from any entry it cannot
/// read.
const FORMAT: u8 = 3;
/// The first version, read only.
const FORMAT_1: u8 = 1;
/// The second version (no runs), read only.
const FORMAT_2: u8 = 2;

/// Powers of ten a decimal increase is scaled by, each exact as an `f64`.
const TENS: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// Why a journal entry could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Written by another format version.
    #[error("journal entry of unknown format {0}")]
    Format(u8),
    /// The entry describes a state with another number of values than the checkpoint.
    #[error("journal entry for {entry} values, the state has {state}")]
    Shape {
        /// Values the entry was written for.
        entry: usize,
        /// Values of the state it is applied to.
        state: usize,
    },
    /// Cut short or malformed.
    #[error("truncated journal entry")]
    Truncated,
    /// The checkpoint itself could not be read.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] serde_json::Error),
}

/// What one target's task remembers about what it persisted.
#[derive(Debug, Clone, Default)]
pub struct Persister {
    /// The state's layout at the last checkpoint: a different one needs a new checkpoint.
    layout: Option<u64>,
    /// The values as of the last write, in slot order.
    values: Vec<f64>,
    /// Variant written with the last checkpoint.
    variant: Option<String>,
    /// When the last checkpoint was written.
    checkpoint_ms: Option<i64>,
    /// Key of the last write: keys strictly increase, even when the clock steps back.
    last_ms: i64,
    /// Journal entries were written since the last checkpoint.
    pending: bool,
}

impl Persister {
    /// Starts from a state loaded from storage (a consolidated checkpoint), or from nothing.
    pub fn resumed(state: &TargetState, variant: Option<String>) -> Self {
        let loaded = state.last_scrape_ms.is_some();
        Self {
            layout: loaded.then_some(state.layout),
            values: if loaded { state.slots() } else { Vec::new() },
            variant,
            checkpoint_ms: state.last_scrape_ms,
            last_ms: state.last_scrape_ms.unwrap_or(i64::MIN),
            pending: false,
        }
    }

    /// What to write after a successful scrape completed at `at_ms`, and the write's time key.
    pub fn after_scrape(&mut self, state: &TargetState, at_ms: i64, variant: &str) -> (i64, StateWrite) {
        let ms = self.next_ms(at_ms);
        let due = self.checkpoint_ms.is_none_or(|c| window_of(at_ms) != window_of(c));
        if due || self.layout != Some(state.layout) || self.variant.as_deref() != Some(variant) {
            return (ms, self.checkpoint(state, ms, variant));
        }
        let now = state.slots();
        let entry = encode_changes(&self.values, &now);
        self.values = now;
        self.pending = true;
        (ms, StateWrite::Journal(entry))
    }

    /// A checkpoint when journal entries were written since the last one: the target went down
    /// or its task stops, so its final state is kept in one place.
    pub fn settle(&mut self, state: &TargetState, at_ms: i64) -> Option<(i64, StateWrite, String)> {
        if !self.pending {
            return None;
        }
        let ms = self.next_ms(at_ms);
        let variant = self.variant.clone().unwrap_or_default();
        let write = self.checkpoint(state, ms, &variant);
        Some((ms, write, variant))
    }

    fn checkpoint(&mut self, state: &TargetState, ms: i64, variant: &str) -> StateWrite {
        self.layout = Some(state.layout);
        self.values = state.slots();
        self.variant = Some(variant.to_owned());
        self.checkpoint_ms = Some(ms);
        self.pending = false;
        StateWrite::Checkpoint(SavedState::of_json(serde_json::to_string(state).unwrap_or_default()))
    }

    fn next_ms(&mut self, at_ms: i64) -> i64 {
        self.last_ms = at_ms.max(self.last_ms.saturating_add(1));
        self.last_ms
    }
}

/// A checkpoint with the journal entries written after it applied, in time order: the state of
/// the target's last committed scrape. `None` checkpoint starts from an empty state.
pub fn consolidate(checkpoint: Option<&str>, entries: &[(i64, Vec<u8>)]) -> Result<TargetState, JournalError> {
    let mut state: TargetState = match checkpoint {
        Some(json) => serde_json::from_str(json)?,
        None => TargetState::default(),
    };
    for (ms, entry) in entries {
        let mut values = state.slots();
        apply_changes(&mut values, entry)?;
        state.set_slots(&values);
        state.last_scrape_ms = Some(*ms);
    }
    Ok(state)
}

/// [`consolidate`], or when the stored state cannot be replayed, a baseline that keeps the
/// running totals the checkpoint had: the next scrape counts nothing (nothing counted twice),
/// and cumulative fields do not restart from zero. The error says what was unreadable.
pub fn restore(checkpoint: Option<&str>, entries: &[(i64, Vec<u8>)]) -> (TargetState, Option<JournalError>) {
    match consolidate(checkpoint, entries) {
        Ok(state) => (state, None),
        Err(e) => {
            let kept = checkpoint.and_then(|j| serde_json::from_str::<TargetState>(j).ok()).unwrap_or_default();
            let baseline =
                TargetState { totals: kept.totals, seen: kept.seen, version: kept.version, ..Default::default() };
            (baseline, Some(e))
        }
    }
}

/// [`restore`] for the store's start-up replay (`store::startup::Replay`): the target's state
/// with its journal applied, serialized, and its running totals. An unreadable journal is
/// logged; the checkpoint's totals are kept and the next scrape is a new baseline.
pub fn replay(url: &str, checkpoint: Option<&str>, entries: &[(i64, Vec<u8>)]) -> (String, Totals) {
    let (state, error) = restore(checkpoint, entries);
    if let Some(e) = error {
        tracing::warn!(target_url = %RedactedUrl(url), error = %e, "Stored scrape state journal is unreadable; the next scrape is a new baseline.");
    }
    (serde_json::to_string(&state).unwrap_or_default(), state.totals.into())
}

/// The changed slots of `now` against `before` (same length): `[FORMAT][len]` then, per changed
/// slot, `varint(gap << 2 | kind)` (gap: slots skipped since the previous changed one) and:
/// kind 0, `varint(increase)` when the value grew by a whole number from a whole number; kind
/// 2, `varint(zigzag(m) << 4 | k)` when adding `m / 10^k` to the old value gives the new one
/// bit for bit (costs and durations grow by short decimals: 3 or 4 bytes where the value took
/// 8; journal leaves were about a sixth of the pages a tick wrote, BENCHMARKS.md, "Write
/// volume, seventh stop"); kind 3, `varint(n - 2)` and `varint(increase)` for `n >= 2`
/// adjacent slots that each grew by the same whole number (one observation moves a histogram's
/// cumulative buckets from its own to `+Inf` by one: 3 bytes where each bucket took 2; the
/// entries ride in the raw rows, BENCHMARKS.md, "Write volume, ninth stop"); else kind 1 and
/// the value's 8 bytes.
pub fn encode_changes(before: &[f64], now: &[f64]) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put_varint(&mut out, now.len() as u64);
    let mut next = 0usize;
    let mut i = 0usize;
    while i < now.len().min(before.len()) {
        let (b, v) = (before[i], now[i]);
        if b.to_bits() == v.to_bits() {
            i += 1;
            continue;
        }
        let gap = ((i - next) as u64) << 2;
        if let Some(d) = whole_increase(b, v) {
            let run = (i + 1..now.len().min(before.len()))
                .take_while(|&j| whole_increase(before[j], now[j]) == Some(d))
                .count()
                + 1;
            if run >= 2 {
                put_varint(&mut out, gap | 3);
                put_varint(&mut out, (run - 2) as u64);
                put_varint(&mut out, d);
                i += run;
                next = i;
                continue;
            }
            put_varint(&mut out, gap);
            put_varint(&mut out, d);
        } else if let Some(packed) = decimal_increase(b, v) {
            put_varint(&mut out, gap | 2);
            put_varint(&mut out, packed);
        } else {
            put_varint(&mut out, gap | 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        i += 1;
        next = i;
    }
    out
}

/// Applies an entry of [`encode_changes`] (or of the first format) to `values`.
pub fn apply_changes(values: &mut [f64], entry: &[u8]) -> Result<(), JournalError> {
    let (&format, mut rest) = entry.split_first().ok_or(JournalError::Truncated)?;
    let kind_bits = match format {
        FORMAT | FORMAT_2 => 2,
        FORMAT_1 => 1,
        other => return Err(JournalError::Format(other)),
    };
    let len = usize::try_from(take_varint(&mut rest)?).map_err(|_| JournalError::Truncated)?;
    if len != values.len() {
        return Err(JournalError::Shape { entry: len, state: values.len() });
    }
    let mut next = 0usize;
    while !rest.is_empty() {
        let head = take_varint(&mut rest)?;
        let i = usize::try_from(head >> kind_bits)
            .ok()
            .and_then(|gap| next.checked_add(gap))
            .ok_or(JournalError::Truncated)?;
        let slot = values.get_mut(i).ok_or(JournalError::Truncated)?;
        match head & ((1 << kind_bits) - 1) {
            0 => *slot += take_varint(&mut rest)? as f64,
            1 => {
                let (bytes, tail) = rest.split_first_chunk::<8>().ok_or(JournalError::Truncated)?;
                *slot = f64::from_le_bytes(*bytes);
                rest = tail;
            }
            2 => *slot += decimal(take_varint(&mut rest)?),
            3 if format == FORMAT => {
                let n = usize::try_from(take_varint(&mut rest)?).ok().and_then(|n| n.checked_add(2));
                let d = take_varint(&mut rest)? as f64;
                let end = n.and_then(|n| i.checked_add(n)).ok_or(JournalError::Truncated)?;
                for slot in values.get_mut(i..end).ok_or(JournalError::Truncated)? {
                    *slot += d;
                }
                next = end;
                continue;
            }
            _ => return Err(JournalError::Truncated),
        }
        next = i + 1;
    }
    Ok(())
}

/// `m / 10^k` of a packed decimal increase, `zigzag(m) << 4 | k`.
fn decimal(packed: u64) -> f64 {
    let z = packed >> 4;
    let m = (z >> 1) as i64 ^ -((z & 1) as i64);
    m as f64 / TENS[(packed & 15) as usize]
}

/// The shortest decimal `m / 10^k` whose addition to `b` gives `v` exactly, packed, when it
/// takes fewer bytes than the raw value; `v - b` rounded to each number of decimals in turn.
fn decimal_increase(b: f64, v: f64) -> Option<u64> {
    const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53: m exact as an f64
    let d = v - b;
    if !d.is_finite() {
        return None;
    }
    for (k, ten) in TENS.iter().enumerate() {
        let m = (d * ten).round();
        if m.abs() >= LIMIT {
            return None;
        }
        let m = m as i64;
        let packed = (((m << 1) ^ (m >> 63)) as u64).checked_mul(16)? | k as u64;
        if (b + decimal(packed)).to_bits() == v.to_bits() {
            // A varint of 8 bytes or more saves nothing over the raw value.
            return (packed < 1 << 49).then_some(packed);
        }
    }
    None
}

/// `v - b` when both are whole numbers below 2^53, `v > b`, and adding it back is exact.
fn whole_increase(b: f64, v: f64) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if !(b >= 0.0 && v > b && v < EXACT && b.fract() == 0.0 && v.fract() == 0.0) {
        return None;
    }
    let d = (v - b) as u64;
    (b + d as f64 == v).then_some(d)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(rest: &mut &[u8]) -> Result<u64, JournalError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first().ok_or(JournalError::Truncated)?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(JournalError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::{parse::parse, reading::read};

    fn expo(ok: u64, cost: f64, fast: u64, slow: u64) -> String {
        format!(
            "# TYPE zai_proxy_requests_total counter\n\
             zai_proxy_requests_total{{status_code=\"200\"}} {ok}\n\
             # TYPE zai_proxy_estimated_cost_usd_total counter\n\
             zai_proxy_estimated_cost_usd_total{{direction=\"input\",model=\"glm-4\"}} {cost}\n\
             # TYPE zai_proxy_request_duration_seconds histogram\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"0.1\"}} {fast}\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             zai_proxy_request_duration_seconds_sum 1.5\n\
             zai_proxy_request_duration_seconds_count {}\n",
            fast + slow,
            fast + slow
        )
    }

    /// Scrapes `texts` in order (5 s apart), persisting as the scraper does; returns the live
    /// state and what was written.
    fn run(texts: &[String]) -> (TargetState, Vec<(i64, StateWrite)>) {
        let mut state = TargetState::default();
        let mut p = Persister::resumed(&state, None);
        let mut writes = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let at = 1_000 + 5_000 * i as i64;
            state.advance(&read(&parse(t).unwrap()), at, 1, "production");
            writes.push(p.after_scrape(&state, at, "production"));
        }
        (state, writes)
    }

    /// What start-up rebuilds from the writes: the newest checkpoint and the entries after it.
    fn rebuild(writes: &[(i64, StateWrite)]) -> TargetState {
        let (ckpt_ms, json) = writes
            .iter()
            .rev()
            .find_map(|(ms, w)| match w {
                StateWrite::Checkpoint(j) => Some((*ms, j.json().unwrap())),
                StateWrite::Journal(_) => None,
            })
            .unwrap();
        let entries: Vec<(i64, Vec<u8>)> = writes
            .iter()
            .filter_map(|(ms, w)| match w {
                StateWrite::Journal(e) if *ms > ckpt_ms => Some((*ms, e.clone())),
                _ => None,
            })
            .collect();
        consolidate(Some(&json), &entries).unwrap()
    }

    fn same(a: &TargetState, b: &TargetState) {
        let strip = |s: &TargetState| TargetState { layout: 0, ..s.clone() };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn first_scrape_checkpoints_then_only_changes_are_journaled() {
        let texts = [expo(10, 0.5, 3, 1), expo(12, 0.75, 4, 2), expo(14, 1.0, 5, 2), expo(14, 1.0, 5, 2)];
        let (state, writes) = run(&texts);
        assert!(matches!(writes[0].1, StateWrite::Checkpoint(_)), "the baseline");
        assert!(matches!(writes[1].1, StateWrite::Checkpoint(_)), "first label values admitted");
        let StateWrite::Journal(changed) = &writes[2].1 else { panic!("journal expected") };
        // 2 requests, cost (raw f64), 1 bucket, count, sum unchanged, then the totals that moved.
        assert!(changed.len() < 40, "a few bytes per changed value: {}", changed.len());
        let StateWrite::Journal(unchanged) = &writes[3].1 else { panic!("journal expected") };
        assert_eq!(unchanged.len(), 2, "nothing changed: format and length only");
        same(&rebuild(&writes), &state);
    }

    #[test]
    fn new_series_force_a_checkpoint() {
        let more = format!("{}zai_proxy_requests_total{{status_code=\"500\"}} 1\n", expo(12, 0.75, 4, 2));
        let (state, writes) = run(&[expo(10, 0.5, 3, 1), expo(11, 0.5, 3, 1), more, expo(13, 0.8, 5, 2)]);
        assert!(matches!(writes[2].1, StateWrite::Checkpoint(_)), "the series changed");
        same(&rebuild(&writes), &state);
    }

    #[test]
    fn a_checkpoint_is_written_every_ten_minutes() {
        let texts: Vec<String> = (0..130).map(|i| expo(10 + i, 0.5, 3 + i, 1)).collect();
        let (state, writes) = run(&texts);
        let checkpoints: Vec<i64> =
            writes.iter().filter(|(_, w)| matches!(w, StateWrite::Checkpoint(_))).map(|(ms, _)| *ms).collect();
        // The baseline, the first admitted label values, then the first scrape of each window.
        assert_eq!(checkpoints, vec![1_000, 6_000, 1_000 + CHECKPOINT_EVERY_MS]);
        same(&rebuild(&writes), &state);
    }

    #[test]
    fn checkpoints_fall_at_the_first_scrape_of_each_raw_window() {
        // Resumed from a checkpoint a second before a window's end: the next window's first
        // scrape checkpoints again, so the window's entries are covered once it is sealed.
        let mut state = TargetState::default();
        for (i, at) in [594_000, 599_000].into_iter().enumerate() {
            state.advance(&read(&parse(&expo(i as u64, 0.0, 1, 0)).unwrap()), at, 1, "p");
        }
        let mut p = Persister::resumed(&state, Some("p".into()));
        state.advance(&read(&parse(&expo(2, 0.0, 1, 0)).unwrap()), 600_000, 1, "p");
        assert!(matches!(p.after_scrape(&state, 600_000, "p").1, StateWrite::Journal(_)), "windows are left-open");
        state.advance(&read(&parse(&expo(3, 0.0, 1, 0)).unwrap()), 601_000, 1, "p");
        assert!(matches!(p.after_scrape(&state, 601_000, "p").1, StateWrite::Checkpoint(_)), "a new window");
        state.advance(&read(&parse(&expo(4, 0.0, 1, 0)).unwrap()), 1_200_000, 1, "p");
        assert!(matches!(p.after_scrape(&state, 1_200_000, "p").1, StateWrite::Journal(_)));
    }

    #[test]
    fn resets_and_fractions_replay_exactly() {
        let (state, writes) =
            run(&[expo(1000, 0.1, 900, 100), expo(1001, 0.30000000000000004, 901, 100), expo(3, 0.2, 3, 0)]);
        same(&rebuild(&writes), &state);
        assert_eq!(rebuild(&writes).totals, state.totals);
    }

    #[test]
    fn keys_strictly_increase_when_the_clock_steps_back() {
        let mut state = TargetState::default();
        let mut p = Persister::resumed(&state, None);
        let reading = read(&parse(&expo(1, 0.0, 1, 0)).unwrap());
        state.advance(&reading, 5_000, 1, "p");
        let a = p.after_scrape(&state, 5_000, "p").0;
        let b = p.after_scrape(&state, 5_000, "p").0;
        let c = p.settle(&state, 4_000).map(|w| w.0);
        assert!(a < b && Some(b + 1) == c, "{a} {b} {c:?}");
    }

    #[test]
    fn settle_writes_only_when_entries_are_pending() {
        let (mut state, _) = run(&[expo(1, 0.0, 1, 0), expo(2, 0.0, 1, 0)]);
        let mut p = Persister::resumed(&state, Some("p".into()));
        assert!(p.settle(&state, 9_000).is_none());
        state.advance(&read(&parse(&expo(3, 0.0, 1, 0)).unwrap()), 10_000, 1, "p");
        assert!(matches!(p.after_scrape(&state, 10_000, "p").1, StateWrite::Journal(_)));
        assert!(matches!(p.settle(&state, 15_000), Some((_, StateWrite::Checkpoint(_), _))));
    }

    #[test]
    fn an_unreadable_journal_restores_a_baseline_with_the_totals() {
        let (state, writes) = run(&[expo(10, 0.5, 3, 1), expo(12, 0.75, 4, 2)]);
        let StateWrite::Checkpoint(saved) = &writes[0].1 else { panic!() };
        assert!(matches!(saved, SavedState::Deflated(_)), "compressed where it is made");
        let json = &saved.json().unwrap();
        let (restored, err) = restore(Some(json), &[(9_000, vec![FORMAT, 99])]);
        assert!(matches!(err, Some(JournalError::Shape { .. })));
        assert_eq!(restored.last_scrape_ms, None, "a baseline");
        assert!(restored.counters.is_empty());
        let at_checkpoint: TargetState = serde_json::from_str(json).unwrap();
        assert_eq!(restored.totals, at_checkpoint.totals);
        assert_ne!(restored.totals, state.totals, "the replay would have moved them");
    }

    #[test]
    fn malformed_entries_are_refused() {
        let mut v = vec![1.0, 2.0];
        assert!(matches!(apply_changes(&mut v, &[]), Err(JournalError::Truncated)));
        assert!(matches!(apply_changes(&mut v, &[9, 2]), Err(JournalError::Format(9))));
        assert!(matches!(apply_changes(&mut v, &[FORMAT, 3]), Err(JournalError::Shape { .. })));
        assert!(matches!(apply_changes(&mut v, &[FORMAT, 2, 8, 1]), Err(JournalError::Truncated)));
        assert!(matches!(apply_changes(&mut v, &[FORMAT, 2, 1, 0, 0]), Err(JournalError::Truncated)));
        assert!(matches!(apply_changes(&mut v, &[FORMAT_2, 2, 3, 0]), Err(JournalError::Truncated)), "no kind 3");
        assert!(matches!(apply_changes(&mut v, &[FORMAT, 2, 3, 0, 1]), Ok(())), "a run of two");
        assert!(matches!(apply_changes(&mut v, &[FORMAT, 2, 3, 1, 1]), Err(JournalError::Truncated)), "past the end");
        assert!(matches!(apply_changes(&mut v, &[FORMAT, 2, 3, 0]), Err(JournalError::Truncated)));
        assert!(matches!(apply_changes(&mut v, &[FORMAT_1, 2, 4, 1]), Err(JournalError::Truncated)));
        let e = encode_changes(&[1.0, 2.0], &[1.0, f64::NAN]);
        apply_changes(&mut v, &e).unwrap();
        assert!(v[1].is_nan());
    }

    #[test]
    fn decimal_increases_take_a_few_bytes_and_replay_bit_for_bit() {
        // Costs grown by tokens times a price, a duration sum by measured seconds, a reset, a
        // fraction that is not a short decimal, a value that became infinite.
        let mut before = vec![12.345_678, 1_000.25, 1_000.0, 0.1, 5.0];
        let mut cost = before[0];
        cost += 2_137.0 * 0.000_002;
        let now = vec![cost, 1_000.25 + 0.234_567, 3.0, 0.1 + 1.0 / 3.0, f64::INFINITY];
        let e = encode_changes(&before, &now);
        assert!(e.len() <= 2 + 4 + 5 + 3 + 10 + 10, "{} bytes: {e:?}", e.len());
        apply_changes(&mut before, &e).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&before), bits(&now));
        assert_eq!(e[2] & 3, 2, "the cost is a decimal increase: {e:?}");
    }

    #[test]
    fn a_histograms_buckets_moved_alike_take_one_run() {
        // One observation: the cumulative buckets from its own to +Inf grow by one, then the
        // sum (a decimal) and the count; a second histogram's run of twos next to a one.
        let before = vec![5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 1.5, 5.0, 0.0, 3.0, 3.0, 4.0];
        let now = vec![5.0, 5.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0, 2.75, 6.0, 0.0, 5.0, 5.0, 5.0];
        let e = encode_changes(&before, &now);
        // Format, length, the run (3), the sum (1 + 2), the count (2), the twos (3), the one (2).
        assert_eq!(e.len(), 2 + 3 + 3 + 2 + 3 + 2, "{e:?}");
        let mut replayed = before.clone();
        apply_changes(&mut replayed, &e).unwrap();
        assert_eq!(replayed, now);
        // As format 2 wrote it: each bucket its own increase.
        let mut v = before;
        let mut old = vec![FORMAT_2, 14, 2 << 2, 1];
        for _ in 0..5 {
            old.extend([0, 1]);
        }
        apply_changes(&mut v, &old).unwrap();
        assert_eq!(&v[..8], &now[..8]);
    }

    #[test]
    fn entries_of_the_first_format_still_replay() {
        // As a build before format 2 wrote them: gap << 1 | raw.
        let mut v = vec![10.0, 0.5, 7.0];
        let mut entry = vec![FORMAT_1, 3, 0, 5]; // slot 0 grew by 5
        entry.push((1 << 1) | 1);
        entry.extend_from_slice(&0.75f64.to_le_bytes());
        apply_changes(&mut v, &entry).unwrap();
        assert_eq!(v, vec![15.0, 0.5, 0.75]);
    }

    #[test]
    fn many_random_changes_replay_bit_for_bit() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut live: Vec<f64> = (0..40).map(|i| i as f64 * 0.1).collect();
        let mut replayed = live.clone();
        let mut decimal_bytes = 0;
        for _ in 0..2_000 {
            let before = live.clone();
            for x in live.iter_mut() {
                match next() % 5 {
                    0 => *x += (next() % 3_000) as f64 * 0.000_002,
                    1 => *x += (next() % 1_000_000) as f64 / 1e6,
                    2 => *x += (next() >> 11) as f64 / (1u64 << 53) as f64,
                    3 => *x = (next() % 100) as f64,
                    _ => {}
                }
            }
            let e = encode_changes(&before, &live);
            decimal_bytes += e.len();
            apply_changes(&mut replayed, &e).unwrap();
            assert_eq!(
                replayed.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                live.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
        assert!(decimal_bytes > 0);
    }
}
