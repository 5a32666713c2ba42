//! Each org's finished jobs, counted per lane and status in `finished_job_counts`
//! (migration 9), so that a health read never counts an org's history row by row.
//!
//! The writer gathers a transaction's changes to the counts as it writes: a job inserted
//! finished, a job's update to a finished status, a finished job deleted. A finished
//! job's status never changes again (its updates are refused in SQL: `status < 30`), so
//! an update to a finished status always moves a job from unfinished to finished. A
//! batch's changes join the transaction's only if its savepoint is kept, and they are
//! written once, before the commit: a few rows a group, not one a job.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use sluice_core::jobs::{Lane, OrgId, Status};
use sluice_store::Result;
use sluice_store::columns::{lane_of, status_of};

use crate::OrDatabase;

/// Changes to the finished counts, by (org, lane, status).
#[derive(Default)]
pub(crate) struct FinishedCounts(BTreeMap<(u32, i64, u32), i64>);

impl FinishedCounts {
    /// Counts `n` more (or fewer) jobs of `org`'s `lane` in `status`, if it is finished.
    pub(crate) fn add(&mut self, org: OrgId, lane: Lane, status: Status, n: i64) {
        if status.is_terminal() && n != 0 {
            *self.0.entry((org.0, lane.index() as i64, status.code())).or_default() += n;
        }
    }

    /// [`FinishedCounts::add`] for a row's `(org_id, lane, status)` read back by a
    /// statement's `RETURNING`.
    pub(crate) fn add_row(&mut self, (org, lane, status): (i64, i64, i64), n: i64) -> Result<()> {
        self.add(OrgId(org as u32), lane_of(lane)?, status_of(status)?, n);
        Ok(())
    }

    /// Takes a kept batch's changes into the transaction's.
    pub(crate) fn merge(&mut self, other: FinishedCounts) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    /// Writes the changes, in key order.
    pub(crate) fn write(&self, tx: &Connection) -> Result<()> {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO finished_job_counts (org_id, lane, status, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org_id, lane, status) DO UPDATE SET n = n + excluded.n",
            )
            .db()?;
        for ((org, lane, status), n) in self.0.iter().filter(|(_, n)| **n != 0) {
            upsert.execute(params![org, lane, status, n]).db()?;
        }
        Ok(())
    }
}
