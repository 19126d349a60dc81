//! Schema and migrations, keyed on SQLite's `user_version`.
//!
//! Rows are keyed `(target_id, ts)` in `WITHOUT ROWID` tables, so the key is stored once and
//! every access pattern (a target's range, its latest row, retention per target) is a range
//! scan of the primary key; no secondary index is needed. `auto_vacuum = INCREMENTAL` is set
//! before the first table exists, so retention can hand freed pages back to the file system.

use rusqlite::Connection;

use super::StoreError;

/// Migrations in order; entry `i` brings `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE targets (
        id            INTEGER PRIMARY KEY,
        url           TEXT NOT NULL UNIQUE,
        variant       TEXT NOT NULL,
        state         TEXT,
        state_ms      INTEGER,
        first_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE variants (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE metrics_5s (
        target_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (target_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE metrics_1m (
        target_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (target_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
",
    "
    -- How long each pod was present in a rolled minute (time-weighted gauges); 0 in rows
    -- rolled before this column existed (read as min(elapsed, width)).
    ALTER TABLE metrics_1m ADD COLUMN present_ms INTEGER NOT NULL DEFAULT 0;
    -- Each target's latest running totals (encoded), so a pod whose rows aged out still counts
    -- in the cumulative fields.
    ALTER TABLE targets ADD COLUMN totals BLOB;
    -- Things that happened, for the live stream and chart markers (a version change, ...).
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        ts      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        variant TEXT NOT NULL,
        target  TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (ts);
    -- Dashboard sessions signed out before they expired (logout revokes across restarts).
    CREATE TABLE revoked_sessions (
        id         TEXT PRIMARY KEY,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
",
    "
    -- 10-minute rollups of the 1-minute rows, for ranges over a day.
    CREATE TABLE metrics_10m (
        target_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        present_ms INTEGER NOT NULL,
        PRIMARY KEY (target_id, ts)
    ) WITHOUT ROWID;
",
    "
    -- Remote write: each scrape's encoded series until a receiver took them (or the backlog
    -- limit dropped them). The rowid is the shipping order; only the head is ever removed.
    CREATE TABLE remote_queue (
        id      INTEGER PRIMARY KEY,
        ts      INTEGER NOT NULL,
        samples INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Applies every missing migration, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.try_into().unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Sqlite(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this zai-dash ({SCHEMA_VERSION}); upgrade zai-dash"
        ))));
    }
    if current == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_sets_incremental_vacuum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, SCHEMA_VERSION);
        let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(av, 2, "incremental");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        assert!(migrate(&mut c).unwrap_err().to_string().contains("newer"));
    }
}
