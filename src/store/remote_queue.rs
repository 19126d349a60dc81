//! The remote write queue: the [`SampleQueue`] the remote writer keeps its unshipped samples
//! in, one row of `remote_queue` per scrape, shipped and removed oldest first.
//!
//! Chunks are removed from the head of the queue (shipped, refused for good, older than the
//! backlog's age limit) or, for the byte limit, right behind the request under way, so the rowid
//! order is the shipping order and every access is a scan from the start of the table's b-tree:
//! no index beyond the rowid is needed. `length(payload)` is read from the record header, not
//! from the blob's pages.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};
use crate::ports::BoxFuture;
use crate::ports::samples::{Chunk, QueueError, QueueState, QueueSummary, Queued, SampleQueue};

/// Appends `chunks` in order in one transaction.
pub(crate) fn append(conn: &mut Connection, chunks: &[Chunk]) -> Result<QueueState, StoreError> {
    let tx = super::write_transaction(conn)?;
    {
        let mut insert = tx.prepare_cached("INSERT INTO remote_queue (ts, samples, payload) VALUES (?1, ?2, ?3)")?;
        for c in chunks {
            insert.execute(params![c.ts_ms, i64::try_from(c.samples).unwrap_or(i64::MAX), c.payload])?;
        }
    }
    let head_ms = head(&tx)?;
    tx.commit()?;
    Ok(QueueState { removed: 0, removed_bytes: 0, head_ms })
}

/// The oldest chunks that fit in `max_samples`; always the first one, however large.
pub(crate) fn oldest(conn: &Connection, max_samples: u64) -> Result<Vec<Queued>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, ts, samples, payload FROM remote_queue ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let (mut out, mut total) = (Vec::new(), 0u64);
    while let Some(r) = rows.next()? {
        let samples = u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
        if !out.is_empty() && total + samples > max_samples {
            break;
        }
        total += samples;
        out.push(Queued { id: r.get(0)?, chunk: Chunk { ts_ms: r.get(1)?, samples, payload: r.get(3)? } });
    }
    Ok(out)
}

/// Removes every chunk up to and including `id`; returns the samples removed and the new head.
pub(crate) fn remove_through(conn: &mut Connection, id: i64) -> Result<QueueState, StoreError> {
    remove_range(conn, i64::MIN, id)
}

/// Removes the chunks with `after < id <= through`.
fn remove_range(conn: &mut Connection, after: i64, through: i64) -> Result<QueueState, StoreError> {
    let tx = super::write_transaction(conn)?;
    let (removed, removed_bytes): (i64, i64) = tx.query_row(
        "SELECT COALESCE(SUM(samples), 0), COALESCE(SUM(length(payload)), 0) FROM remote_queue WHERE id > ?1 AND id <= ?2",
        [after, through],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.execute("DELETE FROM remote_queue WHERE id > ?1 AND id <= ?2", [after, through])?;
    let head_ms = head(&tx)?;
    tx.commit()?;
    Ok(QueueState {
        removed: u64::try_from(removed).unwrap_or(0),
        removed_bytes: u64::try_from(removed_bytes).unwrap_or(0),
        head_ms,
    })
}

/// Removes the oldest chunks after `after_id` until at least `bytes` payload bytes are gone
/// (fewer when the queue holds fewer).
pub(crate) fn drop_bytes(conn: &mut Connection, bytes: u64, after_id: Option<i64>) -> Result<QueueState, StoreError> {
    let after = after_id.unwrap_or(i64::MIN);
    let last = {
        let mut stmt = conn.prepare_cached("SELECT id, length(payload) FROM remote_queue WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([after])?;
        let (mut last, mut taken) = (None, 0u64);
        while taken < bytes {
            let Some(r) = rows.next()? else { break };
            last = Some(r.get::<_, i64>(0)?);
            taken += u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
        }
        last
    };
    match last {
        Some(id) => remove_range(conn, after, id),
        None => Ok(QueueState { head_ms: head(conn)?, ..QueueState::default() }),
    }
}

/// Removes the run of chunks at the head older than `ts_ms`. A chunk behind a newer one stays
/// (the queue is shipped in order, so the head decides).
pub(crate) fn drop_before(conn: &mut Connection, ts_ms: i64) -> Result<QueueState, StoreError> {
    let last = {
        let mut stmt = conn.prepare_cached("SELECT id, ts FROM remote_queue ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut last = None;
        while let Some(r) = rows.next()? {
            if r.get::<_, i64>(1)? >= ts_ms {
                break;
            }
            last = Some(r.get::<_, i64>(0)?);
        }
        last
    };
    match last {
        Some(id) => remove_through(conn, id),
        None => Ok(QueueState { head_ms: head(conn)?, ..QueueState::default() }),
    }
}

/// Samples and payload bytes queued, and the time of the head.
pub(crate) fn summary(conn: &Connection) -> Result<QueueSummary, StoreError> {
    let (samples, bytes): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(samples), 0), COALESCE(SUM(length(payload)), 0) FROM remote_queue",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(QueueSummary {
        samples: u64::try_from(samples).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
        head_ms: head(conn)?,
    })
}

