//! Durable storage of everything Sluice keeps: organisations and quotas, plug-ins,
//! definitions (step registrations and workflows), records, and system jobs.
//!
//! [`Store`] is the trait a backend implements; `sluice-store-sqlite` is the embedded
//! backend (one file, WAL, durable commits), `sluice-store-postgres` the one for a
//! database server; both pass the same suite ([`conformance`], run by each backend's
//! tests). This crate names no driver: the service depends on it alone. Job
//! state transitions are applied in batches ([`Store::commit_each`]): one transaction for
//! many jobs and requests (group commit), with each finished job's record writes in the
//! same transaction as its completion.

mod cluster;
pub mod columns;
pub mod conformance;
mod model;
pub mod recount;

pub use cluster::{Change, ChangeKind, Fence, Lease, Taken};
pub use model::{
    ApiParameter, Background, Bulk, Definition, DefinitionKind, Delivery, DeliveryState, JobFilter, JobRow,
    JobUpdate, MAX_BULK_BATCH, NewJob, Operation, OperationRow, PluginRow, StartRow, StoredPlugin, TokenRow,
    Trigger, WorkflowStart, WorkflowStep,
};
pub use recount::Miscount;

/// Whether opening a store may bring its schema up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A node: creates the schema if there is none and applies this version's migrations.
    Migrate,
    /// An operator's tool: the store must be there, migrated by a node of this version;
    /// nothing is created or migrated.
    Existing,
}

impl Opening {
    /// Checks a store's applied migrations (`0`: none) against the `known` ones.
    pub fn check(self, applied: i64, known: usize) -> Result<()> {
        match (self, applied) {
            (_, found) if found > known as i64 => Err(Error::SchemaTooNew { found, known }),
            (Opening::Existing, 0) => Err(Error::NoStore),
            (Opening::Existing, found) if found < known as i64 => Err(Error::SchemaBehind { found, known }),
            _ => Ok(()),
        }
    }
}

use sluice_core::jobs::{DefinitionId, JobId, Lane, Millis, OrgId, Quotas, Status};
use sluice_core::records::RecordStore;

