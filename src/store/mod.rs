//! SQLite storage: `metrics_5s` (raw points), `metrics_1m` and `metrics_10m` (rollups), each
//! with its `_chunks` table of sealed rows ([`sealed`]), `targets` (per-target
//! state for restart safety), `variants`, `meta` (the rollup watermark), the alerts' records and
//! firing periods (`alerts`, `alert_periods`) and `remote_queue` (samples waiting for a remote
//! write receiver).
//!
//! SQLite is synchronous, so every access goes through [`Store::with_conn`], which runs on the
//! blocking pool with a pooled connection and never holds it across an `.await`. One writer
//! task owns all inserts ([`write`]); readers run concurrently thanks to WAL.

pub(crate) mod alerts;
pub mod cache;
pub mod canary_log;
pub(crate) mod chunk;
pub mod codec;
pub mod downsample;
pub(crate) mod figures;
pub(crate) mod held;
pub mod query;
pub mod range;
pub(crate) mod remote_queue;
pub(crate) mod schema;
pub(crate) mod sealed;
pub(crate) mod sessions;
pub(crate) mod settings;
pub mod source;
pub(crate) mod startup;
pub(crate) mod table;
pub(crate) mod window;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

pub use crate::ports::ingest::WriteBatch;
pub use figures::DbFigures;
pub(crate) use settings::StoreSettings;
pub use write::{WriteQueue, WriterStats};

/// A storage failure. SQLite's own text is kept (for example "database or disk is full").
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be taken from the pool in time.
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// SQLite refused a statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task died.
    #[error("database task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A stored row could not be decoded.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// A stored target state could not be decoded.
    #[error("target state: {0}")]
    State(#[from] serde_json::Error),
    /// A target registered beyond the ids a raw row's key holds (`table::RAW_TARGET_BITS`):
    /// refused at registration, so that target is not scraped, rather than every later batch
    /// failing on its rows.
    #[error(
        "target id {0} is beyond the {max} targets one database can hold (every URL ever scraped, discovered pods included, has its own); start with a new DB_PATH",
        max = table::RAW_TARGET_MASK
    )]
    TooManyTargets(i64),
    /// The file cannot be brought to this build's schema: a newer build's file, or rows an
    /// upgrade cannot carry over. Said before anything is changed.
    #[error("cannot use the database: {0}")]
    Schema(String),
}

impl StoreError {
    /// Why a write failed, as one sentence an operator can act on. `/healthz` (open to anyone
    /// who can reach the port) and every page show it, so it never carries a path, SQL or
    /// SQLite's own text; the log line of the failure has those.
    pub(crate) fn write_failure(&self) -> &'static str {
        use rusqlite::ErrorCode as Code;
        match self {
            StoreError::Sqlite(e) => match e.sqlite_error_code() {
                Some(Code::DiskFull) => "The disk holding the database is full.",
                Some(Code::ReadOnly) => "The database file or its file system is read-only.",
                Some(Code::SystemIoFailure) => "The disk reported an I/O error while writing the database.",
                Some(Code::DatabaseBusy | Code::DatabaseLocked) => {
                    "Another process kept the database locked for longer than the 5 s busy timeout."
                }
                Some(Code::PermissionDenied | Code::CannotOpen) => "The database file cannot be opened for writing.",
                Some(Code::DatabaseCorrupt | Code::NotADatabase) => "The database file is damaged.",
                _ => "SQLite refused the write.",
            },
            StoreError::Pool(_) => "No database connection could be opened within 5 s.",
            StoreError::Join(_) => "The database task failed.",
            StoreError::Codec(_) | StoreError::State(_) => "A stored row could not be read back.",
            StoreError::TooManyTargets(_) => "The database holds as many targets as it can; start with a new DB_PATH.",
            StoreError::Schema(_) => "The database file's schema cannot be used by this build.",
        }
    }
}

