//! The points tables by resolution: a type of its own so that `query` (rows by target) and
//! `sealed` (rows at rest, open or in chunks) both name a table without importing each other.

/// Which points table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `metrics_5s`.
    Raw,
    /// `metrics_1m`.
    Rollup,
    /// `metrics_10m`: rollups of rollups, for ranges over a day.
    Coarse,
}

impl Table {
    /// The table's SQL name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Raw => "metrics_5s",
            Table::Rollup => "metrics_1m",
            Table::Coarse => "metrics_10m",
        }
    }
}
