//! SQLite's heap stays bounded however many pooled connections read a large database: each
//! connection would otherwise keep up to 2 MiB of cached pages, and the soak watched SQLite's
//! share of the process grow with the database (BENCHMARKS.md, issue 22, "Memory").
//! A test binary of its own: the figure is process-wide, so no other test may use SQLite
//! while this one reads it.

use zai_dash::store::Store;

/// Rows of about 1 KiB: 24 MiB of table, far more than the limit and than eight default caches.
const ROWS: i64 = 24 * 1024;

#[test]
fn eight_connections_reading_a_large_database_keep_sqlite_heap_near_its_soft_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let _store = Store::open(&path).unwrap();
    let setup = rusqlite::Connection::open(&path).unwrap();
    setup
        .execute_batch(
            "CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             BEGIN;",
        )
        .unwrap();
    let mut insert = setup.prepare("INSERT INTO filler (id, body) VALUES (?1, ?2)").unwrap();
    for id in 0..ROWS {
        insert.execute(rusqlite::params![id, format!("{id:0>1000}")]).unwrap();
    }
    drop(insert);
    setup.execute_batch("COMMIT;").unwrap();

    // Eight readers, each reading the whole table and kept open, as the pool keeps them.
    let readers: Vec<rusqlite::Connection> = (0..8).map(|_| rusqlite::Connection::open(&path).unwrap()).collect();
    for reader in &readers {
        let total: i64 = reader.query_row("SELECT SUM(LENGTH(body)) FROM filler", [], |r| r.get(0)).unwrap();
        assert_eq!(total, ROWS * 1000);
    }
    let used = Store::sqlite_heap_bytes();
    // The soft limit is 1 MiB; statements and schemas of nine connections come on top of it
    // (1.2 MiB in all when written; 4.0 with the earlier limit of 4 MiB).
    assert!(used < 2 << 20, "SQLite holds {:.1} MiB after eight full reads", used as f64 / 1_048_576.0);
    drop(readers);
}