/// A storage failure: the database could not do what was asked. Names no driver's
/// types, so the service is the same over every backend (each backend turns its
/// driver's errors into these).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed the operation (the driver's message).
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open the store: {0}")]
    Open(#[from] std::io::Error),
    /// The database was migrated by a later version of Sluice: writing it with this one
    /// would skip what the later version keeps (its counts, its columns), so it is not
    /// opened. Upgrade this node.
    #[error(
        "the store's schema is at migration {found}, newer than this version of Sluice knows ({known}): upgrade this node"
    )]
    SchemaTooNew { found: i64, known: usize },
    /// An operator's tool (`sluice store recount`) was pointed at a file or database
    /// without Sluice's schema. Nothing was created there.
    #[error("no Sluice store there: it has no Sluice schema")]
    NoStore,
    /// An operator's tool was pointed at a store a node of this version has not migrated
    /// yet. Tools do not migrate (a node of an older version may still be running on it):
    /// nothing was changed.
    #[error(
        "the store's schema is at migration {found}, older than this version of Sluice ({known}): start a node of this version on it first"
    )]
    SchemaBehind { found: i64, known: usize },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(String),
    /// A record write of the batch no longer applies (the record was created, changed
    /// or deleted by a commit since it was read). Nothing of the batch was written.
    #[error("write conflict: {0}")]
    WriteConflict(String),
    /// The batch's fence no longer holds: another node took the org's lease since (see
    /// [`Fence`]). Nothing of the batch was written.
    #[error("this node no longer holds org {}'s lease", .0.0)]
    Fenced(OrgId),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What one transaction commits (see [`Store::commit`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Record changes of an event, applied first, in order.
    pub changes: Vec<(OrgId, sluice_core::records::RecordChange)>,
    pub updates: Vec<JobUpdate>,
    pub jobs: Vec<NewJob>,
    /// Commit only while this node still holds the org at this epoch (else the batch
    /// fails alone with [`Error::Fenced`]). The batch's new jobs are then adopted by the
    /// fence's holder; without a fence they wait to be adopted ([`Store::adopt_jobs`]).
    pub fence: Option<Fence>,
    /// The new jobs wait to be adopted by the org's holder ([`Store::adopt_jobs`]): the
    /// committing node does not hold the org. (A single node holds everything: false.)
    pub unadopted: bool,
}

/// What every backend provides. Records come through [`RecordStore`].
pub trait Store: RecordStore {
    /// Bytes the store takes on disk (benchmarks report bytes per waiting job).
    fn size_on_disk(&self) -> Result<u64>;

    fn create_org(&self, name: &str) -> Result<OrgId>;
    fn orgs(&self) -> Result<Vec<(OrgId, String)>>;
    fn set_quotas(&self, org: OrgId, lane: Lane, quotas: Quotas) -> Result<()>;
    fn all_quotas(&self) -> Result<Vec<(OrgId, Lane, Quotas)>>;
    /// The org's callback signing secret: the stored one, or `fresh`, stored now.
    fn webhook_secret(&self, org: OrgId, fresh: &str) -> Result<String>;

    /// Stores a tenant token by its hash.
    fn create_token(&self, org: OrgId, label: &str, prefix: &str, hash: &str, at: Millis)
    -> Result<TokenRow>;
    fn tokens(&self, org: OrgId) -> Result<Vec<TokenRow>>;
    /// Revokes one of the org's tokens; revoking twice is harmless.
    fn revoke_token(&self, org: OrgId, id: u64, at: Millis) -> Result<()>;
    /// The org a live (unrevoked) token belongs to, found by the token's hash.
    fn token_org(&self, hash: &str) -> Result<Option<OrgId>>;

    /// Stores a plug-in version (content-addressed: the same bytes are stored once per org).
    fn save_plugin(&self, org: OrgId, name: &str, content_hash: &str, bytes: &[u8]) -> Result<StoredPlugin>;
    fn plugin_bytes(&self, org: OrgId, plugin: u64) -> Result<Option<Vec<u8>>>;
    fn plugins(&self, org: OrgId) -> Result<Vec<PluginRow>>;

    fn save_definition(&self, definition: &Definition) -> Result<DefinitionId>;
    fn set_definition_active(&self, org: OrgId, id: DefinitionId, active: bool) -> Result<()>;
    fn definitions(&self) -> Result<Vec<Definition>>;
    /// Deletes a definition; its jobs stay (and are canceled when picked up).
    fn delete_definition(&self, org: OrgId, id: DefinitionId) -> Result<()>;
    /// Sets or clears (`None`) a definition's runaway flag, in the service's own words
    /// (opaque here), so that a restart or the org's next holder keeps it.
    fn set_runaway_flag(&self, org: OrgId, id: DefinitionId, flag: Option<&str>) -> Result<()>;
    /// Every flagged definition's flag, by org.
    fn runaway_flags(&self) -> Result<Vec<(OrgId, DefinitionId, String)>>;

    /// Commits batches in one transaction (one sync to disk for all: group commit),
    /// each all or nothing. A batch whose record writes no longer apply is left out
    /// with its own [`Error::WriteConflict`] and the others commit; any other failure
    /// commits nothing (the outer error). Each batch's result holds its new jobs' ids,
    /// in order.
    fn commit_each(&self, batches: &[&Batch]) -> Result<Vec<Result<Vec<JobId>>>>;

    /// Commits one batch in one transaction: an event's record changes, job transitions
    /// (with their record writes) and new jobs; returns the new jobs' ids, in order.
    /// Either all of it is durable or none of it.
    fn commit(&self, batch: &Batch) -> Result<Vec<JobId>> {
        self.commit_each(&[batch])?.pop().expect("one batch, one result")
    }

    /// Inserts jobs in one transaction and returns their ids, in order.
    fn insert_jobs(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        self.commit(&Batch { jobs: jobs.to_vec(), ..Batch::default() })
    }

    /// Applies state transitions in one transaction.
    fn apply(&self, updates: &[JobUpdate]) -> Result<()> {
        self.commit(&Batch { updates: updates.to_vec(), ..Batch::default() }).map(drop)
    }
    /// Jobs not in a terminal status, to rebuild the scheduler after a restart.
    fn unfinished_jobs(&self) -> Result<Vec<JobRow>>;
    fn job(&self, org: OrgId, id: JobId) -> Result<Option<JobRow>>;
    /// What the starts of these jobs of the org need, in one read, in no particular
    /// order: an id not found, or another org's, is left out. For starts whose payload
    /// is not in memory: on SQLite that is every start past the payloads a node keeps.
    fn starts_by_id(&self, org: OrgId, ids: &[JobId]) -> Result<Vec<StartRow>>;
    /// The org's jobs that pass `filter`, newest first.
    fn jobs(&self, org: OrgId, filter: &JobFilter) -> Result<Vec<JobRow>>;
    /// A background operation of the org.
    fn operation(&self, org: OrgId, job: JobId) -> Result<Option<OperationRow>>;
    /// Records how a callback's delivery went.
    fn record_delivery(&self, job: JobId, delivery: &Delivery) -> Result<()>;
    /// Ended background operations whose callback is still to be delivered (after a
    /// restart).
    fn undelivered_callbacks(&self) -> Result<Vec<(OrgId, JobId)>>;
    /// Counts of the org's jobs per lane and status, in lane and status order (none of
    /// zero). Finished jobs are counted as they finish, never by reading their rows.
    fn job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>>;
    /// The finished part of [`Store::job_counts`], read from the counts kept, never
    /// from the jobs (a node that holds the org knows its unfinished ones).
    fn finished_job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>>;
    /// Counts every org's finished jobs again from the jobs, while the store's writers
    /// wait, and corrects the kept counts that differ ([`recount`]); returns those.
    fn recount_finished_jobs(&self) -> Result<Vec<Miscount>>;
    // ---- several nodes on one database (see `cluster.rs`) ----

    /// The database's clock: the one time every node agrees on (leases, windows).
    fn database_now(&self) -> Result<Millis>;
    /// Notes that `node` is alive for `ttl` more; returns the nodes alive now, by name.
    fn heartbeat(&self, node: &str, ttl: Millis) -> Result<Vec<String>>;
    /// Every org's lease.
    fn leases(&self) -> Result<Vec<Lease>>;
    /// Takes the org's lease if it is free, expired or already `node`'s, at a new epoch,
    /// with the org's unfinished jobs, which the taker now holds (adopted). `None` when
    /// another node holds it.
    fn take_lease(&self, node: &str, org: OrgId, ttl: Millis) -> Result<Option<Taken>>;
    /// Extends the leases `node` still holds at these epochs; returns their orgs (a lease
    /// missing from the answer was lost).
    fn renew_leases(&self, node: &str, held: &[Fence], ttl: Millis) -> Result<Vec<OrgId>>;
    /// Gives a lease up at once (the next taker need not wait for it to expire).
    /// `released_at` is the releasing node's clock, after every time it stored for the
    /// org; the next taker gets it in [`Taken::released_at`].
    fn release_lease(&self, node: &str, fence: Fence, released_at: Millis) -> Result<()>;
    /// The unfinished jobs nobody holds yet (created by unfenced batches) of the orgs still
    /// held at these epochs, now adopted: created on another node, they are this one's.
    fn adopt_jobs(&self, held: &[Fence]) -> Result<Vec<JobRow>>;
    /// Starts of an org's lane at or after `since` (a taker restores the throughput window).
    fn starts_since(&self, org: OrgId, lane: Lane, since: Millis) -> Result<u32>;
    /// The org's workflow jobs on a record created at or after `since`, the newest
    /// `limit` of them, oldest first: a node rebuilds the loop rule's counts from them
    /// when it starts and when it takes an org over, so that neither gives a looping
    /// workflow 16 more starts.
    fn workflow_starts_since(&self, org: OrgId, since: Millis, limit: u32) -> Result<Vec<WorkflowStart>>;
    /// Adds a change to the log; returns its id.
    fn log_change(&self, org: OrgId, kind: ChangeKind, key: u64) -> Result<u64>;
    /// The changes after `after`, oldest first, at most `limit`.
    fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>>;
    /// The id of the last change (a node starting reads from there on).
    fn last_change(&self) -> Result<u64>;
    fn change(&self, id: u64) -> Result<Option<Change>>;
    /// Writes a command's answer on its change.
    fn answer_change(&self, id: u64, answer: &str) -> Result<()>;
    /// Takes or renews a cluster-wide singleton (e.g. the retention purge) for `ttl`;
    /// whether `node` holds it now.
    fn take_singleton(&self, name: &str, node: &str, ttl: Millis) -> Result<bool>;
    /// Waits up to `timeout` for word that some node logged a change or left jobs for a
    /// holder to adopt (committed since the last wait); returns whether word came. A
    /// node follows the cluster when it does, and every `timeout` anyway. A backend with
    /// no such signal waits out the timeout and says `false`.
    fn wait_for_news(&self, timeout: std::time::Duration) -> Result<bool> {
        std::thread::sleep(timeout);
        Ok(false)
    }

    /// Deletes finished jobs completed before their status's cutoff (background
    /// operations: past their expiry instead) and clears trace logs of jobs completed
    /// before `trace`, at most `limit` of each, in one short transaction (the caller
    /// repeats it: a purge of millions of rows must not hold the writer's connection);
    /// returns (jobs deleted, traces cleared).
    fn purge(&self, cutoffs: &Cutoffs, limit: u64) -> Result<(u64, u64)>;
}

/// Completion times before which finished jobs (and trace logs) are purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub succeeded: sluice_core::jobs::Millis,
    pub failed: sluice_core::jobs::Millis,
    pub canceled: sluice_core::jobs::Millis,
    pub trace: sluice_core::jobs::Millis,
    /// Background operations that expired before this time are deleted.
    pub operations: sluice_core::jobs::Millis,
}
