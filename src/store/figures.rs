//! What the database looks like right now, for `/metrics`: the size of its file and
//! write-ahead log, and rows per table.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Store, StoreError};

/// Tables whose rows are counted (`metrics_5s`, `metrics_1m`: open and sealed rows alike).
const COUNTED: [&str; 3] = ["metrics_1m", "metrics_5s", "targets"];

/// The database's size and row counts.
#[derive(Debug, Default)]
pub struct DbFigures {
    /// Size of the database file plus its write-ahead log.
    pub bytes: u64,
    /// Rows per table.
    pub rows: BTreeMap<&'static str, u64>,
}

impl Store {
    /// Reads file sizes and row counts (row counts on the blocking pool).
    pub(crate) async fn figures(&self) -> Result<DbFigures, StoreError> {
        let bytes = file_bytes(self.path());
        let rows = self
            .with_conn(|c| {
                let mut rows = BTreeMap::new();
                for table in COUNTED {
                    let n: i64 = match table {
                        "metrics_5s" => super::sealed::count(c, super::query::Table::Raw)?,
                        "metrics_1m" => super::sealed::count(c, super::query::Table::Rollup)?,
                        _ => c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?,
                    };
                    rows.insert(table, u64::try_from(n).unwrap_or(0));
                }
                Ok(rows)
            })
            .await?;
        Ok(DbFigures { bytes, rows })
    }
}

fn file_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), wal.into()].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}
