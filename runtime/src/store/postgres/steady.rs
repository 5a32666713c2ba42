//! A busy node's usual group in one statement: starts and ends of runs that wrote no
//! records, fenced, written by one `WITH … UPDATE` in its own (implicit) transaction.
//!
//! The general path (`commit_each` in `mod.rs`) takes a round trip per statement: begin,
//! the fences' lock, a savepoint, each kind of update, release, commit. On a machine
//! whose cores are busy running plug-ins, each round trip also waits for the connection's
//! thread to be scheduled again, and a group of 30 jobs took 9 ms, of which PostgreSQL
//! worked 3. This path sends one statement: the fences are locked `FOR SHARE` in org order
//! (as the general path does), every row carries its batch's fence, and a row whose
//! fence no longer holds is not written; the statement returns the fences that held.

use std::collections::HashSet;

use ::postgres::Client;

use super::{FinishedColumns, prepared};
use crate::jobs::{JobId, Millis, OrgId};
use crate::store::model::JobUpdate;
use crate::store::{Batch, Error, Fence, Result};

/// The group's rows, one array per column, each row with its batch's fence (`0`: none).
#[derive(Default)]
struct Rows {
    started: (Vec<i64>, Vec<Millis>, Vec<i64>),
    finished: FinishedColumns,
    finished_fence: Vec<i64>,
}

/// Writes `batches` in one statement if each only starts jobs and ends runs that wrote
/// no records, creates no job, and no job appears twice; else `None` (the general path
/// writes it). One result per batch, as [`Store::commit_each`](crate::store::Store::commit_each).
pub(super) fn commit(client: &mut Client, batches: &[Batch]) -> Option<Result<Vec<Result<Vec<JobId>>>>> {
    let rows = gather(batches)?;
    Some(write(client, batches, rows))
}

fn gather(batches: &[Batch]) -> Option<Rows> {
    let mut rows = Rows::default();
    let mut seen = HashSet::new();
    let mut fences = HashSet::new();
    for batch in batches {
        if !batch.changes.is_empty() || !batch.jobs.is_empty() {
            return None;
        }
        // A row names its fence by org: one epoch per org in a group.
        if let Some(fence) = batch.fence
            && !fences.insert(fence.org)
        {
            return None;
        }
        let fence = batch.fence.map_or(0, |f| i64::from(f.org.0));
        for update in &batch.updates {
            if !seen.insert(update.id()) {
                return None;
            }
            match update {
                JobUpdate::Started { id, at, .. } => {
                    rows.started.0.push(id.0 as i64);
                    rows.started.1.push(*at);
                    rows.started.2.push(fence);
                }
                update if super::is_plain(update) => {
                    rows.finished.push(update);
                    rows.finished_fence.push(fence);
                }
                _ => return None,
            }
        }
    }
    Some(rows)
}

fn write(client: &mut Client, batches: &[Batch], rows: Rows) -> Result<Vec<Result<Vec<JobId>>>> {
    let mut orgs: Vec<i64> = Vec::new();
    let mut epochs: Vec<i64> = Vec::new();
    for fence in batches.iter().filter_map(|b| b.fence) {
        orgs.push(i64::from(fence.org.0));
        epochs.push(fence.epoch as i64);
    }
    let statement = prepared(
        client,
        "WITH locked AS MATERIALIZED (
            SELECT org_id, epoch FROM shard_leases WHERE org_id = ANY($1) ORDER BY org_id FOR SHARE
         ), held AS MATERIALIZED (
            SELECT l.org_id FROM locked l
            JOIN unnest($1::BIGINT[], $2::BIGINT[]) AS f(org, epoch) ON l.org_id = f.org AND l.epoch = f.epoch
         ), started AS (
            UPDATE jobs SET status = 20, started_at = s.at, postpone_until = NULL
            FROM unnest($3::BIGINT[], $4::BIGINT[], $5::BIGINT[]) AS s(id, at, fence)
            WHERE jobs.id = s.id AND (s.fence = 0 OR s.fence IN (SELECT org_id FROM held))
         ), finished AS (
            UPDATE jobs SET status = u.status, started_at = COALESCE(u.started, jobs.started_at),
                completed_at = u.completed, postpone_until = u.postpone_until,
                retry_count = jobs.retry_count + u.retried, postponement_count = u.postponements,
                error_code = u.code, error_message = u.message, output = u.output,
                fuel_used = jobs.fuel_used + u.fuel, wall_time_us = jobs.wall_time_us + u.wall,
                host_time_us = jobs.host_time_us + u.host,
                peak_memory_bytes = GREATEST(jobs.peak_memory_bytes, u.peak),
                trace = u.trace, exception_times = u.exceptions
            FROM unnest($6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[],
                $11::BIGINT[], $12::TEXT[], $13::TEXT[], $14::TEXT[], $15::BIGINT[], $16::BIGINT[],
                $17::BIGINT[], $18::BIGINT[], $19::TEXT[], $20::TEXT[], $21::BIGINT[], $22::BIGINT[])
                AS u(id, status, completed, postpone_until, retried, postponements, code, message,
                     output, fuel, wall, host, peak, trace, exceptions, started, fence)
            WHERE jobs.id = u.id AND (u.fence = 0 OR u.fence IN (SELECT org_id FROM held))
         )
         SELECT org_id FROM held",
    )?;
    let f = &rows.finished;
    let held: Vec<i64> = client
        .query(
            &statement,
            &[
                &orgs,
                &epochs,
                &rows.started.0,
                &rows.started.1,
                &rows.started.2,
                &f.id,
                &f.status,
                &f.completed,
                &f.postpone_until,
                &f.retried,
                &f.postponements,
                &f.code,
                &f.message,
                &f.output,
                &f.fuel,
                &f.wall,
                &f.host,
                &f.peak,
                &f.trace,
                &f.exceptions,
                &f.started,
                &rows.finished_fence,
            ],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let holds = |fence: &Fence| held.contains(&i64::from(fence.org.0));
    Ok(batches
        .iter()
        .map(|batch| match batch.fence {
            Some(fence) if !holds(&fence) => Err(Error::Fenced(OrgId(fence.org.0))),
            _ => Ok(Vec::new()),
        })
        .collect())
}
