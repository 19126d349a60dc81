//! What the store needs to know of the configuration (`config` composes it): the widths of its
//! rows and how long each table keeps them, which is all that decides which table answers a
//! read ([`StoreSettings::reads_raw`]) and what the downsampler rolls and deletes.

use std::time::Duration;

use super::downsample::Plan;
use super::range::RangeRead;
use crate::ports::read::{Grid, PointQuery, Reach};
use crate::setting::duration_ms;

/// The store's part of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Width of a raw point (`metrics_5s`).
    pub point_width: Duration,
    /// Width of a rollup (`metrics_1m`).
    pub rollup_width: Duration,
    /// `RETENTION_5S`.
    pub retention_5s: Duration,
    /// `RETENTION_1M`.
    pub retention_1m: Duration,
    /// `RETENTION_10M`.
    pub retention_10m: Duration,
    /// Period of the rollup and retention job.
    pub downsample_interval: Duration,
}

impl StoreSettings {
    /// The widths of the rows.
    pub(crate) fn grid(&self) -> Grid {
        Grid { point_ms: duration_ms(self.point_width), rollup_ms: duration_ms(self.rollup_width) }
    }

    /// How far back raw rows and rollups reach at `now_ms`, by their retention.
    pub(crate) fn reach(&self, now_ms: i64) -> Reach {
        Reach {
            raw_since_ms: now_ms.saturating_sub(duration_ms(self.retention_5s)),
            rollup_since_ms: now_ms.saturating_sub(duration_ms(self.retention_1m)),
        }
    }

    /// Whether raw rows answer `window` at `now_ms`: a window of at most an hour that raw rows
    /// still hold. Every other window reads the rolled tables (up to their watermark, then raw
    /// rows rolled on the fly).
    pub(crate) fn reads_raw(&self, window: (i64, i64), now_ms: i64) -> bool {
        let grid = self.grid();
        grid.width_for(window, 0, self.reach(now_ms)) == grid.point_ms
    }

    /// `q` as the store reads it at `now_ms`. A step that is not a multiple of a rollup can
    /// only be answered from raw rows.
    pub(crate) fn range_read(&self, q: PointQuery, now_ms: i64) -> RangeRead {
        let Grid { point_ms, rollup_ms } = self.grid();
        let raw = q.step_ms % rollup_ms.max(1) != 0 || self.reads_raw((q.start_ms, q.end_ms), now_ms);
        RangeRead { q, raw, point_ms, rollup_ms }
    }

    /// What each downsample run rolls and deletes.
    pub(crate) fn downsample_plan(&self) -> Plan {
        let Grid { point_ms, rollup_ms } = self.grid();
        Plan {
            point_ms,
            rollup_ms,
            settle_ms: 2 * point_ms + 1_000,
            retention_raw_ms: duration_ms(self.retention_5s),
            retention_rollup_ms: duration_ms(self.retention_1m),
            retention_coarse_ms: duration_ms(self.retention_10m),
        }
    }
}
