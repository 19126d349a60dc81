//! Schema and migrations, keyed on SQLite's `user_version`.
//!
//! Every row table stores its key once. Raw rows (written every tick) are keyed by time, then
//! target, in one integer (a rowid table whose rowid is `ts << 20 | target_id`,
//! `store::table::raw_key`): a tick appends at the end of the table, and readers scan a time
//! range once for every target. Open 1 min rows are keyed `(ts, target_id)` `WITHOUT ROWID` (a
//! minute's rows are appended together) with an index `(target_id, ts)` for readers by target;
//! open 10 min rows the same way since schema version 17 (keyed by target, a day's rows split
//! a page of every target at each 10 minutes late in the day).
//! A new file keeps no pointer map (`auto_vacuum` off): with `auto_vacuum = INCREMENTAL`, which
//! databases created before 2026-12-06 keep, every page a tick allocated or moved had its entry
//! rewritten in a pointer-map page, a sixth of the writer's pages (BENCHMARKS.md, "Write volume,
//! seventh stop"). An existing file is not rewritten without it: that is a `VACUUM`, a copy of
//! the whole file made before the server could answer, in a temporary directory that may not
//! hold it (64 MiB in the Kubernetes manifests); an operator can do it offline (README). Retention's freed pages are
//! reused by the next rows; the downsampler hands a large surplus back with a `VACUUM`.

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
    -- Scrape state journal: the values each scrape changed since the target's previous write,
    -- replayed after its checkpoint (targets.state) at start-up. Keyed by time first, so one
    -- tick's entries share pages instead of dirtying a page per target.
    CREATE TABLE state_log (
        ts        INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        data      BLOB NOT NULL,
        PRIMARY KEY (ts, target_id)
    ) WITHOUT ROWID;
",
    "
    -- Each alert's record (a rule applied to a variant): phase, episode times, last value and,
    -- per receiver, the last phase it acknowledged (JSON), so a restart neither re-notifies
    -- nor forgets.
    CREATE TABLE alerts (
        rule        TEXT NOT NULL,
        variant     TEXT NOT NULL,
        phase       TEXT NOT NULL,
        active_ms   INTEGER,
        fired_ms    INTEGER,
        resolved_ms INTEGER,
        value       REAL,
        severity    TEXT NOT NULL,
        metric      TEXT NOT NULL,
        notified    TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (rule, variant)
    ) WITHOUT ROWID;
    -- Every firing episode, for the charts' shading; to_ms is NULL while it fires.
    CREATE TABLE alert_periods (
        rule     TEXT NOT NULL,
        variant  TEXT NOT NULL,
        from_ms  INTEGER NOT NULL,
        to_ms    INTEGER,
        severity TEXT NOT NULL,
        metric   TEXT NOT NULL,
        PRIMARY KEY (rule, variant, from_ms)
    ) WITHOUT ROWID;
    CREATE INDEX alert_periods_by_start ON alert_periods (from_ms);
",
    "
    -- Raw rows keyed by time first: a tick's rows are appended together at the end of the
    -- table, a few pages per tick, instead of one row in the middle of each target's range
    -- (a page, often three with the rebalancing, per target per tick).
    CREATE TABLE metrics_5s_by_time (
        target_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (ts, target_id)
    ) WITHOUT ROWID;
    INSERT INTO metrics_5s_by_time (target_id, ts, variant_id, elapsed_ms, data)
        SELECT target_id, ts, variant_id, elapsed_ms, data FROM metrics_5s ORDER BY ts, target_id;
    DROP TABLE metrics_5s;
    ALTER TABLE metrics_5s_by_time RENAME TO metrics_5s;
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
    "
    -- The canary verdict of each (baseline, candidate) pair, judged once a minute; kept as long
    -- as the 1 min rows. `metrics` is a JSON object of each metric's classification.
    CREATE TABLE canary_history (
        ts        INTEGER NOT NULL,
        baseline  TEXT NOT NULL,
        candidate TEXT NOT NULL,
        verdict   TEXT NOT NULL,
        score     REAL,
        since     INTEGER NOT NULL,
        version   TEXT,
        metrics   TEXT NOT NULL,
        PRIMARY KEY (baseline, candidate, ts)
    ) WITHOUT ROWID;
