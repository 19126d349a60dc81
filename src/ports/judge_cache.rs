//! Each rollout's canary evidence folded so far, kept between judgements.
//!
//! A sequential judgement folds every stratum since the rollout began, in order, and the
//! alerts, the minutely history, the gauge and every open `/compare` page ask for it again
//! and again. Re-reading the whole rollout each time made a judgement's cost grow with the
//! rollout's age (a week of 1-minute rows of every pod of both variants). Strata do not change
//! once settled, so the evidence after folding them is kept here,
//! per pair, interval start and configuration, with the source's generation: a judgement then
//! reads and folds only the strata after it, and gives exactly what judging afresh gives
//! (`tests/judge_cache.rs`). A late row merged into a settled bucket moves the generation and
//! the kept evidence is dropped. A rollout's first hour is read from raw ticks, which settle
//! seconds after they close: its evidence is kept too, per tick, and dropped once the interval
//! grows long enough to be read from rollups (the strata's width changes).

use std::sync::Mutex;

use crate::canary::{CanaryConfig, Evidence};

/// Judgements kept at once (least recently used goes first): pairs times the interval starts
/// asked for (alerts and history judge since the rollout began; a page may ask for another).
const MAX_ENTRIES: usize = 32;

/// What a judgement is kept for.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Baseline, then candidate.
    pub pair: (String, String),
    /// Start of the judged interval (exclusive), Unix ms.
    pub since_ms: i64,
    /// The configuration it was judged with.
    pub config: CanaryConfig,
}

/// The evidence after the settled strata of an interval.
#[derive(Debug, Clone)]
pub struct Folded {
    /// Reference set and every settled stratum folded.
    pub evidence: Evidence,
    /// Strata folded into it.
    pub strata: usize,
    /// End of the last settled stratum folded (or the interval's start): the next read starts
    /// after it.
    pub through_ms: i64,
    /// The source's generation when its strata were read.
    pub generation: u64,
    /// Width of the strata folded ([`crate::ports::read::SettledStrata::stratum_ms`]).
    pub stratum_ms: i64,
    /// Folded without a latency reference: the baseline had observed no latency yet.
    pub unreferenced: bool,
}

#[derive(Debug)]
struct Entry {
    key: Key,
    folded: Folded,
    used: u64,
}

/// The kept judgements; one per source.
#[derive(Debug, Default)]
pub struct JudgeCache {
    entries: Mutex<(Vec<Entry>, u64)>,
}

impl JudgeCache {
    /// The evidence kept for `key`, if it was read at `generation`.
    pub fn get(&self, key: &Key, generation: u64) -> Option<Folded> {
        let mut guard = self.entries.lock().ok()?;
        let (entries, clock) = &mut *guard;
        *clock += 1;
        let entry = entries.iter_mut().find(|e| e.key == *key && e.folded.generation == generation)?;
        entry.used = *clock;
        Some(entry.folded.clone())
    }

    /// Keeps `folded` for `key`, replacing what was kept for it.
    pub fn put(&self, key: Key, folded: Folded) {
        let Ok(mut guard) = self.entries.lock() else { return };
        let (entries, clock) = &mut *guard;
        *clock += 1;
        let used = *clock;
        entries.retain(|e| e.key != key);
        if entries.len() >= MAX_ENTRIES
            && let Some(oldest) = entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i)
        {
            entries.swap_remove(oldest);
        }
        entries.push(Entry { key, folded, used });
    }

    /// Retention deleted rows up to `cutoff_ms`: judgements of intervals that held any of them
    /// are forgotten (a fresh judgement would no longer see those rows).
    pub fn forget_before(&self, cutoff_ms: i64) {
        if let Ok(mut guard) = self.entries.lock() {
            guard.0.retain(|e| e.key.since_ms >= cutoff_ms);
        }
    }

    /// Judgements kept now.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |g| g.0.len())
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(since_ms: i64) -> Key {
        Key { pair: ("production".into(), "canary".into()), since_ms, config: CanaryConfig::default() }
    }

    fn folded(through_ms: i64, generation: u64) -> Folded {
        Folded { evidence: Evidence::new(), strata: 3, through_ms, generation, stratum_ms: 5_000, unreferenced: false }
    }

    #[test]
    fn a_judgement_is_kept_per_key_and_generation_and_the_least_used_goes_first() {
        let cache = JudgeCache::default();
        cache.put(key(0), folded(60_000, 1));
        assert_eq!(cache.get(&key(0), 1).map(|f| f.through_ms), Some(60_000));
        assert!(cache.get(&key(0), 2).is_none(), "another generation");
        assert!(cache.get(&key(1), 1).is_none(), "another interval");
        let mut other = key(0);
        other.config = CanaryConfig::parse("alpha: 0.01", "test").unwrap();
        assert!(cache.get(&other, 1).is_none(), "another configuration");
        cache.put(key(0), folded(120_000, 1));
        assert_eq!(cache.len(), 1, "replaced");
        for since in 1..MAX_ENTRIES as i64 {
            cache.put(key(since), folded(0, 1));
        }
        assert!(cache.get(&key(0), 1).is_some(), "used last");
        cache.put(key(-1), folded(0, 1));
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(cache.get(&key(1), 1).is_none(), "the least recently used went");
        assert!(cache.get(&key(0), 1).is_some());
        cache.forget_before(10);
        assert!(cache.get(&key(0), 1).is_none() && cache.get(&key(10), 1).is_some());
    }
}