/// Pooled access to the database file.
#[derive(Clone, Debug)]
pub struct Store {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
    cache: std::sync::Arc<cache::PointCache>,
    /// Canary evidence folded so far per rollout (`ports::judge_cache`), dropped with the
    /// point cache's generation.
    judged: std::sync::Arc<crate::ports::judge_cache::JudgeCache>,
    /// End of the newest bucket the writer has committed (batches commit in bucket order).
    committed: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Batches waiting to be written (the writer's backlog), which reads add to stored rows.
    held: std::sync::Arc<held::Held>,
    /// Jobs that found every pooled connection busy, and how long they waited.
    waits: std::sync::Arc<PoolWaits>,
}

/// Jobs that found all of the pool's connections busy and waited for one (`/metrics`:
/// `zai_dash_sqlite_pool_waits_total`, `zai_dash_sqlite_pool_wait_seconds_total`).
///
/// Why counted: every write transaction takes the write lock at `BEGIN` and may wait up to the
/// busy timeout for it while holding its connection, so a slow seal under load can leave the
/// pool without an idle connection; a read then waits too, and a dashboard's newest bucket
/// shows late. Without these counters that wait looks like any other slowness.
#[derive(Debug, Default)]
pub struct PoolWaits {
    waited: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
}

impl PoolWaits {
    /// Jobs that waited, and the seconds they waited in all.
    pub fn totals(&self) -> (u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.waited.load(Relaxed), self.micros.load(Relaxed) as f64 / 1e6)
    }

    /// A connection of `pool`: an idle one at once, else the first one released (counted, with
    /// the time it took; up to the pool's 5 s timeout, then the error).
    fn checkout(
        &self,
        pool: &r2d2::Pool<SqliteConnectionManager>,
    ) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(conn) = pool.try_get() {
            return Ok(conn);
        }
        let started = std::time::Instant::now();
        let got = pool.get();
        self.waited.fetch_add(1, Relaxed);
        self.micros.fetch_add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Relaxed);
        Ok(got?)
    }
}

/// Idle connections a long read leaves in the pool when it takes more for its parts
/// ([`cache::read_fresh`]): the writer's next batch and another reader still find one at once.
const SPARE_CONNECTIONS: u32 = 2;

/// A connection for a part of a read of `buckets` buckets: only for a read long enough to be
/// split ([`cache::SPLIT_BUCKETS`]), only an idle one (never a wait for it), and only while
/// more than [`SPARE_CONNECTIONS`] are idle.
fn part_connection(
    pool: &r2d2::Pool<SqliteConnectionManager>,
    buckets: i64,
) -> Option<r2d2::PooledConnection<SqliteConnectionManager>> {
    let spare = pool.state().idle_connections > SPARE_CONNECTIONS;
    (buckets >= cache::SPLIT_BUCKETS && spare).then(|| pool.try_get()).flatten()
}

/// Connection settings applied to every pooled connection: WAL so readers never block the
/// writer, a busy timeout instead of immediate SQLITE_BUSY, and NORMAL sync, which in WAL mode
/// is durable across process crashes (only an OS crash can lose the last transactions).
///
/// The WAL is copied into the file (checkpointed) once it holds [`WAL_CHECKPOINT_PAGES`]
/// pages instead of SQLite's 1,000: a checkpoint copies each page the WAL holds once, however
/// often it changed meanwhile. At 100 targets the checkpoints copied 925 pages per target-day
/// every 10,000 pages (the fifth stop's setting), 352 of them open raw rows' leaves
/// (BENCHMARKS.md, "Write volume, eleventh stop"): the seal frees a window's pages and the next
/// windows reuse them, so the same few thousand pages cycle through the WAL and are copied
/// again at every checkpoint, although the seal soon frees them again. Every 20,000 pages
/// copies them half as often: 1.4 MB less written per target-day at 100 targets over 26
/// simulated hours (1.6 MB by the pages counted over 4 h). The price is the WAL's size on
/// disk: about 80 MB at the default 4 KiB page, kept at that size between checkpoints and
/// reused (and read in full at start-up after a kill, which rebuilds its index);
/// `journal_size_limit` truncates it back to [`WAL_KEPT_BYTES`] after a checkpoint if a long
/// read made it grow further. Durability does not change: every commit is in the WAL either
/// way.
const CONNECTION_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;
     PRAGMA wal_autocheckpoint = 20000; PRAGMA journal_size_limit = 100663296;";