fn head(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT ts FROM remote_queue ORDER BY id LIMIT 1", [], |r| r.get(0)).optional()?)
}

impl SampleQueue for Store {
    fn append(&self, chunks: Vec<Chunk>) -> BoxFuture<'_, Result<QueueState, QueueError>> {
        Box::pin(async move { Ok(self.with_conn(move |c| append(c, &chunks)).await?) })
    }

    fn oldest(&self, max_samples: u64) -> BoxFuture<'_, Result<Vec<Queued>, QueueError>> {
        Box::pin(async move { Ok(self.with_conn(move |c| oldest(c, max_samples)).await?) })
    }

    fn remove_through(&self, id: i64) -> BoxFuture<'_, Result<QueueState, QueueError>> {
        Box::pin(async move { Ok(self.with_conn(move |c| remove_through(c, id)).await?) })
    }

    fn drop_before(&self, ts_ms: i64) -> BoxFuture<'_, Result<QueueState, QueueError>> {
        Box::pin(async move { Ok(self.with_conn(move |c| drop_before(c, ts_ms)).await?) })
    }

    fn drop_bytes(&self, bytes: u64, after_id: Option<i64>) -> BoxFuture<'_, Result<QueueState, QueueError>> {
        Box::pin(async move { Ok(self.with_conn(move |c| drop_bytes(c, bytes, after_id)).await?) })
    }

    fn summary(&self) -> BoxFuture<'_, Result<QueueSummary, QueueError>> {
        Box::pin(async move { Ok(self.with_conn(|c| summary(c)).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(ts_ms: i64, samples: u64) -> Chunk {
        Chunk { ts_ms, samples, payload: vec![samples as u8; 3] }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn ships_in_order_within_the_sample_budget() {
        let (_dir, store) = open();
        let mut c = store.conn().unwrap();
        let state = append(&mut c, &[chunk(1_000, 4), chunk(2_000, 4), chunk(3_000, 4)]).unwrap();
        assert_eq!(state.head_ms, Some(1_000));
        let first = oldest(&c, 9).unwrap();
        assert_eq!(first.iter().map(|q| q.chunk.ts_ms).collect::<Vec<_>>(), [1_000, 2_000]);
        assert_eq!(first[1].chunk.payload, vec![4, 4, 4]);
        assert_eq!(oldest(&c, 1).unwrap().len(), 1, "one chunk even when it exceeds the budget");
        let state = remove_through(&mut c, first[1].id).unwrap();
        assert_eq!(state, QueueState { removed: 8, removed_bytes: 6, head_ms: Some(3_000) });
        assert_eq!(summary(&c).unwrap(), QueueSummary { samples: 4, bytes: 3, head_ms: Some(3_000) });
    }

    #[test]
    fn the_backlog_limit_drops_the_old_head_only() {
        let (_dir, store) = open();
        let mut c = store.conn().unwrap();
        append(&mut c, &[chunk(1_000, 2), chunk(2_000, 3), chunk(5_000, 5), chunk(1_500, 7)]).unwrap();
        let state = drop_before(&mut c, 3_000).unwrap();
        assert_eq!(state, QueueState { removed: 5, removed_bytes: 6, head_ms: Some(5_000) });
        assert_eq!(summary(&c).unwrap(), QueueSummary { samples: 12, bytes: 6, head_ms: Some(5_000) });
        assert_eq!(drop_before(&mut c, 10).unwrap(), QueueState { head_ms: Some(5_000), ..QueueState::default() });
        remove_through(&mut c, i64::MAX).unwrap();
        assert_eq!(summary(&c).unwrap(), QueueSummary::default());
    }

    #[test]
    fn the_byte_limit_drops_the_oldest_behind_the_request_under_way() {
        let (_dir, store) = open();
        let mut c = store.conn().unwrap();
        append(&mut c, &[chunk(1_000, 1), chunk(2_000, 2), chunk(3_000, 3), chunk(4_000, 4)]).unwrap();
        let ids: Vec<i64> = oldest(&c, 100).unwrap().iter().map(|q| q.id).collect();
        let state = drop_bytes(&mut c, 4, Some(ids[0])).unwrap();
        assert_eq!(
            state,
            QueueState { removed: 5, removed_bytes: 6, head_ms: Some(1_000) },
            "whole chunks, 4 bytes asked"
        );
        let left: Vec<i64> = oldest(&c, 100).unwrap().iter().map(|q| q.chunk.ts_ms).collect();
        assert_eq!(left, [1_000, 4_000], "the request under way stays, the next oldest went");
        let state = drop_bytes(&mut c, 100, None).unwrap();
        assert_eq!((state.removed, state.removed_bytes, state.head_ms), (5, 6, None), "no more than the queue holds");
        assert_eq!(drop_bytes(&mut c, 1, None).unwrap(), QueueState::default());
    }
}
