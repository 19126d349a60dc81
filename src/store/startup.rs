//! What a start-up settles with the database, in the domain's words: configured targets
//! registered (ids and state of known ones kept), every target's state journal replayed into
//! its checkpoint, the running totals the live points continue from, discovered targets
//! registered at run time, and the demo's simulated history.

use super::query::{self, Checkpoint, StoredTarget};
use super::{Store, StoreError, write};
use crate::point::Totals;
use crate::ports::BoxFuture;
use crate::ports::ingest::{KnownTotals, Registered, RegistryError, SavedState, TargetRegistry, WriteBatch};

/// Replays one target's journal onto its checkpoint: given the target's URL, its checkpoint and
/// the journal entries written after it (`(time key, entry)`, oldest first), the whole state to
/// store and its running totals. The scraper owns the format (`scrape::persist::replay`); the
/// store keeps the bytes.
pub(crate) type Replay = fn(&str, Option<&str>, &[(i64, Vec<u8>)]) -> (String, Totals);

impl Store {
    /// Replays each target's state journal into its checkpoint with `replay` and drops the
    /// replayed entries, so every scraper (configured or discovered later) resumes from its
    /// last committed scrape.
    pub(crate) async fn replay_journals(&self, replay: Replay) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            let journals = query::pending_journals(c)?;
            if journals.is_empty() {
                return Ok(());
            }
            let mut checkpoints = Vec::with_capacity(journals.len());
            for t in query::targets(c)? {
                let Some(entries) = journals.get(&t.id) else { continue };
                let Some(&(ms, _)) = entries.last() else { continue };
                let (state, totals) = replay(&t.url, t.readable_state().as_deref(), entries);
                checkpoints.push(Checkpoint { target_id: t.id, ms, state: SavedState::of_json(state), totals });
            }
            let pruned = query::save_checkpoints(c, &checkpoints)?;
            tracing::debug!(targets = checkpoints.len(), entries = pruned, "Scrape state journal replayed.");
            Ok(())
        })
        .await
    }

    /// Registers the configured `(url, variant)` targets and returns them in that order, with
    /// the latest running totals of every target ever seen (the first live points' cumulative
    /// fields; `rollup_ms`: the width of a rollup row).
    pub(crate) async fn register_configured(
        &self,
        targets: Vec<(String, String)>,
        now_ms: i64,
        rollup_ms: i64,
    ) -> Result<(Vec<StoredTarget>, Vec<KnownTotals>), StoreError> {
        let (stored, totals) = self
            .with_conn(move |c| {
                Ok((query::register_targets(c, &targets, now_ms)?, query::latest_totals(c, rollup_ms)?))
            })
            .await?;
        let seed = totals.into_iter().map(|(target_id, variant, totals)| KnownTotals { target_id, variant, totals });
        Ok((stored, seed.collect()))
    }

    /// Writes history built by `build` for the `(url, variant)` targets (registered first)
    /// unless raw rows newer than `unless_after_ms` exist; returns whether it wrote. For the
    /// demo, before the writer starts (a restarted demo keeps what it has).
    pub(crate) fn write_history(
        &self,
        targets: &[(String, String)],
        (now_ms, unless_after_ms): (i64, i64),
        rollup_ms: i64,
        build: impl FnOnce(&[StoredTarget]) -> WriteBatch,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let newest = super::sealed::newest_ts(&conn, query::Table::Raw)?;
        if newest.is_some_and(|ts| ts > unless_after_ms) {
            return Ok(false);
        }
        let stored = query::register_targets(&conn, targets, now_ms)?;
        write::write_batch(&mut conn, &build(&stored), rollup_ms)?;
        Ok(true)
    }
}

impl TargetRegistry for Store {
    fn register<'a>(
        &'a self,
        url: &'a str,
        variant: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Registered, RegistryError>> {
        let pair = vec![(url.to_owned(), variant.to_owned())];
        Box::pin(async move {
            let (stored, journal) = self
                .with_conn(move |c| {
                    let stored = query::register_targets(c, &pair, now_ms)?;
                    let journal = match stored.first() {
                        Some(t) => query::journal_of(c, t.id, t.state_ms)?,
                        None => Vec::new(),
                    };
                    Ok((stored, journal))
                })
                .await?;
            let t = stored.into_iter().next().ok_or("the target was not found after registering it")?;
            Ok(Registered { id: t.id, state: t.readable_state(), journal })
        })
    }
}