/// Begins a transaction that writes, taking the database's write lock at `BEGIN`.
///
/// A deferred transaction (rusqlite's default) takes only a read snapshot at its first read and
/// asks for the write lock at its first write. If another connection writes in between, SQLite
/// cannot upgrade the snapshot and fails the write with `SQLITE_BUSY` at once, without waiting
/// out the busy timeout: every transaction here reads (watermarks, sealed bounds, existing rows)
/// before it writes, so the writer, the downsampler, the sealer and the alert engine failed one
/// another's transactions whenever they met, and the health board reported "locked for longer
/// than the busy timeout" after a wait that never happened. `BEGIN IMMEDIATE` waits for the lock
/// under the busy timeout instead, so `SQLITE_BUSY` means what its message says.
pub(crate) fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Pages the WAL may hold before a commit copies it into the file (`wal_autocheckpoint` above).
#[cfg(test)]
const WAL_CHECKPOINT_PAGES: i64 = 20_000;

/// Bytes the WAL file is truncated to after a checkpoint when it grew past them (96 MiB, one
/// interval of 4 KiB pages with their frame headers and room for the transaction that crossed
/// it; `journal_size_limit` above).
#[cfg(test)]
const WAL_KEPT_BYTES: i64 = 96 << 20;

/// The heap SQLite may keep in this process, all connections together, before it recycles
/// cached pages instead of growing (`sqlite3_soft_heap_limit64`). Each of the pool's eight
/// connections would otherwise keep up to 2 MiB of pages (SQLite's default cache), and the
/// soak watched that grow from 2.6 to 7.5 MiB over its first eleven minutes as the database
/// grew. Pages evicted are re-read from the OS page cache, which reads hit anyway after a
/// restart; the point cache above SQLite keeps what charts re-read.
///
/// 1 MiB, not the 4 it was: side by side (BENCHMARKS.md, "Memory, seventeenth stop"), RSS
/// fell 3.5 MiB at 100 targets and 2.3 at 500, and neither the CPU per scrape nor the first
/// requests of an hour or a week moved beyond the machine's noise. Why, as far as those runs
/// show: the writer appends (a raw row's key is its time first, `table::raw_key`), so the pages
/// it needs again are the few newest leaves; the bench's cold reads start with SQLite's cache
/// dropped, so they never used it; and long reads of a few targets go through a mapping of the
/// file (`cache::Mapped`). The
/// connections' statements and schemas take about 1 MiB themselves, so SQLite runs at the
/// limit: the bundled build has `SQLITE_ENABLE_MEMORY_MANAGEMENT`, so it frees unpinned cached
/// pages as it allocates, and the page cache holds little beyond what statements are using.
const SQLITE_SOFT_HEAP_LIMIT: i64 = 1 << 20;

