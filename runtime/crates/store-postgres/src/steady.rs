//! Starts and plain ends of runs (no record writes, no delete) in one statement: a
//! `WITH … UPDATE … FROM unnest(…)` per kind, each row carrying its batch's fence.
//!
//! A busy node's usual group is only that, and [`commit`] writes it whole in this one
//! statement, its own (implicit) transaction. The general path (`commit_each` in
//! `lib.rs`) takes a round trip per statement — begin, the fences' lock, a savepoint, the
//! updates, release, commit — and on a machine whose cores are busy running plug-ins
//! each round trip also waits for a thread to be scheduled. The general path writes its
//! gathered starts and ends through [`write`] too, unfenced. The fences are locked
//! `FOR SHARE` in org order, as the general path does; a row whose fence no longer holds
//! is not written, and the statement returns the fences that held.

use std::collections::HashSet;
use std::sync::LazyLock;

use ::postgres::types::ToSql;
use ::postgres::{Client, GenericClient};
use sluice_core::jobs::{JobId, Millis, OrgId};
use sluice_store::{Batch, Error, Fence, JobUpdate, Result};

use crate::{OrDatabase, counting_finished, json, prepared};

/// Starts and plain ends, one array per column; each row's fence is its org (`0`: none).
#[derive(Default)]
pub(crate) struct Rows {
    started_id: Vec<i64>,
    started_at: Vec<Millis>,
    started_fence: Vec<i64>,
    id: Vec<i64>,
    /// The run's start, when it is written with its end.
    started: Vec<Option<i64>>,
    status: Vec<i64>,
    completed: Vec<Option<i64>>,
    postpone_until: Vec<Option<i64>>,
    retried: Vec<i64>,
    postponements: Vec<i64>,
    code: Vec<Option<String>>,
    message: Vec<Option<String>>,
    output: Vec<Option<String>>,
    fuel: Vec<i64>,
    wall: Vec<i64>,
    host: Vec<i64>,
    peak: Vec<i64>,
    trace: Vec<Option<String>>,
    exceptions: Vec<Option<String>>,
    fence: Vec<i64>,
}

impl Rows {
    /// Adds a start or an end of a run under `fence` (its record writes and delete are
    /// not this statement's: callers gather only plain ends, [`crate::is_plain`]);
    /// whether it did (a status change is for the general path).
    pub(crate) fn push(&mut self, update: &JobUpdate, fence: Option<Fence>) -> bool {
        let fence = fence.map_or(0, |f| i64::from(f.org.0));
        match update {
            JobUpdate::Started { id, at, .. } => {
                self.started_id.push(id.0 as i64);
                self.started_at.push(*at);
                self.started_fence.push(fence);
                true
            }
            JobUpdate::Finished {
                id,
                at,
                started,
                status,
                postpone_until,
                retried,
                postponement_count,
                error,
                output,
                accounting,
                trace,
                exception_times,
                ..
            } => {
                let (code, message) = error.clone().unzip();
                self.id.push(id.0 as i64);
                self.started.push(*started);
                self.status.push(i64::from(status.code()));
                self.completed.push(status.is_terminal().then_some(*at));
                self.postpone_until.push(*postpone_until);
                self.retried.push(i64::from(*retried));
                self.postponements.push(i64::from(*postponement_count));
                self.code.push(code);
                self.message.push(message);
                self.output.push(output.clone());
                self.fuel.push(accounting.fuel_used as i64);
                self.wall.push(accounting.wall_time_us as i64);
                self.host.push(accounting.host_time_us as i64);
                self.peak.push(accounting.peak_memory_bytes as i64);
                self.trace.push(trace.clone());
                self.exceptions.push((!exception_times.is_empty()).then(|| json(exception_times)));
                self.fence.push(fence);
                true
            }
            _ => false,
        }
    }
}

/// Writes `batches` in one statement if each only starts jobs and ends runs without
/// record writes, creates no job, no job appears twice and each org has one fence; else
/// `None` (the general path writes it). One result per batch, as
/// [`Store::commit_each`](sluice_store::Store::commit_each).
pub(crate) fn commit(client: &mut Client, batches: &[Batch]) -> Option<Result<Vec<Result<Vec<JobId>>>>> {
    let mut rows = Rows::default();
    let (mut jobs, mut orgs) = (HashSet::new(), HashSet::new());
    for batch in batches {
        if !batch.changes.is_empty() || !batch.jobs.is_empty() {
            return None;
        }
        // A row names its fence by org: one epoch per org in a group.
        if batch.fence.is_some_and(|fence| !orgs.insert(fence.org)) {
            return None;
        }
        for update in &batch.updates {
            let plain = matches!(update, JobUpdate::Started { .. }) || crate::is_plain(update);
            if !plain || !jobs.insert(update.id()) {
                return None;
            }
            rows.push(update, batch.fence);
        }
    }
    let fences: Vec<Fence> = batches.iter().filter_map(|b| b.fence).collect();
    Some(write(client, &fences, &rows).map(|held| {
        batches
            .iter()
            .map(|batch| match batch.fence {
                Some(fence) if !held.contains(&fence.org) => Err(Error::Fenced(fence.org)),
                _ => Ok(Vec::new()),
            })
            .collect()
    }))
}

/// Writes the rows whose fence holds (or that have none); returns the orgs whose fence
/// held.
pub(crate) fn write(client: &mut impl GenericClient, fences: &[Fence], rows: &Rows) -> Result<Vec<OrgId>> {
    let orgs: Vec<i64> = fences.iter().map(|f| i64::from(f.org.0)).collect();
    let epochs: Vec<i64> = fences.iter().map(|f| f.epoch as i64).collect();
    static WRITE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH locked AS MATERIALIZED (
            SELECT org_id, epoch FROM shard_leases WHERE org_id = ANY($1) ORDER BY org_id FOR SHARE
         ), held AS MATERIALIZED (
            SELECT l.org_id FROM locked l
            JOIN unnest($1::BIGINT[], $2::BIGINT[]) AS f(org, epoch) ON l.org_id = f.org AND l.epoch = f.epoch
         ), started AS (
            UPDATE jobs SET status = 20, started_at = s.at, postpone_until = NULL
            FROM unnest($3::BIGINT[], $4::BIGINT[], $5::BIGINT[]) AS s(id, at, fence)
            WHERE jobs.id = s.id AND jobs.status < 30 AND (s.fence = 0 OR s.fence IN (SELECT org_id FROM held))
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
            WHERE jobs.id = u.id AND jobs.status < 30 AND (u.fence = 0 OR u.fence IN (SELECT org_id FROM held))
            RETURNING jobs.org_id, jobs.lane, jobs.status
         ), {}
         SELECT org_id FROM held",
            counting_finished("finished", '+')
        )
    });
    let statement = prepared(client, &WRITE).db()?;
    let r = rows;
    let params: [&(dyn ToSql + Sync); 22] = [
        &orgs,
        &epochs,
        &r.started_id,
        &r.started_at,
        &r.started_fence,
        &r.id,
        &r.status,
        &r.completed,
        &r.postpone_until,
        &r.retried,
        &r.postponements,
        &r.code,
        &r.message,
        &r.output,
        &r.fuel,
        &r.wall,
        &r.host,
        &r.peak,
        &r.trace,
        &r.exceptions,
        &r.started,
        &r.fence,
    ];
    let held = client.query(&statement, &params).db()?;
    Ok(held.iter().map(|row| OrgId(row.get::<_, i64>(0) as u32)).collect())
}