",
    "
    -- Sealed raw rows: each target's rows of a complete window (rows of (start_ts, end_ts],
    -- ten rollup widths: 10 minutes) compressed into one chunk (store::chunk). Open rows stay in
    -- metrics_5s until their window is sealed; a row is in one table or the other. The index
    -- covers what scans and counts need without reading the blobs.
    CREATE TABLE metrics_5s_chunks (
        start_ts  INTEGER NOT NULL,
        end_ts    INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        first_ts  INTEGER NOT NULL,
        last_ts   INTEGER NOT NULL,
        rows      INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    CREATE INDEX metrics_5s_chunks_by_window
        ON metrics_5s_chunks (start_ts, target_id, end_ts, rows, first_ts, last_ts);
",
    "
    -- Sealed rolled rows (store::sealed): each target's 1 min rows of a complete hour, and its
    -- 10 min rows of a complete day, compressed into one chunk each, with each row's presence.
    -- As for raw rows, a row is in the table or in a chunk, never both. Rolled rows are read
    -- target by target, so these are indexed by target first. Rows already stored are sealed
    -- by the downsampler a few windows per run, not here.
    CREATE TABLE metrics_1m_chunks (
        start_ts  INTEGER NOT NULL,
        end_ts    INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        first_ts  INTEGER NOT NULL,
        last_ts   INTEGER NOT NULL,
        rows      INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    CREATE INDEX metrics_1m_chunks_by_target
        ON metrics_1m_chunks (target_id, start_ts, end_ts, rows, first_ts, last_ts);
    CREATE TABLE metrics_10m_chunks (
        start_ts  INTEGER NOT NULL,
        end_ts    INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        first_ts  INTEGER NOT NULL,
        last_ts   INTEGER NOT NULL,
        rows      INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    CREATE INDEX metrics_10m_chunks_by_target
        ON metrics_10m_chunks (target_id, start_ts, end_ts, rows, first_ts, last_ts);
",
    "
    -- Open 1 min rows keyed by time first, as raw rows are: a minute's rows of every target are
    -- appended together, a few pages a minute, instead of one row in each target's key range (a
    -- page each, and the splits: about 190 pages a minute at 100 targets). Reads by target use
    -- the index, whose entries are a few bytes: a minute's rows touch a few dozen of its pages.
    CREATE TABLE metrics_1m_by_time (
        target_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        present_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (ts, target_id)
    ) WITHOUT ROWID;
    INSERT INTO metrics_1m_by_time (target_id, ts, variant_id, elapsed_ms, data, present_ms)
        SELECT target_id, ts, variant_id, elapsed_ms, data, present_ms FROM metrics_1m ORDER BY ts, target_id;
    DROP TABLE metrics_1m;
    ALTER TABLE metrics_1m_by_time RENAME TO metrics_1m;
    CREATE INDEX metrics_1m_by_target ON metrics_1m (target_id, ts);
",
    "
    -- The scrape state journal as a rowid table without a key: each tick's entries are appended
    -- after the last page, which SQLite fills whole before starting the next, where a table
    -- keyed (ts, target_id) rebalanced the last pages on every split (about 10 pages a tick at
    -- 100 targets instead of 6). Its readers scan it whole anyway: it holds at most a few
    -- checkpoint intervals, and each target's entries are replayed in time order. A batch is
    -- committed once, so no entry is written twice.
    CREATE TABLE state_log_appended (
        ts        INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    INSERT INTO state_log_appended (ts, target_id, data) SELECT ts, target_id, data FROM state_log ORDER BY ts, target_id;
    DROP TABLE state_log;
    ALTER TABLE state_log_appended RENAME TO state_log;
",
    "
    -- Raw rows in a rowid table whose rowid is the key, ts << 20 | target_id (store::table::
    -- raw_key): rows still sort by time, then target, and a tick's rows appended in key order
    -- fill the last page and start a new one, where the (ts, target_id) WITHOUT ROWID b-tree
    -- rebalanced the last pages with their neighbours at every split (about a third more pages
    -- written). ts and target_id stay readable as columns computed from the key (not stored);
    -- every statement of the store filters and orders on ts_target itself. A row whose target
    -- or time the key cannot hold fails the migration (NOT NULL) rather than being lost.
    CREATE TABLE metrics_5s_keyed (
        ts_target  INTEGER PRIMARY KEY,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        ts         INTEGER GENERATED ALWAYS AS (ts_target >> 20) VIRTUAL,
        target_id  INTEGER GENERATED ALWAYS AS (ts_target & 1048575) VIRTUAL
    );
    INSERT INTO metrics_5s_keyed (ts_target, variant_id, elapsed_ms, data)
        SELECT (ts << 20) | target_id, variant_id, elapsed_ms,
               CASE WHEN target_id BETWEEN 0 AND 1048575 AND ts BETWEEN -8796093022208 AND 8796093022207
                    THEN data END
        FROM metrics_5s ORDER BY ts, target_id;
    DROP TABLE metrics_5s;
    ALTER TABLE metrics_5s_keyed RENAME TO metrics_5s;
",
    "
    -- The scrape state journal in two generations (store::journal): entries are appended to the
    -- current one (meta journal_generation), and the other is emptied whole once every target's
    -- checkpoint covers it, then becomes the current one. Emptying a table whole frees its pages
    -- without writing them; deleting a prefix of one table rewrote every page it emptied (about
    -- an eighth of all pages written at 100 targets). Readers read both through the view.
    CREATE TABLE state_log_0 (
        ts        INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    CREATE TABLE state_log_1 (
        ts        INTEGER NOT NULL,
        target_id INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    INSERT INTO state_log_0 (ts, target_id, data) SELECT ts, target_id, data FROM state_log ORDER BY rowid;
    DROP TABLE state_log;
    CREATE VIEW state_log AS
        SELECT ts, target_id, data FROM state_log_0 UNION ALL SELECT ts, target_id, data FROM state_log_1;
    INSERT INTO meta (key, value) VALUES ('journal_generation', 0) ON CONFLICT(key) DO NOTHING;
",
    "
    -- Open raw rows in two generations (store::table::raw_table): the rows of the 10-minute
    -- window (k * 600 s, (k + 1) * 600 s] go to metrics_5s_<k mod 2>, so when the raw seal moves
    -- window k into chunks its table holds only that window and is emptied whole, which frees
    -- its pages without writing them; a DELETE of the window's key range wrote every page it
    -- emptied (the largest share of the downsampler's writes). metrics_5s stays readable as a
    -- view over both. The rows moved are the open ones, about one window (the rest is sealed).
    CREATE TABLE metrics_5s_0 (
        ts_target  INTEGER PRIMARY KEY,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        ts         INTEGER GENERATED ALWAYS AS (ts_target >> 20) VIRTUAL,
        target_id  INTEGER GENERATED ALWAYS AS (ts_target & 1048575) VIRTUAL
    );
    CREATE TABLE metrics_5s_1 (
        ts_target  INTEGER PRIMARY KEY,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        ts         INTEGER GENERATED ALWAYS AS (ts_target >> 20) VIRTUAL,
        target_id  INTEGER GENERATED ALWAYS AS (ts_target & 1048575) VIRTUAL
    );
    -- The generation of a row: floor((ts - 1) / 600000) mod 2, as raw_table computes it
    -- (SQLite's / truncates toward zero, hence the case for times before 1970).
    CREATE TEMP VIEW raw_generation AS
        SELECT ts_target, variant_id, elapsed_ms, data,
               ((CASE WHEN ts >= 1 THEN (ts - 1) / 600000 ELSE -((-ts) / 600000) - 1 END) % 2 + 2) % 2 AS generation
        FROM metrics_5s;
    INSERT INTO metrics_5s_0 (ts_target, variant_id, elapsed_ms, data)
        SELECT ts_target, variant_id, elapsed_ms, data FROM raw_generation WHERE generation = 0 ORDER BY ts_target;
    INSERT INTO metrics_5s_1 (ts_target, variant_id, elapsed_ms, data)
        SELECT ts_target, variant_id, elapsed_ms, data FROM raw_generation WHERE generation = 1 ORDER BY ts_target;
    DROP VIEW raw_generation;
    DROP TABLE metrics_5s;
    CREATE VIEW metrics_5s AS
        SELECT ts_target, variant_id, elapsed_ms, data, ts, target_id FROM metrics_5s_0
        UNION ALL SELECT ts_target, variant_id, elapsed_ms, data, ts, target_id FROM metrics_5s_1;
",
    "
    -- A raw row carries its target's state journal entry of the same tick (store::query::
    -- upsert_raw_row): one row per target and tick instead of a row and a journal entry in two
    -- b-trees. state_lag is the row's time minus the entry's key; entries a checkpoint does not
    -- cover yet move to state_log_<g> before their row is sealed. Existing rows carry none.
    ALTER TABLE metrics_5s_0 ADD COLUMN state_lag INTEGER;
    ALTER TABLE metrics_5s_0 ADD COLUMN state_entry BLOB;
    ALTER TABLE metrics_5s_1 ADD COLUMN state_lag INTEGER;
    ALTER TABLE metrics_5s_1 ADD COLUMN state_entry BLOB;
",
    "
    -- Open 10 min rows keyed by time first, as the 1 min rows since schema version 10: keyed
    -- (target_id, ts), each 10 minutes' rows went one to a target's last page, and as a day's
    -- rows (sealed by the day) filled more pages each, most of them split a full page and
    -- rebalanced it with its neighbours: 366 pages per target-day late in the day at 100
    -- targets, against 165 in its first hours (BENCHMARKS.md, 'Write volume, eleventh stop').
    -- Reads by target use the index.
    CREATE TABLE metrics_10m_by_time (
        target_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        variant_id INTEGER NOT NULL,
        elapsed_ms INTEGER NOT NULL,
        data       BLOB NOT NULL,
        present_ms INTEGER NOT NULL,
        PRIMARY KEY (ts, target_id)
    ) WITHOUT ROWID;
    INSERT INTO metrics_10m_by_time (target_id, ts, variant_id, elapsed_ms, data, present_ms)
        SELECT target_id, ts, variant_id, elapsed_ms, data, present_ms FROM metrics_10m ORDER BY ts, target_id;
    DROP TABLE metrics_10m;
    ALTER TABLE metrics_10m_by_time RENAME TO metrics_10m;
    CREATE INDEX metrics_10m_by_target ON metrics_10m (target_id, ts);
",
    "
    -- Rows are written in payload format 3 from here on (store::codec: zai-proxy's bucket
    -- bounds and quota limit types named by index, short decimals packed). A build before this
    -- schema version cannot read them, so the version moves: such a build refuses the database
    -- ('upgrade zai-dash') instead of failing on every new row. Nothing is rewritten; rows of
    -- formats 1 and 2 stay and are read as they are.
    INSERT INTO meta (key, value) VALUES ('payload_format', 3)
        ON CONFLICT(key) DO UPDATE SET value = excluded.value;
",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Applies every missing migration, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.try_into().unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "its schema version {current} is newer than this zai-dash's ({SCHEMA_VERSION}); upgrade zai-dash"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        if sql.contains(RAW_KEY_MIGRATION) {
            check_raw_rows_fit_the_key(conn)?;
        }
        let tx = super::write_transaction(conn)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// A word only the migration to the raw table's integer key contains.
const RAW_KEY_MIGRATION: &str = "metrics_5s_keyed";

/// Before the raw table is re-keyed by `ts << 20 | target_id`: a row whose target id or time
/// the key cannot hold would stop that migration with SQLite's "NOT NULL constraint failed";
/// this says instead which rows and what to do, and nothing has been changed yet.
fn check_raw_rows_fit_the_key(conn: &Connection) -> Result<(), StoreError> {
    let (beyond, max_id): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), max(target_id) FROM metrics_5s
         WHERE target_id NOT BETWEEN 0 AND 1048575 OR ts NOT BETWEEN -8796093022208 AND 8796093022207",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if beyond == 0 {
        return Ok(());
    }
    Err(StoreError::Schema(format!(
        "{beyond} of the raw 5 s rows cannot be carried over to schema version 13, whose rows are keyed by \
         a target id up to 1048575 (highest here: {}); the file was left as it is. Start with a new \
         DB_PATH, or delete those rows (`DELETE FROM metrics_5s WHERE target_id > 1048575`) \
         with zai-dash stopped and start it again",
        max_id.unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the migrations before the first whose SQL contains `marker` and sets
    /// `user_version` to match: the database as the build before that migration left it.
    /// Returns that migration's index.
    fn schema_before(c: &Connection, marker: &str) -> usize {
        let before = MIGRATIONS.iter().position(|m| m.contains(marker)).expect("a migration contains the marker");
        for sql in &MIGRATIONS[..before] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", before as i64).unwrap();
        before
    }

    /// A new payload format comes with a schema version that records it, so the builds that
    /// cannot read it refuse the database rather than fail on its rows.
    #[test]
    fn the_schema_version_records_the_payload_format_written() {
        let mut c = Connection::open_in_memory().unwrap();
        let before = schema_before(&c, "'payload_format'");
        c.execute_batch("INSERT INTO meta (key, value) VALUES ('payload_format', 2)").unwrap();
        migrate(&mut c).unwrap();
        let format: i64 = c.query_row("SELECT value FROM meta WHERE key = 'payload_format'", [], |r| r.get(0)).unwrap();
        assert_eq!(format, i64::from(crate::store::codec::VERSION), "a migration records the format written now");
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert!(v as usize > before);
        // The build before that migration refuses the database.
        c.pragma_update(None, "user_version", (SCHEMA_VERSION + 1) as i64).unwrap();
        let refused = migrate(&mut c).unwrap_err().to_string();
        assert!(refused.contains("upgrade zai-dash"), "{refused}");
    }

    #[test]
    fn migrates_once_without_a_pointer_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, SCHEMA_VERSION);
        let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(av, 0, "no pointer map");
    }

    #[test]
    fn a_database_with_a_pointer_map_keeps_it_and_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut c = Connection::open(&path).unwrap();
        // As builds before this one created it: incremental vacuum set before the first table.
        c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA auto_vacuum = INCREMENTAL; VACUUM;").unwrap();
        schema_before(&c, "metrics_5s_keyed");
        for (target, ts) in [(2, 5_000), (1, 10_000)] {
            c.execute(
                "INSERT INTO metrics_5s (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, 1, 5000, x'07')",
                [target, ts],
            )
            .unwrap();
        }
        c.execute("INSERT INTO state_log (ts, target_id, data) VALUES (5000, 2, x'01')", []).unwrap();
        let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(av, 2, "the old layout");
        migrate(&mut c).unwrap();
        let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(av, 2, "not rewritten at start: its incremental vacuum goes on working");
        let rows: Vec<(i64, i64, Vec<u8>)> = c
            .prepare("SELECT ts, target_id, data FROM metrics_5s ORDER BY ts_target")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(5_000, 2, vec![7]), (10_000, 1, vec![7])]);
        let journal: i64 = c.query_row("SELECT count(*) FROM state_log", [], |r| r.get(0)).unwrap();
        assert_eq!(journal, 1);
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, SCHEMA_VERSION);
    }

    #[test]
    fn raw_rows_written_before_the_time_keyed_layout_are_kept() {
        let mut c = Connection::open_in_memory().unwrap();
        schema_before(&c, "metrics_5s_by_time");
        for (target, ts) in [(2, 5_000), (1, 10_000), (1, 5_000)] {
            c.execute(
                "INSERT INTO metrics_5s (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, 1, 5000, x'01')",
                [target, ts],
            )
            .unwrap();
        }
        migrate(&mut c).unwrap();
        let mut stmt = c.prepare("SELECT ts, target_id FROM metrics_5s").unwrap();
        let keys: Vec<(i64, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(keys, vec![(5_000, 1), (5_000, 2), (10_000, 1)], "every row, in time order");
    }

    /// A database at the schema before the integer-keyed raw table, with raw rows `(target, ts)`.
    fn before_integer_key(rows: &[(i64, i64)]) -> (Connection, usize) {
        let c = Connection::open_in_memory().unwrap();
        let before = schema_before(&c, "metrics_5s_keyed");
        for &(target, ts) in rows {
            c.execute(
                "INSERT INTO metrics_5s (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, 3, 4000, ?3)",
                rusqlite::params![target, ts, format!("{target}@{ts}").into_bytes()],
            )
            .unwrap();
        }
        (c, before)
    }

    #[test]
    fn raw_rows_written_before_the_integer_key_are_kept_under_it() {
        let (mut c, _) = before_integer_key(&[(2, 5_000), (1, 10_000), (1_048_575, 5_000), (1, 5_000), (7, -5_000)]);
        migrate(&mut c).unwrap();
        let mut stmt = c
            .prepare("SELECT ts_target, ts, target_id, variant_id, elapsed_ms, data FROM metrics_5s ORDER BY ts_target")
            .unwrap();
        let rows: Vec<(i64, i64, i64, i64, i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let keys: Vec<(i64, i64)> = rows.iter().map(|r| (r.1, r.2)).collect();
        assert_eq!(
            keys,
            vec![(-5_000, 7), (5_000, 1), (5_000, 2), (5_000, 1_048_575), (10_000, 1)],
            "every row, in time then target order"
        );
        for (key, ts, target, variant, elapsed, data) in rows {
            assert_eq!(key, super::super::table::raw_key(ts, target).unwrap());
            assert_eq!((variant, elapsed, data), (3, 4000, format!("{target}@{ts}").into_bytes()));
        }
        for table in super::super::table::RAW_TABLES {
            let rowid_table: i64 =
                c.query_row(&format!("SELECT count(*) FROM pragma_index_list('{table}')"), [], |r| r.get(0)).unwrap();
            assert_eq!(rowid_table, 0, "the rowid is the key: no other b-tree");
            // A time range (as `sealed::scan` reads each generation) is one range of the rowid,
            // in key order without a sort.
            let plan: Vec<String> = c
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT ts, target_id, data FROM {table}
                     WHERE (?3 IS NULL OR target_id = ?3) AND ts_target > ?1 AND ts_target <= ?2 ORDER BY ts_target"
                ))
                .unwrap()
                .query_map([0, 1, 2], |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(plan.iter().any(|p| p.contains("INTEGER PRIMARY KEY (rowid>? AND rowid<?)")), "{plan:?}");
            assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        }
    }

    #[test]
    fn a_raw_row_the_integer_key_cannot_hold_stops_the_migration_instead_of_being_lost() {
        let (mut c, before) = before_integer_key(&[(1, 5_000), (1 << 20, 5_000)]);
        let said = migrate(&mut c).unwrap_err().to_string();
        assert!(said.starts_with("cannot use the database: 1 of the raw 5 s rows cannot be carried over"), "{said}");
        assert!(said.contains("highest here: 1048576") && said.contains("new DB_PATH"), "{said}");
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, before, "nothing migrated");
        let n: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2, "the rows are where they were");
    }

    #[test]
    fn minute_rows_written_before_the_time_keyed_layout_are_kept_and_read_by_target_through_the_index() {
        rows_before_the_time_keyed_layout_are_kept_and_read_by_target_through_the_index("metrics_1m", 60_000);
    }

    #[test]
    fn ten_minute_rows_written_before_the_time_keyed_layout_are_kept_and_read_by_target_through_the_index() {
        rows_before_the_time_keyed_layout_are_kept_and_read_by_target_through_the_index("metrics_10m", 600_000);
    }

    /// A rolled table keyed by target before its `{table}_by_time` migration: every row is kept,
    /// in time order; a read of one target's range (as `sealed::scan` makes it) seeks the
    /// `{table}_by_target` index, not the table; a read of every target's reads the table in its
    /// own order, without a sort.
    fn rows_before_the_time_keyed_layout_are_kept_and_read_by_target_through_the_index(table: &str, width: i64) {
        let mut c = Connection::open_in_memory().unwrap();
        schema_before(&c, &format!("{table}_by_time"));
        for (target, ts, present) in [(2, width, 7), (1, 2 * width, 0), (1, width, width)] {
            c.execute(
                &format!(
                    "INSERT INTO {table} (target_id, ts, variant_id, elapsed_ms, data, present_ms)
                     VALUES (?1, ?2, 1, {width}, x'01', ?3)"
                ),
                [target, ts, present],
            )
            .unwrap();
        }
        migrate(&mut c).unwrap();
        let mut stmt = c.prepare(&format!("SELECT ts, target_id, present_ms FROM {table}")).unwrap();
        let rows: Vec<(i64, i64, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(rows, vec![(width, 1, width), (width, 2, 7), (2 * width, 1, 0)], "every row, in time order");
        let plan = |sql: &str| -> Vec<String> {
            let sql = format!("EXPLAIN QUERY PLAN {sql}");
            c.prepare(&sql).unwrap().query_map([0, 1, 2], |r| r.get(3)).unwrap().map(Result::unwrap).collect()
        };
        let one = plan(&format!(
            "SELECT ts, target_id, variant_id, elapsed_ms, data, present_ms FROM {table}
             WHERE target_id = ?3 AND ts > ?1 AND ts <= ?2 ORDER BY ts, target_id"
        ));
        assert!(one.iter().any(|p| p.contains(&format!("USING INDEX {table}_by_target"))), "{one:?}");
        let all = plan(&format!(
            "SELECT ts, target_id, variant_id, elapsed_ms, data, present_ms FROM {table}
             WHERE ts > ?1 AND ts <= ?2 AND ?3 = ?3 ORDER BY ts, target_id"
        ));
        assert!(!all.iter().any(|p| p.contains("TEMP B-TREE")), "{all:?}");
    }

    #[test]
    fn journal_entries_written_before_the_appended_layout_are_kept() {
        let mut c = Connection::open_in_memory().unwrap();
        schema_before(&c, "state_log_appended");
        for (target, ts) in [(2, 5_000), (1, 10_000), (1, 5_000)] {
            c.execute("INSERT INTO state_log (ts, target_id, data) VALUES (?1, ?2, x'01')", [ts, target]).unwrap();
        }
        migrate(&mut c).unwrap();
        let mut stmt = c.prepare("SELECT ts, target_id FROM state_log_0 ORDER BY rowid").unwrap();
        let keys: Vec<(i64, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(keys, vec![(5_000, 1), (5_000, 2), (10_000, 1)], "every entry, appended in time order");
        for table in ["state_log_0", "state_log_1"] {
            let indexes: i64 =
                c.query_row(&format!("SELECT count(*) FROM pragma_index_list('{table}')"), [], |r| r.get(0)).unwrap();
            assert_eq!(indexes, 0, "no key to rebalance");
        }
        let in_view: i64 = c.query_row("SELECT count(*) FROM state_log", [], |r| r.get(0)).unwrap();
        assert_eq!(in_view, 3, "the view reads both generations");
        let current: i64 =
            c.query_row("SELECT value FROM meta WHERE key = 'journal_generation'", [], |r| r.get(0)).unwrap();
        assert_eq!(current, 0, "entries carried over are the current generation");
    }

    #[test]
    fn raw_rows_written_before_the_generations_are_kept_each_in_its_generation() {
        use super::super::table::{RAW_TABLES, raw_key, raw_table};
        let mut c = Connection::open_in_memory().unwrap();
        schema_before(&c, "CREATE TABLE metrics_5s_0");
        // Both edges of windows, either side of 1970, and the last key.
        let times = [1, 600_000, 600_001, 1_200_000, 1_200_001, 0, -599_999, -600_000, -600_001, -1_200_000];
        let mut expected = Vec::new();
        for (i, ts) in times.into_iter().enumerate() {
            let key = raw_key(ts, i as i64).unwrap();
            c.execute(
                "INSERT INTO metrics_5s (ts_target, variant_id, elapsed_ms, data) VALUES (?1, 2, 5000, ?2)",
                rusqlite::params![key, format!("row {i}").into_bytes()],
            )
            .unwrap();
            expected.push((raw_table(ts).to_owned(), key, ts, i as i64, format!("row {i}").into_bytes()));
        }
        migrate(&mut c).unwrap();
        let mut found = Vec::new();
        for table in RAW_TABLES {
            let mut stmt =
                c.prepare(&format!("SELECT ts_target, ts, target_id, data FROM {table} ORDER BY ts_target")).unwrap();
            let rows = stmt.query_map([], |r| Ok((table.to_owned(), r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)));
            found.extend(rows.unwrap().map(Result::unwrap));
        }
        expected.sort();
        found.sort();
        assert_eq!(found, expected, "every row, in the generation its time gives");
        assert!(RAW_TABLES.iter().all(|t| found.iter().any(|f| f.0 == *t)), "both generations used");
        let in_view: Vec<i64> = c
            .prepare("SELECT ts FROM metrics_5s ORDER BY ts_target")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut times = times.to_vec();
        times.sort();
        assert_eq!(in_view, times, "the view reads both");
        let kind: String =
            c.query_row("SELECT type FROM sqlite_schema WHERE name = 'metrics_5s'", [], |r| r.get(0)).unwrap();
        assert_eq!(kind, "view");
    }

    #[test]
    fn rows_and_journal_entries_written_before_raw_rows_carried_entries_are_kept() {
        use super::super::query;
        use super::super::table::{raw_key, raw_table};
        let mut c = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS.iter().position(|m| m.contains("ADD COLUMN state_entry")).unwrap();
        for sql in &MIGRATIONS[..before] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", before as i64).unwrap();
        c.execute("INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (1, 'a', 'p', 0)", []).unwrap();
        for ts in [5_000, 600_005] {
            c.execute(
                &format!(
                    "INSERT INTO {} (ts_target, variant_id, elapsed_ms, data) VALUES (?1, 2, 5000, x'07')",
                    raw_table(ts)
                ),
                [raw_key(ts, 1).unwrap()],
            )
            .unwrap();
        }
        c.execute("INSERT INTO state_log_0 (ts, target_id, data) VALUES (4_000, 1, x'01')", []).unwrap();
        migrate(&mut c).unwrap();
        let rows: Vec<(i64, Option<Vec<u8>>)> = c
            .prepare("SELECT ts, state_entry FROM metrics_5s_0 UNION ALL SELECT ts, state_entry FROM metrics_5s_1 ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(5_000, None), (600_005, None)], "every row, carrying no entry");
        let data: Vec<u8> = c.query_row("SELECT data FROM metrics_5s WHERE ts = 5000", [], |r| r.get(0)).unwrap();
        assert_eq!(data, vec![7]);
        assert_eq!(query::pending_journals(&c).unwrap().get(&1), Some(&vec![(4_000, vec![1])]), "the journal kept");
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, SCHEMA_VERSION);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        assert!(migrate(&mut c).unwrap_err().to_string().contains("newer"));
    }
}