impl Store {
    /// Opens (creating if needed) the database and brings the schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // SAFETY: sets SQLite's process-wide soft limit, under its own mutex; callable any time.
        unsafe { rusqlite::ffi::sqlite3_soft_heap_limit64(SQLITE_SOFT_HEAP_LIMIT) };
        let manager = SqliteConnectionManager::file(path).with_init(|c| c.execute_batch(CONNECTION_PRAGMAS));
        let pool = r2d2::Pool::builder().max_size(8).connection_timeout(Duration::from_secs(5)).build(manager)?;
        let committed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
        schema::migrate(&mut *pool.get()?)?;
        let (cache, held, judged, waits) = Default::default();
        Ok(Self { pool, path: path.to_path_buf(), cache, judged, committed, held, waits })
    }

    /// Records that the batch of the bucket ending at `bucket_end_ms` is committed.
    pub fn note_committed(&self, bucket_end_ms: i64) {
        self.committed.fetch_max(bucket_end_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// End of the newest committed bucket: no bucket after it can be sealed, however old, since
    /// its rows may still wait in the writer's queue or backlog.
    pub(crate) fn committed_until(&self) -> i64 {
        self.committed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The writer's backlog: batches not written yet.
    pub(crate) fn held(&self) -> &held::Held {
        &self.held
    }

    /// The held rows a read adds to what it finds in the database; take it before reading.
    pub(crate) fn held_rows(&self) -> held::HeldRows {
        self.held.snapshot(|| self.committed_until())
    }

    /// Empties SQLite's page cache on every pooled connection (`PRAGMA shrink_memory`), so the
    /// next read finds no page in this process, as after a restart. The first-request
    /// benchmarks call it, with the point cache emptied and the OS page cache dropped, so that
    /// "cold" means cold at every level.
    pub fn release_page_caches(&self) -> Result<(), StoreError> {
        // Held together, so each is a different connection of the pool.
        let mut held = Vec::new();
        while let Some(conn) = self.pool.try_get() {
            conn.execute_batch("PRAGMA shrink_memory")?;
            held.push(conn);
        }
        Ok(())
    }

    /// Heap memory SQLite holds in this process now: every connection's page cache, prepared
    /// statements and their working memory (the WAL index is a shared file mapping, not
    /// counted). The soak attributes RSS growth with it; `/metrics` exports it.
    pub fn sqlite_heap_bytes() -> i64 {
        // SAFETY: sqlite3_memory_used only reads SQLite's memory statistics, under its own
        // mutex; it is safe from any thread at any time.
        unsafe { rusqlite::ffi::sqlite3_memory_used() }
    }

    /// Jobs that waited for a pooled connection, and for how long ([`PoolWaits`]).
    pub fn pool_waits(&self) -> (u64, f64) {
        self.waits.totals()
    }

    /// Canary judgements kept between calls.
    pub fn judge_cache(&self) -> &crate::ports::judge_cache::JudgeCache {
        &self.judged
    }

    /// Points of sealed buckets kept between range queries.
    pub fn cache(&self) -> &cache::PointCache {
        &self.cache
    }

    /// [`range::points`] as a JSON array of the points' pieces, through the cache of sealed
    /// buckets. Held rows newer than the sealed buckets are part of the answer, never of the cache.
    pub(crate) async fn points_json(
        &self,
        r: range::RangeRead,
        raw_sealed_ms: i64,
    ) -> Result<crate::ports::json_array::JsonArray, StoreError> {
        let (cache, pool) = (self.cache.clone(), self.pool.clone());
        let held = self.held_rows();
        let more = move |buckets| part_connection(&pool, buckets);
        self.with_conn(move |c| cache.points_array_helped(c, &more, &r, raw_sealed_ms, &held)).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pooled connection for synchronous callers inside the store, benchmarks and tests (which
    /// inspect the tables).
    pub fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }

    /// Runs `f` with a pooled connection on the blocking thread pool. Private to the store:
    /// every other module asks in the domain's words, and SQL stays here.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (pool, waits) = (self.pool.clone(), self.waits.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = waits.checkout(&pool)?;
            let done = f(&mut conn);
            crate::heap::note_work_done(); // what the job freed goes back to the OS soon
            done
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long read takes idle connections for its parts, never for a short one, and leaves two
    /// idle for the writer and other jobs.
    #[test]
    fn a_long_read_takes_idle_connections_for_its_parts_and_leaves_two() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let mut held: Vec<_> = (0..8).map(|_| store.pool.get().unwrap()).collect();
        held.clear(); // all eight opened, and idle
        assert!(part_connection(&store.pool, cache::SPLIT_BUCKETS - 1).is_none(), "a short read is not split");
        let parts: Vec<_> =
            std::iter::from_fn(|| part_connection(&store.pool, cache::SPLIT_BUCKETS)).take(10).collect();
        assert_eq!(parts.len(), 6);
        assert_eq!(store.pool.state().idle_connections, SPARE_CONNECTIONS);
    }

    #[tokio::test]
    async fn a_job_that_finds_every_connection_busy_is_counted_with_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        store.with_conn(|c| Ok(c.execute_batch("SELECT 1")?)).await.unwrap();
        assert_eq!(store.pool_waits(), (0, 0.0), "an idle connection is taken at once");

        let mut busy: Vec<_> = (0..8).map(|_| store.conn().unwrap()).collect();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            busy.pop();
            busy
        });
        store.with_conn(|c| Ok(c.execute_batch("SELECT 1")?)).await.unwrap();
        let (waits, seconds) = store.pool_waits();
        assert_eq!(waits, 1);
        assert!((0.1..5.0).contains(&seconds), "waited {seconds} s for the released connection");
        drop(release.join().unwrap());
    }

    #[test]
    fn every_pooled_connection_checkpoints_a_bounded_wal_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let conns: Vec<_> = (0..2).map(|_| store.conn().unwrap()).collect();
        for c in &conns {
            let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).unwrap();
            assert_eq!(pragma("wal_autocheckpoint"), WAL_CHECKPOINT_PAGES);
            assert_eq!(pragma("journal_size_limit"), WAL_KEPT_BYTES);
            assert!(WAL_KEPT_BYTES >= WAL_CHECKPOINT_PAGES * pragma("page_size"), "a WAL of one interval is kept");
        }
        drop(conns);
        // Writes of well over one interval's pages: the WAL stops growing at about one interval
        // (plus the transaction that crossed it), however much is written.
        let c = store.conn().unwrap();
        c.execute_batch("CREATE TABLE filler (data BLOB NOT NULL)").unwrap();
        let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let wal = dir.path().join("t.db-wal");
        let mut largest = 0;
        for _ in 0..(WAL_CHECKPOINT_PAGES * 3 / 100) {
            c.execute_batch("BEGIN").unwrap();
            for _ in 0..100 {
                c.execute("INSERT INTO filler (data) VALUES (zeroblob(?1))", [page - 200]).unwrap();
            }
            c.execute_batch("COMMIT").unwrap();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len() as i64);
        }
        let bound = (WAL_CHECKPOINT_PAGES + 200) * (page + 24);
        assert!(largest > WAL_CHECKPOINT_PAGES * page * 9 / 10, "the WAL was used: {largest}");
        assert!(largest <= bound, "the WAL stays bounded: {largest} > {bound}");
    }

    #[test]
    fn a_write_failure_reads_as_a_sentence_without_sqlite_text_or_paths() {
        let failure = |code| {
            let text = Some("/var/secret/zai-dash.db: database or disk is full".to_owned());
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), text)).write_failure()
        };
        assert_eq!(failure(rusqlite::ffi::SQLITE_FULL), "The disk holding the database is full.");
        assert!(failure(rusqlite::ffi::SQLITE_READONLY).contains("read-only"));
        assert!(failure(rusqlite::ffi::SQLITE_IOERR_WRITE).contains("I/O error"));
        assert!(failure(rusqlite::ffi::SQLITE_BUSY).contains("busy timeout"));
        for code in [rusqlite::ffi::SQLITE_FULL, rusqlite::ffi::SQLITE_CONSTRAINT, rusqlite::ffi::SQLITE_CORRUPT] {
            let s = failure(code);
            assert!(!s.contains('/') && s.ends_with('.'), "{s}");
        }
    }
}
