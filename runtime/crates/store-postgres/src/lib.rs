//! The PostgreSQL backend: the same [`Store`] as SQLite, for several nodes on one
//! database (issue 10). Same tables and meaning as `sluice-store-sqlite`; ids from
//! sequences (never reused), time as epoch milliseconds in `BIGINT`, structured values as
//! JSON text.
//!
//! The driver is `postgres` (the blocking face of `tokio-postgres`). Its client runs
//! its own small runtime and must not be called from inside another, and the [`Store`]
//! trait is synchronous and called from the service's tokio threads. So each connection
//! has a thread of its own, handed work as closures by callers inside tokio (others run
//! it in place): one writing connection (commits are the store's writer's anyway), one
//! for coordination, and a few readers, as for SQLite.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc};

use ::postgres::fallible_iterator::FallibleIterator as _;
use ::postgres::types::ToSql;
use ::postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction};

use sluice_core::jobs::{DefinitionId, JobId, Lane, Millis, OrgId, Quotas, Status};
use sluice_core::records::{
    Attributes, Entity, Filter, RecordChange, RecordError, RecordStore, check_entity_name, merge,
    take_record_id,
};
use sluice_core::run::Accounting;
use sluice_store::columns::{
    JOB_COLUMNS, delivery_state_name, from_json, json, lane_of, operation_of, org_number, records_in_order,
    status_of,
};
use sluice_store::{
    Batch, Change, ChangeKind, Cutoffs, Error, Fence, Lease, Miscount, Opening, Result, Store, Taken, recount,
};
use sluice_store::{
    Definition, DefinitionKind, Delivery, DeliveryState, JobFilter, JobRow, JobUpdate, NewJob, Operation,
    OperationRow, PluginRow, StartRow, StoredPlugin, TokenRow, WorkflowStart,
};

/// Read connections per store (see `sluice-store-sqlite`'s `READERS`).
const READERS: usize = 4;

mod steady;

/// The schema, as numbered migrations applied in order at open (`schema_version`
/// records how many have run); a migration is never edited once released.
const MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's migrations 1–4, in one.
    "
    CREATE TABLE orgs (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        webhook_secret TEXT
    );
    CREATE TABLE quotas (
        org_id BIGINT NOT NULL REFERENCES orgs(id),
        lane BIGINT NOT NULL,
        quotas TEXT NOT NULL,
        PRIMARY KEY (org_id, lane)
    );
    CREATE TABLE plugins (
        id BIGSERIAL PRIMARY KEY,
        org_id BIGINT NOT NULL REFERENCES orgs(id),
        name TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        bytes BYTEA NOT NULL,
        UNIQUE (org_id, content_hash)
    );
    CREATE TABLE definitions (
        id BIGSERIAL PRIMARY KEY,
        org_id BIGINT NOT NULL REFERENCES orgs(id),
        name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        kind TEXT NOT NULL,
        active BOOLEAN NOT NULL,
        auto_delete BOOLEAN NOT NULL
    );
    CREATE TABLE records (
        org_id BIGINT NOT NULL,
        entity TEXT NOT NULL,
        id TEXT NOT NULL,
        attributes TEXT NOT NULL,
        PRIMARY KEY (org_id, entity, id)
    );
    CREATE TABLE jobs (
        id BIGSERIAL PRIMARY KEY,
        org_id BIGINT NOT NULL,
        lane BIGINT NOT NULL,
        operation TEXT NOT NULL,
        definition_id BIGINT NOT NULL,
        definition_version BIGINT NOT NULL,
        correlation_id TEXT NOT NULL,
        depth BIGINT NOT NULL,
        record_entity TEXT,
        record_id TEXT,
        payload TEXT NOT NULL,
        dependency_token TEXT,
        status BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        completed_at BIGINT,
        postpone_until BIGINT,
        retry_count BIGINT NOT NULL DEFAULT 0,
        postponement_count BIGINT NOT NULL DEFAULT 0,
        error_code TEXT,
        error_message TEXT,
        output TEXT,
        fuel_used BIGINT NOT NULL DEFAULT 0,
        wall_time_us BIGINT NOT NULL DEFAULT 0,
        host_time_us BIGINT NOT NULL DEFAULT 0,
        peak_memory_bytes BIGINT NOT NULL DEFAULT 0,
        trace TEXT,
        exception_times TEXT
    );
    CREATE INDEX jobs_by_org_lane_status ON jobs (org_id, lane, status, id);
    CREATE INDEX jobs_unfinished ON jobs (status) WHERE status < 30;
    CREATE INDEX jobs_finished ON jobs (status, completed_at) WHERE status >= 30;
    CREATE INDEX jobs_traced ON jobs (completed_at) WHERE trace IS NOT NULL;
    CREATE INDEX jobs_by_correlation ON jobs (org_id, correlation_id);
    CREATE TABLE tokens (
        id BIGSERIAL PRIMARY KEY,
        org_id BIGINT NOT NULL REFERENCES orgs(id),
        label TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE operations (
        job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        org_id BIGINT NOT NULL,
        callback_uri TEXT,
        expires_at BIGINT NOT NULL,
        delivery_state TEXT NOT NULL,
        delivery_attempts BIGINT NOT NULL DEFAULT 0,
        delivery_error TEXT,
        delivered_at BIGINT
    );
    CREATE INDEX operations_by_expiry ON operations (expires_at);
    CREATE INDEX operations_waiting ON operations (job_id) WHERE delivery_state = 'waiting';
    ",
    // 2: several nodes on one database (see `cluster.rs`).
    "
    ALTER TABLE jobs ADD COLUMN adopted BOOLEAN NOT NULL DEFAULT TRUE;
    CREATE INDEX jobs_unadopted ON jobs (org_id) WHERE NOT adopted AND status < 30;
    CREATE INDEX jobs_started ON jobs (org_id, lane, started_at);
    CREATE TABLE shard_leases (
        org_id BIGINT PRIMARY KEY,
        node TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE changes (
        id BIGSERIAL PRIMARY KEY,
        org_id BIGINT NOT NULL,
        kind TEXT NOT NULL,
        key BIGINT NOT NULL,
        answer TEXT
    );
    CREATE TABLE singletons (
        name TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    ",
    // 3: jobs awaiting adoption in a table of their own. A flag on `jobs` with a partial
    // index made every adoption poll scan the whole table whenever the planner's
    // statistics still counted a backlog adopted since (41 ms a poll, every 50 ms, after a
    // 30,000-job takeover); this table holds only the jobs not yet adopted.
    "
    CREATE TABLE unadopted_jobs (
        job_id BIGINT PRIMARY KEY,
        org_id BIGINT NOT NULL
    );
    INSERT INTO unadopted_jobs (job_id, org_id) SELECT id, org_id FROM jobs WHERE NOT adopted AND status < 30;
    DROP INDEX jobs_unadopted;
    ALTER TABLE jobs DROP COLUMN adopted;
    ",
    // 4: jobs by correlation in a table written once per job. As an index on `jobs` it
    // took a new entry at every update of a job (no update of a job is HOT: its status is
    // indexed), at a random place in the tree: two thirds of the server's time for a
    // completion (36 -> 12-17 µs a row, 50,000-row updates). `COLLATE "C"`: ids are
    // compared for equality only, byte by byte.
    "
    CREATE TABLE job_correlations (
        org_id BIGINT NOT NULL,
        correlation_id TEXT COLLATE \"C\" NOT NULL,
        job_id BIGINT NOT NULL,
        PRIMARY KEY (org_id, correlation_id, job_id)
    );
    INSERT INTO job_correlations (org_id, correlation_id, job_id) SELECT org_id, correlation_id, id FROM jobs;
    DROP INDEX jobs_by_correlation;
    ",
    // 5: a job's payload in a table written once per job. A job's row is written anew
    // at each update of the job; without its payload (445 of its 765 bytes for a small
    // event) an update costs the server a third less (23 -> 16 µs a row).
    "
    CREATE TABLE job_payloads (
        job_id BIGINT PRIMARY KEY,
        payload TEXT NOT NULL
    );
    INSERT INTO job_payloads (job_id, payload) SELECT id, payload FROM jobs;
    ALTER TABLE jobs DROP COLUMN payload;
    ",
    // 6: payloads are bytes (the service's compact form); the JSON ones written before
    // stay readable as their UTF-8 bytes.
    "
    ALTER TABLE job_payloads ALTER COLUMN payload TYPE BYTEA USING convert_to(payload, 'UTF8');
    ",
    // 7: a definition's runaway flag, kept across restarts and lease handovers.
    "
    ALTER TABLE definitions ADD COLUMN runaway_flag TEXT;
    ",
    // 8: workflow jobs on a record by creation time, for the loop rule's counts (see
    // `workflow_starts_since`), in a partial index no other job has entries in; when a
    // lease was given back, in the releasing node's clock: the next holder starts
    // nothing of the org before its own clock has passed it (see `take_lease`). The
    // index first: building it reads all of `jobs` and holds writes to it meanwhile,
    // and the lease table, locked by the `ALTER` until the commit, stays free for
    // other nodes' renewals during the build.
    "
    CREATE INDEX jobs_workflow_starts ON jobs (org_id, created_at)
        WHERE operation = 'workflow' AND record_id IS NOT NULL;
    ALTER TABLE shard_leases ADD COLUMN released_at BIGINT NOT NULL DEFAULT 0;
    ",
    // 9: each org's finished jobs counted per lane and status, kept by the statements
    // that finish, insert or delete them ([`counting_finished`]), as SQLite's migration
    // 9. Writers of `jobs` wait while they are counted. Nodes of an earlier version keep
    // no counts: stop them before the first node of this one starts (`sluice store
    // recount` corrects the counts if one was not).
    "
    LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
    CREATE TABLE finished_job_counts (
        org_id BIGINT NOT NULL,
        lane BIGINT NOT NULL,
        status BIGINT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (org_id, lane, status)
    );
    INSERT INTO finished_job_counts (org_id, lane, status, n)
        SELECT org_id, lane, status, COUNT(*) FROM jobs WHERE status >= 30 GROUP BY org_id, lane, status;
    ",
];

/// A `WITH` item that adds `sign` (`+` or `-`) one to the finished counts (migration 9)
/// for each row of `rows` (columns `org_id`, `lane`, `status`) in a finished status. In
/// key order, so that two statements counting the same orgs lock their rows in one order.
/// A finished job's status never changes again (every update of a job's status asks
/// `status < 30`), so an update to a finished status always counts one more.
pub(crate) fn counting_finished(rows: &str, sign: char) -> String {
    format!(
        "counted AS (
            INSERT INTO finished_job_counts (org_id, lane, status, n)
            SELECT org_id, lane, status, {sign}COUNT(*) FROM {rows} WHERE status >= 30
            GROUP BY org_id, lane, status ORDER BY org_id, lane, status
            ON CONFLICT (org_id, lane, status) DO UPDATE SET n = finished_job_counts.n + EXCLUDED.n
         )"
    )
}

/// Where a job's columns are read from ([`JOB_COLUMNS`]: its payload has a table of its
/// own, migration 5).
const JOBS: &str = "jobs JOIN job_payloads ON job_id = id";

/// The database's clock in epoch milliseconds (the one clock all nodes share).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Serialises writers of the change log, so that its ids commit in order (a sequence
/// alone hands out ids at insert, and a later id could commit first and be read past).
const CHANGE_LOG_LOCK: i64 = 0x051c_e10c;

/// The channel on which a commit that logs a change or leaves jobs to adopt tells the
/// other nodes, so that they follow at once rather than at their next poll.
const NEWS_CHANNEL: &str = "sluice_news";

/// Sends news on [`NEWS_CHANNEL`], after the commit it tells of rather than in it: a
/// `NOTIFY` in a transaction takes a database-wide lock until that transaction's commit
/// is durable, which would queue every node's commits behind each other's syncs. News is
/// a hint (a node follows at its poll anyway), so a failure to send it is not the
/// commit's: it is ignored.
fn tell_other_nodes(client: &mut Client) {
    let _ = client.batch_execute(&format!("NOTIFY {NEWS_CHANNEL}"));
}

type Task = Box<dyn FnOnce(&mut Client) + Send>;

/// One connection with a thread of its own. The driver's client runs its own small
/// runtime, which cannot be entered from a thread already inside tokio's: such callers
/// hand their work to the connection's thread; any other thread (the service's writer)
/// runs it in place, sparing two thread hand-offs per call, each a wait to be scheduled
/// on a machine whose cores are busy running plug-ins.
struct Connection {
    /// Tells the statement cache which connection a statement was prepared on.
    number: usize,
    client: Arc<Mutex<Client>>,
    tasks: mpsc::Sender<Task>,
    /// Calls queued or running on it: reads go to an idle reader when there is one.
    in_flight: AtomicUsize,
}

/// Numbers the connections of the process (see `Connection::number`).
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

impl Connection {
    fn open(url: &str) -> Result<Connection> {
        let number = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let (tasks, inbox) = mpsc::channel::<Task>();
        let (ready, opened) = mpsc::sync_channel(1);
        let url = url.to_owned();
        // Connected on its own thread: the caller may be inside tokio's runtime.
        std::thread::Builder::new().name("sluice-postgres".into()).spawn(move || {
            let client = match Client::connect(&url, NoTls) {
                Ok(client) => Arc::new(Mutex::new(client)),
                Err(e) => return drop(ready.send(Err(database(e)))),
            };
            let _ = ready.send(Ok(client.clone()));
            // Ends when the store (the last sender) is dropped.
            for task in inbox {
                let mut client = client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                CURRENT_CONNECTION.set(number);
                task(&mut client);
            }
        })?;
        let client = opened.recv().map_err(|_| Error::Database("the connection's thread ended".into()))??;
        Ok(Connection { number, client, tasks, in_flight: AtomicUsize::new(0) })
    }

    /// Runs `work` on the connection and waits for its result.
    fn run<T: Send + 'static>(&self, work: impl FnOnce(&mut Client) -> T + Send + 'static) -> Result<T> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let answer = if tokio::runtime::Handle::try_current().is_err() {
            let mut client = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            CURRENT_CONNECTION.set(self.number);
            Ok(work(&mut client))
        } else {
            let (reply, result) = mpsc::sync_channel(1);
            self.tasks
                .send(Box::new(move |client| drop(reply.send(work(client)))))
                .map_err(|_| Error::Database("the connection's thread ended".into()))
                .and_then(|()| {
                    result.recv().map_err(|_| Error::Database("the connection's thread ended".into()))
                })
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        answer
    }
}

pub struct PostgresStore {
    writer: Connection,
    /// Leases, heartbeats, the change log and adoption: never queued behind a commit
    /// (a renewal stuck behind the writer could let a lease expire).
    coordinator: Connection,
    readers: Vec<Connection>,
    next_reader: AtomicUsize,
    /// Waits for other nodes' news (`Store::wait_for_news`): a connection of its own,
    /// since a wait holds it, `LISTEN`ing from the store's opening on (news that comes
    /// before the first wait is kept for it).
    listener: Connection,
}

/// The server's own words when it refused (the driver's `Display` says only "db error").
fn database(e: ::postgres::Error) -> Error {
    Error::Database(describe(&e))
}

fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The driver's failures as the store's (`?` cannot convert them by itself: the store's
/// [`Error`] belongs to `sluice-store`, which names no driver).
trait OrDatabase<T> {
    fn db(self) -> Result<T>;
}

impl<T> OrDatabase<T> for std::result::Result<T, ::postgres::Error> {
    fn db(self) -> Result<T> {
        self.map_err(database)
    }
}

fn record_error(e: ::postgres::Error) -> RecordError {
    RecordError::Invalid(format!("record storage failed: {}", describe(&e)))
}

fn store_to_record_error(e: Error) -> RecordError {
    RecordError::Invalid(format!("record storage failed: {e}"))
}

fn job_from_row(row: &Row) -> Result<JobRow> {
    let record = match (row.get::<_, Option<String>>(8), row.get::<_, Option<String>>(9)) {
        (Some(entity), Some(id)) => Some((entity, id)),
        _ => None,
    };
    let operation: String = row.get(3);
    Ok(JobRow {
        id: JobId(row.get::<_, i64>(0) as u64),
        org: OrgId(row.get::<_, i64>(1) as u32),
        lane: lane_of(row.get(2))?,
        operation: operation_of(&operation)?,
        definition: DefinitionId(row.get::<_, i64>(4) as u64),
        definition_version: row.get::<_, i64>(5) as u32,
        correlation_id: row.get(6),
        depth: row.get::<_, i64>(7) as u32,
        record,
        payload: row.get(10),
        dependency_token: row.get(11),
        status: status_of(row.get(12))?,
        created_at: row.get(13),
        started_at: row.get(14),
        completed_at: row.get(15),
        postpone_until: row.get(16),
        retry_count: row.get::<_, i64>(17) as u32,
        postponement_count: row.get::<_, i64>(18) as u32,
        error_code: row.get(19),
        error_message: row.get(20),
        output: row.get(21),
        accounting: Accounting {
            fuel_used: row.get::<_, i64>(22) as u64,
            wall_time_us: row.get::<_, i64>(23) as u64,
            host_time_us: row.get::<_, i64>(24) as u64,
            peak_memory_bytes: row.get::<_, i64>(25) as u64,
        },
        trace: row.get(26),
        exception_times: row
            .get::<_, Option<String>>(27)
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
    })
}

fn read_attributes(
    client: &mut impl GenericClient,
    org: i64,
    entity: &str,
    id: &str,
) -> std::result::Result<Option<Attributes>, RecordError> {
    let statement =
        prepared(client, "SELECT attributes FROM records WHERE org_id = $1 AND entity = $2 AND id = $3")
            .map_err(record_error)?;
    let row = client.query_opt(&statement, &[&org, &entity, &id]).map_err(record_error)?;
    row.map(|row| {
        serde_json::from_str(row.get::<_, &str>(0))
            .map_err(|e| RecordError::Invalid(format!("corrupt record: {e}")))
    })
    .transpose()
}

/// Applies one record change (see `sluice-store-sqlite`'s `apply_change`).
fn apply_change(
    client: &mut impl GenericClient,
    org: i64,
    change: &RecordChange,
) -> std::result::Result<(), RecordError> {
    match change {
        RecordChange::Create { entity, id, attributes } => {
            check_entity_name(entity)?;
            let statement = prepared(
                client,
                "INSERT INTO records (org_id, entity, id, attributes) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
            )
            .map_err(record_error)?;
            let inserted =
                client.execute(&statement, &[&org, entity, id, &json(attributes)]).map_err(record_error)?;
            if inserted == 0 {
                return Err(RecordError::Invalid(format!("a {entity} record with id {id} already exists")));
            }
        }
        RecordChange::Update { entity, id, attributes } => {
            let mut record = read_attributes(client, org, entity, id)?
                .ok_or_else(|| RecordError::NotFound { entity: entity.clone(), id: id.clone() })?;
            merge(&mut record, attributes);
            let statement = prepared(
                client,
                "UPDATE records SET attributes = $4 WHERE org_id = $1 AND entity = $2 AND id = $3",
            )
            .map_err(record_error)?;
            client.execute(&statement, &[&org, entity, id, &json(&record)]).map_err(record_error)?;
        }
        RecordChange::Delete { entity, id } => {
            let statement =
                prepared(client, "DELETE FROM records WHERE org_id = $1 AND entity = $2 AND id = $3")
                    .map_err(record_error)?;
            let deleted = client.execute(&statement, &[&org, entity, id]).map_err(record_error)?;
            if deleted == 0 {
                return Err(RecordError::NotFound { entity: entity.clone(), id: id.clone() });
            }
        }
    }
    Ok(())
}

thread_local! {
    /// The connection this thread is running work on (see `Connection::run`).
    static CURRENT_CONNECTION: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    /// The statements this thread prepared, per connection: the job path's statements
    /// are parsed once per connection, not on every call.
    static PREPARED: std::cell::RefCell<HashMap<(usize, &'static str), Statement>> = Default::default();
}

/// Records of one entity by id, in one statement: one primary-key lookup per id,
/// whatever the statistics say. With `id = ANY($3)` and a table filled since its last
/// ANALYZE (a bulk import into a new database), the planner estimated one row for the
/// (org, entity) prefix and read every record of the entity for each batch, filtering
/// the ids: quadratic, and enqueue fell to 2,800 events/s. `LIMIT 1` keeps the lateral
/// subquery from being flattened into a join that the planner may reorder.
const RECORDS_BY_ID: &str = "SELECT want.id, r.attributes FROM unnest($3::TEXT[]) AS want(id)
     CROSS JOIN LATERAL (SELECT attributes FROM records
         WHERE org_id = $1 AND entity = $2 AND id = want.id LIMIT 1) AS r";

fn prepared(
    client: &mut impl GenericClient,
    sql: &'static str,
) -> std::result::Result<Statement, ::postgres::Error> {
    let key = (CURRENT_CONNECTION.get(), sql);
    if let Some(statement) = PREPARED.with(|cache| cache.borrow().get(&key).cloned()) {
        return Ok(statement);
    }
    let statement = client.prepare(sql)?;
    PREPARED.with(|cache| cache.borrow_mut().insert(key, statement.clone()));
    Ok(statement)
}

/// Writes one batch: its record changes, its transitions, its new jobs.
fn write_batch(client: &mut impl GenericClient, batch: &Batch) -> Result<Vec<JobId>> {
    write_changes(client, &batch.changes).map_err(|e| Error::WriteConflict(e.to_string()))?;
    // Starts and completions without record writes go in one statement; an update of a
    // job already gathered sends what is gathered first, so each job's updates apply in
    // the order decided. The rest go one by one, in order.
    let mut gathered = Gathered::default();
    for update in &batch.updates {
        if gathered.must_precede(update) {
            gathered.send(client)?;
        }
        if !gathered.take(update) {
            apply_update(client, update)?;
        }
    }
    gathered.send(client)?;
    insert_jobs(client, &batch.jobs, !batch.unadopted)
}

/// Applies record changes in order; a run of creates (a bulk import's events) goes in
/// one statement rather than one round trip each.
fn write_changes(
    client: &mut impl GenericClient,
    changes: &[(OrgId, RecordChange)],
) -> std::result::Result<(), RecordError> {
    let mut rest = changes;
    while let Some((org, change)) = rest.first() {
        let creates = rest.iter().take_while(|(_, c)| matches!(c, RecordChange::Create { .. })).count();
        if creates > 1 {
            create_records(client, &rest[..creates])?;
            rest = &rest[creates..];
        } else {
            apply_change(client, i64::from(org.0), change)?;
            rest = &rest[1..];
        }
    }
    Ok(())
}

/// Inserts records in one statement; refuses, as one insert would, the first whose id
/// exists already (in the store or earlier in the run).
fn create_records(
    client: &mut impl GenericClient,
    creates: &[(OrgId, RecordChange)],
) -> std::result::Result<(), RecordError> {
    let (mut orgs, mut entities, mut ids, mut attributes) = (vec![], vec![], vec![], vec![]);
    for (org, change) in creates {
        if let RecordChange::Create { entity, id, attributes: written } = change {
            check_entity_name(entity)?;
            orgs.push(i64::from(org.0));
            entities.push(entity.as_str());
            ids.push(id.as_str());
            attributes.push(json(written));
        }
    }
    let statement = prepared(
        client,
        "INSERT INTO records (org_id, entity, id, attributes)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT DO NOTHING RETURNING org_id, entity, id",
    )
    .map_err(record_error)?;
    let rows = client.query(&statement, &[&orgs, &entities, &ids, &attributes]).map_err(record_error)?;
    if rows.len() == creates.len() {
        return Ok(());
    }
    let mut inserted: HashSet<(i64, String, String)> =
        rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
    for ((org, entity), id) in orgs.iter().zip(&entities).zip(&ids) {
        // Taken out when met: a second create of one id in the run is refused too.
        if !inserted.remove(&(*org, entity.to_string(), id.to_string())) {
            return Err(RecordError::Invalid(format!("a {entity} record with id {id} already exists")));
        }
    }
    Ok(())
}

/// Starts and plain completions gathered for one statement ([`steady::write`]).
#[derive(Default)]
struct Gathered {
    ids: HashSet<JobId>,
    rows: steady::Rows,
}

impl Gathered {
    /// Whether what is gathered must be written before `update`: it concerns a job
    /// already gathered (one statement cannot update a row twice).
    fn must_precede(&self, update: &JobUpdate) -> bool {
        self.ids.contains(&update.id())
    }

    /// Gathers a start or a plain completion ([`is_plain`]); whether it did.
    fn take(&mut self, update: &JobUpdate) -> bool {
        let plain = matches!(update, JobUpdate::Started { .. }) || is_plain(update);
        if plain {
            self.rows.push(update, None);
            self.ids.insert(update.id());
        }
        plain
    }

    /// Sends what is gathered, and starts over.
    fn send(&mut self, client: &mut impl GenericClient) -> Result<()> {
        let gathered = std::mem::take(self);
        if !gathered.ids.is_empty() {
            steady::write(client, &[], &gathered.rows)?;
        }
        Ok(())
    }
}

/// Writes one start or end of a run (its record writes and delete already done) with the
/// statement that writes a group's ([`steady::write`]).
fn write_row(client: &mut impl GenericClient, update: &JobUpdate) -> Result<()> {
    let mut rows = steady::Rows::default();
    rows.push(update, None);
    steady::write(client, &[], &rows).map(drop)
}

/// Whether a batch writes records (and so may fail alone with a write conflict).
fn writes_records(batch: &Batch) -> bool {
    !batch.changes.is_empty()
        || batch
            .updates
            .iter()
            .any(|u| matches!(u, JobUpdate::Finished { changes, .. } if !changes.is_empty()))
}

/// A completion that writes no records and deletes nothing: gathered with others.
fn is_plain(update: &JobUpdate) -> bool {
    matches!(update, JobUpdate::Finished { changes, delete, .. } if changes.is_empty() && !delete)
}

/// Locks the leases the batches are fenced by (`FOR SHARE`: a taker's epoch bump waits
/// for this commit, and this commit sees a bump committed before it), all at the start
/// and in org order, so the writer never holds a job's row while waiting for a lease (a
/// taker holds the lease while it adopts the org's jobs). Returns the fences that hold.
fn lock_fences(client: &mut impl GenericClient, batches: &[Batch]) -> Result<Vec<Fence>> {
    let mut orgs: Vec<i64> = batches.iter().filter_map(|b| b.fence).map(|f| i64::from(f.org.0)).collect();
    if orgs.is_empty() {
        return Ok(Vec::new());
    }
    orgs.sort_unstable();
    orgs.dedup();
    let statement = prepared(
        client,
        "SELECT org_id, epoch FROM shard_leases WHERE org_id = ANY($1) ORDER BY org_id FOR SHARE",
    )
    .db()?;
    let rows = client.query(&statement, &[&orgs]).db()?;
    Ok(rows
        .iter()
        .map(|row| Fence { org: OrgId(row.get::<_, i64>(0) as u32), epoch: row.get::<_, i64>(1) as u64 })
        .collect())
}

fn change_from_row(row: &Row) -> Result<Change> {
    let kind: String = row.get(2);
    Ok(Change {
        id: row.get::<_, i64>(0) as u64,
        org: OrgId(row.get::<_, i64>(1) as u32),
        kind: ChangeKind::of_name(&kind)
            .ok_or_else(|| Error::Corrupt(format!("a change of unknown kind '{kind}'")))?,
        key: row.get::<_, i64>(3) as u64,
        answer: row.get(4),
    })
}

/// Inserts jobs in one statement (`INSERT … SELECT FROM unnest`), with ids taken from the
/// sequence first so that they are known, and ascending, in the jobs' order.
fn insert_jobs(client: &mut impl GenericClient, jobs: &[NewJob], adopted: bool) -> Result<Vec<JobId>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let statement =
        prepared(client, "SELECT nextval('jobs_id_seq') FROM generate_series(1, $1::BIGINT)").db()?;
    let mut ids: Vec<i64> =
        client.query(&statement, &[&(jobs.len() as i64)]).db()?.iter().map(|row| row.get(0)).collect();
    ids.sort_unstable();
    let column = |f: &dyn Fn(&NewJob) -> i64| jobs.iter().map(f).collect::<Vec<i64>>();
    let text = |f: &dyn Fn(&NewJob) -> Option<String>| jobs.iter().map(f).collect::<Vec<Option<String>>>();
    let org = column(&|j| i64::from(j.org.0));
    let lane = column(&|j| j.lane.index() as i64);
    let operation: Vec<&str> = jobs.iter().map(|j| j.operation.name()).collect();
    let definition = column(&|j| j.definition.0 as i64);
    let version = column(&|j| i64::from(j.definition_version));
    let correlation: Vec<&str> = jobs.iter().map(|j| j.correlation_id.as_str()).collect();
    let depth = column(&|j| i64::from(j.depth));
    let entity = text(&|j| j.record.as_ref().map(|r| r.0.clone()));
    let record = text(&|j| j.record.as_ref().map(|r| r.1.clone()));
    let payload: Vec<&[u8]> = jobs.iter().map(|j| j.payload.as_slice()).collect();
    let token = text(&|j| j.dependency_token.clone());
    let status = column(&|j| i64::from(j.status.code()));
    let created = column(&|j| j.created_at);
    let completed: Vec<Option<i64>> =
        jobs.iter().map(|j| j.status.is_terminal().then_some(j.created_at)).collect();
    let code = text(&|j| j.error.as_ref().map(|e| e.0.clone()));
    let message = text(&|j| j.error.as_ref().map(|e| e.1.clone()));
    // Jobs inserted finished (a job refused at its creation) are counted at once.
    static INSERT: LazyLock<String> = LazyLock::new(|| {
        let counted = counting_finished(
            "unnest($2::BIGINT[], $3::BIGINT[], $13::BIGINT[]) AS u(org_id, lane, status)",
            '+',
        );
        format!(
            "WITH correlations AS (
            INSERT INTO job_correlations (job_id, org_id, correlation_id)
            SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $7::TEXT[])
         ), payloads AS (
            INSERT INTO job_payloads (job_id, payload) SELECT * FROM unnest($1::BIGINT[], $11::BYTEA[])
         ), {counted}
         INSERT INTO jobs (id, org_id, lane, operation, definition_id, definition_version, correlation_id,
            depth, record_entity, record_id, dependency_token, status, created_at, completed_at,
            error_code, error_message)
         SELECT u.id, u.org, u.lane, u.operation, u.definition, u.version, u.correlation, u.depth,
            u.entity, u.record, u.token, u.status, u.created, u.completed, u.code, u.message
         FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[],
            $6::BIGINT[], $7::TEXT[], $8::BIGINT[], $9::TEXT[], $10::TEXT[], $11::BYTEA[], $12::TEXT[],
            $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::TEXT[], $17::TEXT[])
            AS u(id, org, lane, operation, definition, version, correlation, depth, entity, record,
                 payload, token, status, created, completed, code, message)"
        )
    });
    let statement = prepared(client, &INSERT).db()?;
    client
        .execute(
            &statement,
            &[
                &ids,
                &org,
                &lane,
                &operation,
                &definition,
                &version,
                &correlation,
                &depth,
                &entity,
                &record,
                &payload,
                &token,
                &status,
                &created,
                &completed,
                &code,
                &message,
            ],
        )
        .db()?;
    if !adopted {
        let statement = prepared(
            client,
            "INSERT INTO unadopted_jobs (job_id, org_id) SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[])",
        )
        .db()?;
        client.execute(&statement, &[&ids, &org]).db()?;
    }
    for (id, job) in ids.iter().zip(jobs) {
        let Some(background) = &job.background else { continue };
        let state = match background.callback_uri {
            Some(_) => DeliveryState::Waiting,
            None => DeliveryState::None,
        };
        let statement = prepared(
            client,
            "INSERT INTO operations (job_id, org_id, callback_uri, expires_at, delivery_state)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .db()?;
        client
            .execute(
                &statement,
                &[
                    id,
                    &i64::from(job.org.0),
                    &background.callback_uri,
                    &background.expires_at,
                    &delivery_state_name(state),
                ],
            )
            .db()?;
    }
    Ok(ids.into_iter().map(|id| JobId(id as u64)).collect())
}

fn apply_update(client: &mut impl GenericClient, update: &JobUpdate) -> Result<()> {
    match update {
        JobUpdate::Status { id, at, status, error, .. } => {
            let completed = status.is_terminal().then_some(*at);
            let (code, message) = error.clone().unzip();
            static UPDATE: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "WITH changed AS (
                        UPDATE jobs SET status = $2, completed_at = COALESCE($3, completed_at),
                            error_code = COALESCE($4, error_code), error_message = COALESCE($5, error_message),
                            postpone_until = CASE WHEN $2::BIGINT = 10 THEN postpone_until ELSE NULL END
                        WHERE id = $1 AND status < 30 RETURNING org_id, lane, status
                     ), {}
                     SELECT COUNT(*) FROM changed",
                    counting_finished("changed", '+')
                )
            });
            let statement = prepared(client, &UPDATE).db()?;
            client
                .execute(
                    &statement,
                    &[&(id.0 as i64), &i64::from(status.code()), &completed, &code, &message],
                )
                .db()?;
        }
        JobUpdate::Finished { id, org, status, changes, delete, .. } => {
            if *status == Status::Succeeded {
                for change in changes {
                    apply_change(client, i64::from(org.0), change)
                        .map_err(|e| Error::WriteConflict(format!("record write of job {}: {e}", id.0)))?;
                }
            }
            if *delete {
                let statement = prepared(client, &DELETE_JOB).db()?;
                client.query_one(&statement, &[&(id.0 as i64)]).db()?;
                return Ok(());
            }
            write_row(client, update)?;
        }
        // The job path's own statement writes a start, as it writes an end.
        JobUpdate::Started { .. } => write_row(client, update)?,
    }
    Ok(())
}

fn definition_from_row(row: &Row) -> Result<Definition> {
    Ok(Definition {
        id: DefinitionId(row.get::<_, i64>(0) as u64),
        org: OrgId(row.get::<_, i64>(1) as u32),
        name: row.get(2),
        trigger: from_json(row.get::<_, &str>(3))?,
        kind: from_json::<DefinitionKind>(row.get::<_, &str>(4))?,
        active: row.get(5),
        auto_delete: row.get(6),
    })
}

fn token_from_row(row: &Row) -> TokenRow {
    TokenRow {
        id: row.get::<_, i64>(0) as u64,
        org: OrgId(row.get::<_, i64>(1) as u32),
        label: row.get(2),
        prefix: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
    }
}

impl PostgresStore {
    /// Runs `sql`, an update of one definition (`$1` its org, `$2` its id, `$3` the
    /// value): `NotFound` if the org has no such definition.
    fn update_definition<T>(&self, sql: &'static str, org: OrgId, id: DefinitionId, value: T) -> Result<()>
    where
        T: ToSql + Sync + Send + 'static,
    {
        self.writer.run(move |client| -> Result<()> {
            let changed = client.execute(sql, &[&i64::from(org.0), &(id.0 as i64), &value]).db()?;
            if changed == 0 {
                return Err(Error::NotFound("definition"));
            }
            Ok(())
        })?
    }

    /// Connects to the database at `url` (`postgres://user@host:port/database`) and
    /// brings its schema up to date.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_as(url, Opening::Migrate)
    }

    /// Connects for an operator's tool: a database without Sluice's schema, or with an
    /// older one, is refused, and nothing is created or migrated there.
    pub fn open_existing(url: &str) -> Result<Self> {
        Self::open_as(url, Opening::Existing)
    }

    fn open_as(url: &str, opening: Opening) -> Result<Self> {
        let writer = Connection::open(url)?;
        writer.run(move |client| -> Result<()> {
            // Notices (such as `IF NOT EXISTS`'s "already exists, skipping" at every
            // open) are not for the node's log.
            client.batch_execute("SET client_min_messages = warning").db()?;
            if opening == Opening::Existing {
                let versioned: bool =
                    client.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[]).db()?.get(0);
                if !versioned {
                    return Err(Error::NoStore);
                }
            }
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (applied BIGINT NOT NULL)")
                .db()?;
            let mut tx = client.transaction().db()?;
            // One migrating node at a time.
            tx.batch_execute("LOCK TABLE schema_version IN EXCLUSIVE MODE").db()?;
            let applied: i64 =
                tx.query_one("SELECT COALESCE(MAX(applied), 0) FROM schema_version", &[]).db()?.get(0);
            opening.check(applied, MIGRATIONS.len())?;
            for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                tx.batch_execute(migration).db()?;
                tx.execute("INSERT INTO schema_version (applied) VALUES ($1)", &[&(number as i64 + 1)])
                    .db()?;
            }
            tx.commit().db()?;
            Ok(())
        })??;
        let readers = (0..READERS).map(|_| Connection::open(url)).collect::<Result<Vec<_>>>()?;
        let coordinator = Connection::open(url)?;
        let listener = Connection::open(url)?;
        listener.run(|client| client.batch_execute(&format!("LISTEN {NEWS_CHANNEL}")).db())??;
        Ok(PostgresStore { writer, coordinator, readers, next_reader: AtomicUsize::new(0), listener })
    }

    /// A reader: an idle one if there is one (so one tenant's long query queues nobody
    /// behind it while another reader is free, as with SQLite), else the next in turn.
    fn read(&self) -> &Connection {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        (0..n)
            .map(|k| &self.readers[(start + k) % n])
            .find(|reader| reader.in_flight.load(Ordering::Relaxed) == 0)
            .unwrap_or(&self.readers[start % n])
    }

    /// Runs a job query on a read connection, its statement prepared once per connection
    /// (a statement parsed for each call cost the server more than running it).
    /// A listing (`JobQuery::Filtered`) is planned at each call instead, for the org it
    /// lists: a plan made for any org, as PostgreSQL may settle on for a statement after
    /// five runs, walked the primary key of every org's jobs in each lane and status's
    /// range when the statistics knew one org only (`EXPLAIN ANALYZE` by hand, 200,000
    /// jobs: 3 s, against 50 ms planned for the org).
    fn select_jobs(&self, sql: &'static str, parameters: JobQuery) -> Result<Vec<JobRow>> {
        self.read().run(move |client| -> Result<Vec<JobRow>> {
            let sql = match parameters {
                JobQuery::Filtered(..) => client.prepare(sql).db()?,
                _ => prepared(client, sql).db()?,
            };
            let rows = match parameters {
                JobQuery::Unfinished => client.query(&sql, &[]).db()?,
                JobQuery::One(org, id) => client.query(&sql, &[&org, &id]).db()?,
                JobQuery::Many(org, ids) => client.query(&sql, &[&org, &ids]).db()?,
                JobQuery::Filtered(org, f) => client
                    .query(
                        &sql,
                        &[
                            &org,
                            &f.status.map(|s| i64::from(s.code())),
                            &f.definition.map(|d| d.0 as i64),
                            &f.lane.map(|l| l.index() as i64),
                            &f.correlation_id,
                            &f.before.map(|j| j.0 as i64),
                            &i64::from(f.limit),
                        ],
                    )
                    .db()?,
            };
            rows.iter().map(job_from_row).collect()
        })?
    }
}

/// The job queries, as `static` text so that each connection prepares them once.
static UNFINISHED_JOBS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {JOB_COLUMNS} FROM {JOBS} WHERE status < 30 ORDER BY id"));
static JOB_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {JOB_COLUMNS} FROM {JOBS} WHERE org_id = $1 AND id = $2"));
/// The jobs are found by id alone, their org checked after: given both conditions at
/// once the planner, mid-run, chose to AND a bitmap of the ids with one of every job of
/// the org from `jobs_by_org_lane_status` (hundreds of thousands of entries for each
/// read of a few thousand jobs: a third of the server's time in a 200,000-job run).
static JOBS_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH found AS MATERIALIZED (SELECT {JOB_COLUMNS} FROM {JOBS} WHERE id = ANY($2))
         SELECT * FROM found WHERE org_id = $1"
    )
});
/// An org's newest jobs (`$1` org, `$2` status, `$3` definition, `$4` lane, `$5` a NULL
/// correlation id, `$6` only older than this id, `$7` how many; NULL: any). Ordering by
/// id alone walked the primary key backward over every org's jobs until it found
/// enough of this one's: an org with few jobs beside one with 200,000 waited 120-160 ms
/// for each listing. Instead each lane and status's own range of
/// `jobs_by_org_lane_status`, already in id order, gives at most `$7`, and the newest
/// of those are kept: only the org's own index entries are read.
static NEWEST_JOBS: LazyLock<String> = LazyLock::new(|| {
    let ranges: Vec<String> = Lane::ALL
        .iter()
        .flat_map(|lane| {
            Status::ALL.iter().map(move |status| format!("({}, {})", lane.index(), status.code()))
        })
        .collect();
    format!(
        "SELECT {JOB_COLUMNS} FROM {JOBS} WHERE $5::TEXT IS NULL AND id IN (
             SELECT newest.id FROM (VALUES {}) AS range (lane, status),
             LATERAL (SELECT id FROM jobs WHERE org_id = $1 AND lane = range.lane AND status = range.status
                 AND ($2::BIGINT IS NULL OR range.status = $2) AND ($4::BIGINT IS NULL OR range.lane = $4)
                 AND ($3::BIGINT IS NULL OR definition_id = $3) AND id < COALESCE($6::BIGINT, {})
                 ORDER BY id DESC LIMIT $7) AS newest)
         ORDER BY id DESC LIMIT $7",
        ranges.join(", "),
        i64::MAX
    )
});

/// An org's jobs of one correlation id (the parameters as [`NEWEST_JOBS`]'), found
/// through `job_correlations`.
static CORRELATED_JOBS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {JOB_COLUMNS} FROM {JOBS} WHERE id IN (SELECT job_id FROM job_correlations
                 WHERE org_id = $1 AND correlation_id = $5::TEXT)
             AND org_id = $1 AND ($2::BIGINT IS NULL OR status = $2)
             AND ($3::BIGINT IS NULL OR definition_id = $3) AND ($4::BIGINT IS NULL OR lane = $4)
             AND ($6::BIGINT IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7"
    )
});

/// Deletes an unfinished job (auto-delete on success: a finished one is final, as in the
/// SQLite store) with its correlation entry and payload; returns one row (the count).
static DELETE_JOB: LazyLock<String> = LazyLock::new(|| deleting_jobs("id = $1 AND status < 30"));

/// A statement that deletes the jobs `condition` selects, with their entries in
/// `job_correlations` and `job_payloads`, and returns how many jobs it deleted.
fn deleting_jobs(condition: &str) -> String {
    format!("{}, {} SELECT COUNT(*) FROM gone", jobs_gone(condition), counting_finished("gone", '-'))
}

/// `WITH` items that delete the jobs `condition` selects, with their entries in
/// `job_correlations` and `job_payloads`; the deleted rows are `gone`.
fn jobs_gone(condition: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM jobs WHERE {condition} RETURNING id, org_id, correlation_id, lane, status),
         unlinked AS (DELETE FROM job_correlations c USING gone g
            WHERE c.org_id = g.org_id AND c.correlation_id = g.correlation_id AND c.job_id = g.id),
         dropped AS (DELETE FROM job_payloads p USING gone g WHERE p.job_id = g.id)"
    )
}

/// Times a batch of the retention purge starts again after giving way to a holder's
/// commit ([`purge_once`]) before the purge fails for the hour (the next hour's tries
/// again; nothing is lost meanwhile).
const PURGE_ATTEMPTS: u32 = 5;

/// One batch of the retention purge (see [`Store::purge`]), in one transaction. The
/// purge deletes finished jobs of every org, while each org's holder commits its own
/// jobs' ends; both change `finished_job_counts`. A holder's transaction locks its org's
/// count rows statement by statement, so not in one global order, and a purge that
/// counted in each of its deletes (one per status, across orgs) could hold one of an
/// org's rows while waiting for another that the holder holds while waiting for the
/// first: a deadlock, which PostgreSQL ends after a second by aborting either side (the
/// holder's group then commits again). So the purge's deletes count nothing; their
/// rows' counts are gathered and written by one statement at the end, in key order,
/// waiting at most `lock_timeout` for any row: a purge that finds a holder in the way
/// gives way (rolls back; [`gave_way`]) rather than keeping that holder waiting.
fn purge_once(
    client: &mut Client,
    c: &Cutoffs,
    limit: i64,
) -> std::result::Result<(u64, u64), ::postgres::Error> {
    let mut tx = client.transaction()?;
    let mut gone = Gone::default();
    for (status, before) in
        [(Status::Succeeded, c.succeeded), (Status::Failed, c.failed), (Status::Canceled, c.canceled)]
    {
        gone.delete(
            &mut tx,
            // `status >= 30` spelled out, so that a generic plan can use the partial
            // index `jobs_finished` (see the SQLite store).
            "id IN (SELECT id FROM jobs
                WHERE status = $1 AND status >= 30 AND completed_at < $2 AND operation != $3
                LIMIT $4)",
            &[
                &i64::from(status.code()),
                &before,
                &Operation::BackgroundOperation.name(),
                &(limit - gone.jobs),
            ],
        )?;
    }
    gone.delete(
        &mut tx,
        "id IN (SELECT j.id FROM jobs j JOIN operations o ON o.job_id = j.id
            WHERE j.status >= 30 AND o.expires_at < $1 LIMIT $2)",
        &[&c.operations, &(limit - gone.jobs)],
    )?;
    let cleared = tx.execute(
        "UPDATE jobs SET trace = NULL WHERE id IN (SELECT id FROM jobs
            WHERE trace IS NOT NULL AND completed_at < $1 LIMIT $2)",
        &[&c.trace, &limit],
    )?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{}ms'", PURGE_LOCK_WAIT.as_millis()))?;
    gone.uncount(&mut tx)?;
    tx.commit()?;
    Ok((gone.jobs as u64, cleared))
}

/// How long the purge's count statement waits for a count row that a holder's commit
/// holds before the purge gives way: a holder's transaction lasts milliseconds.
const PURGE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether `e` is the purge giving way to a holder (`lock_timeout` ran out: SQLSTATE
/// 55P03), or losing a deadlock all the same.
fn gave_way(e: &::postgres::Error) -> bool {
    use ::postgres::error::SqlState;
    matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// The jobs a purge deleted: how many, and how many of each (org, lane, status).
#[derive(Default)]
struct Gone {
    jobs: i64,
    counts: std::collections::BTreeMap<(i64, i64, i64), i64>,
}

impl Gone {
    /// Deletes the finished jobs `condition` selects, with their entries in
    /// `job_correlations` and `job_payloads`, and counts them here.
    fn delete(
        &mut self,
        tx: &mut Transaction<'_>,
        condition: &str,
        parameters: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<(), ::postgres::Error> {
        let sql = format!(
            "{} SELECT org_id, lane, status, COUNT(*) FROM gone GROUP BY org_id, lane, status",
            jobs_gone(condition)
        );
        for row in tx.query(&sql, parameters)? {
            let n: i64 = row.get(3);
            self.jobs += n;
            *self.counts.entry((row.get(0), row.get(1), row.get(2))).or_default() += n;
        }
        Ok(())
    }

    /// Takes the deleted jobs off the finished counts, in one statement, in key order.
    fn uncount(&self, tx: &mut Transaction<'_>) -> std::result::Result<(), ::postgres::Error> {
        if self.counts.is_empty() {
            return Ok(());
        }
        let mut columns: [Vec<i64>; 4] = Default::default();
        for ((org, lane, status), n) in &self.counts {
            for (column, value) in columns.iter_mut().zip([*org, *lane, *status, -n]) {
                column.push(value);
            }
        }
        let [orgs, lanes, statuses, ns] = &columns;
        tx.execute(
            "INSERT INTO finished_job_counts (org_id, lane, status, n)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(o, l, s, n)
             WHERE s >= 30 ORDER BY o, l, s
             ON CONFLICT (org_id, lane, status) DO UPDATE SET n = finished_job_counts.n + EXCLUDED.n",
            &[orgs, lanes, statuses, ns],
        )?;
        Ok(())
    }
}

/// The parameters of a jobs query (owned: they travel to the connection's thread).
enum JobQuery {
    Unfinished,
    One(i64, i64),
    Many(i64, Vec<i64>),
    Filtered(i64, JobFilter),
}

impl RecordStore for PostgresStore {
    fn create(
        &self,
        org: &str,
        entity: &str,
        mut attributes: Attributes,
    ) -> std::result::Result<String, RecordError> {
        let id = take_record_id(&mut attributes)?;
        let change = RecordChange::Create { entity: entity.into(), id: id.clone(), attributes };
        let org = org_number(org)?;
        self.writer
            .run(move |client| apply_change(client, org, &change))
            .map_err(store_to_record_error)??;
        Ok(id)
    }

    fn retrieve_many(
        &self,
        org: &str,
        entity: &str,
        ids: &[String],
    ) -> std::result::Result<Vec<(String, Option<Attributes>)>, RecordError> {
        check_entity_name(entity)?;
        let (org, owned_entity, owned_ids) = (org_number(org)?, entity.to_owned(), ids.to_vec());
        let texts: HashMap<String, String> = self
            .read()
            .run(move |client| -> std::result::Result<HashMap<String, String>, RecordError> {
                let statement = prepared(client, RECORDS_BY_ID).map_err(record_error)?;
                let rows =
                    client.query(&statement, &[&org, &owned_entity, &owned_ids]).map_err(record_error)?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            })
            .map_err(store_to_record_error)??;
        records_in_order(ids, texts)
    }

    fn retrieve(
        &self,
        org: &str,
        entity: &str,
        id: &str,
        columns: &[String],
    ) -> std::result::Result<Entity, RecordError> {
        check_entity_name(entity)?;
        let (org, owned_entity, owned_id) = (org_number(org)?, entity.to_owned(), id.to_owned());
        let attributes = self
            .read()
            .run(move |client| read_attributes(client, org, &owned_entity, &owned_id))
            .map_err(store_to_record_error)??
            .ok_or_else(|| RecordError::NotFound { entity: entity.into(), id: id.into() })?;
        Ok(Entity {
            logical_name: entity.into(),
            id: id.into(),
            attributes: sluice_core::records::project(&attributes, columns),
        })
    }

    fn update(
        &self,
        org: &str,
        entity: &str,
        id: &str,
        attributes: Attributes,
    ) -> std::result::Result<(), RecordError> {
        if attributes.contains_key("id") {
            return Err(RecordError::Invalid("a record's id cannot be updated".into()));
        }
        let change = RecordChange::Update { entity: entity.into(), id: id.into(), attributes };
        let org = org_number(org)?;
        self.writer.run(move |client| apply_change(client, org, &change)).map_err(store_to_record_error)?
    }

    fn delete(&self, org: &str, entity: &str, id: &str) -> std::result::Result<(), RecordError> {
        let change = RecordChange::Delete { entity: entity.into(), id: id.into() };
        let org = org_number(org)?;
        self.writer.run(move |client| apply_change(client, org, &change)).map_err(store_to_record_error)?
    }

    fn query(&self, org: &str, filter: &Filter) -> std::result::Result<Vec<Entity>, RecordError> {
        self.query_counted(org, filter).map(|(found, _)| found)
    }

    /// Reads the org's records of the entity in id order, at most `MAX_QUERY_SCAN` of
    /// them, and filters them here (as SQLite does: one meaning of a filter).
    fn query_counted(
        &self,
        org: &str,
        filter: &Filter,
    ) -> std::result::Result<(Vec<Entity>, u64), RecordError> {
        check_entity_name(&filter.entity)?;
        let org = org_number(org)?;
        let top = filter.top.map_or(sluice_core::records::MAX_QUERY_RECORDS, |t| {
            (t as usize).min(sluice_core::records::MAX_QUERY_RECORDS)
        });
        let scan = sluice_core::records::MAX_QUERY_SCAN;
        let entity = filter.entity.clone();
        let rows: Vec<(String, String)> = self
            .read()
            .run(move |client| {
                client
                    .query(
                        "SELECT id, attributes FROM records WHERE org_id = $1 AND entity = $2
                         ORDER BY id LIMIT $3",
                        &[&org, &entity, &(scan as i64 + 1)],
                    )
                    .map(|rows| rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            })
            .map_err(store_to_record_error)?
            .map_err(record_error)?;
        if rows.len() > scan {
            return Err(sluice_core::records::query_too_broad(&filter.entity));
        }
        let mut found = Vec::new();
        let mut read = 0;
        for (id, text) in rows {
            read += 1;
            let attributes: Attributes = serde_json::from_str(&text)
                .map_err(|e| RecordError::Invalid(format!("corrupt record: {e}")))?;
            if filter.matches(&attributes) {
                found.push(Entity {
                    logical_name: filter.entity.clone(),
                    id,
                    attributes: filter.project(&attributes),
                });
                if found.len() >= top {
                    break;
                }
            }
        }
        Ok((found, read as u64))
    }
}

impl Store for PostgresStore {
    fn size_on_disk(&self) -> Result<u64> {
        self.read().run(|client| -> Result<u64> {
            let size: i64 = client.query_one("SELECT pg_database_size(current_database())", &[]).db()?.get(0);
            Ok(size as u64)
        })?
    }

    fn create_org(&self, name: &str) -> Result<OrgId> {
        let name = name.to_owned();
        self.writer.run(move |client| -> Result<OrgId> {
            let row = client
                .query_opt(
                    "INSERT INTO orgs (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
                    &[&name],
                )
                .db()?;
            let row = row.ok_or_else(|| Error::Conflict(format!("organisation '{name}'")))?;
            Ok(OrgId(row.get::<_, i64>(0) as u32))
        })?
    }

    fn orgs(&self) -> Result<Vec<(OrgId, String)>> {
        self.read().run(|client| -> Result<Vec<(OrgId, String)>> {
            let rows = client.query("SELECT id, name FROM orgs ORDER BY id", &[]).db()?;
            Ok(rows.iter().map(|row| (OrgId(row.get::<_, i64>(0) as u32), row.get(1))).collect())
        })?
    }

    fn set_quotas(&self, org: OrgId, lane: Lane, quotas: Quotas) -> Result<()> {
        self.writer.run(move |client| -> Result<()> {
            client
                .execute(
                    "INSERT INTO quotas (org_id, lane, quotas) VALUES ($1, $2, $3)
                 ON CONFLICT (org_id, lane) DO UPDATE SET quotas = excluded.quotas",
                    &[&i64::from(org.0), &(lane.index() as i64), &json(&quotas)],
                )
                .db()?;
            Ok(())
        })?
    }

    fn all_quotas(&self) -> Result<Vec<(OrgId, Lane, Quotas)>> {
        self.read().run(|client| -> Result<Vec<(OrgId, Lane, Quotas)>> {
            let rows = client.query("SELECT org_id, lane, quotas FROM quotas", &[]).db()?;
            rows.iter()
                .map(|row| {
                    Ok((
                        OrgId(row.get::<_, i64>(0) as u32),
                        lane_of(row.get(1))?,
                        from_json(row.get::<_, &str>(2))?,
                    ))
                })
                .collect()
        })?
    }

    fn webhook_secret(&self, org: OrgId, fresh: &str) -> Result<String> {
        let fresh = fresh.to_owned();
        self.writer.run(move |client| -> Result<String> {
            let row = client
                .query_opt(
                    "UPDATE orgs SET webhook_secret = COALESCE(webhook_secret, $2) WHERE id = $1
                 RETURNING webhook_secret",
                    &[&i64::from(org.0), &fresh],
                )
                .db()?;
            row.map(|row| row.get(0)).ok_or(Error::NotFound("organisation"))
        })?
    }

    fn create_token(
        &self,
        org: OrgId,
        label: &str,
        prefix: &str,
        hash: &str,
        at: Millis,
    ) -> Result<TokenRow> {
        let (label, prefix, hash) = (label.to_owned(), prefix.to_owned(), hash.to_owned());
        self.writer.run(move |client| -> Result<TokenRow> {
            let known =
                client.query_opt("SELECT 1 FROM orgs WHERE id = $1", &[&i64::from(org.0)]).db()?.is_some();
            if !known {
                return Err(Error::NotFound("organisation"));
            }
            let row = client
                .query_one(
                    "INSERT INTO tokens (org_id, label, prefix, hash, created_at) VALUES ($1, $2, $3, $4, $5)
                 RETURNING id",
                    &[&i64::from(org.0), &label, &prefix, &hash, &at],
                )
                .db()?;
            Ok(TokenRow {
                id: row.get::<_, i64>(0) as u64,
                org,
                label,
                prefix,
                created_at: at,
                revoked_at: None,
            })
        })?
    }

    fn tokens(&self, org: OrgId) -> Result<Vec<TokenRow>> {
        self.read().run(move |client| -> Result<Vec<TokenRow>> {
            let rows = client.query(
                "SELECT id, org_id, label, prefix, created_at, revoked_at FROM tokens WHERE org_id = $1 ORDER BY id",
                &[&i64::from(org.0)],
            ).db()?;
            Ok(rows.iter().map(token_from_row).collect())
        })?
    }

    fn revoke_token(&self, org: OrgId, id: u64, at: Millis) -> Result<()> {
        self.writer.run(move |client| -> Result<()> {
            let changed = client
                .execute(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $3) WHERE org_id = $1 AND id = $2",
                    &[&i64::from(org.0), &(id as i64), &at],
                )
                .db()?;
            if changed == 0 {
                return Err(Error::NotFound("token"));
            }
            Ok(())
        })?
    }

    fn token_org(&self, hash: &str) -> Result<Option<OrgId>> {
        let hash = hash.to_owned();
        self.read().run(move |client| -> Result<Option<OrgId>> {
            let row = client
                .query_opt("SELECT org_id FROM tokens WHERE hash = $1 AND revoked_at IS NULL", &[&hash])
                .db()?;
            Ok(row.map(|row| OrgId(row.get::<_, i64>(0) as u32)))
        })?
    }

    fn save_plugin(&self, org: OrgId, name: &str, content_hash: &str, bytes: &[u8]) -> Result<StoredPlugin> {
        let (name, content_hash, bytes) = (name.to_owned(), content_hash.to_owned(), bytes.to_vec());
        self.writer.run(move |client| -> Result<StoredPlugin> {
            client
                .execute(
                    "INSERT INTO plugins (org_id, name, content_hash, bytes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (org_id, content_hash) DO NOTHING",
                    &[&i64::from(org.0), &name, &content_hash, &bytes],
                )
                .db()?;
            let row = client
                .query_one(
                    "SELECT id FROM plugins WHERE org_id = $1 AND content_hash = $2",
                    &[&i64::from(org.0), &content_hash],
                )
                .db()?;
            Ok(StoredPlugin { id: row.get::<_, i64>(0) as u64, content_hash })
        })?
    }

    fn plugin_bytes(&self, org: OrgId, plugin: u64) -> Result<Option<Vec<u8>>> {
        self.read().run(move |client| -> Result<Option<Vec<u8>>> {
            let row = client
                .query_opt(
                    "SELECT bytes FROM plugins WHERE org_id = $1 AND id = $2",
                    &[&i64::from(org.0), &(plugin as i64)],
                )
                .db()?;
            Ok(row.map(|row| row.get(0)))
        })?
    }

    fn plugins(&self, org: OrgId) -> Result<Vec<PluginRow>> {
        self.read().run(move |client| -> Result<Vec<PluginRow>> {
            let rows = client.query(
                "SELECT id, name, content_hash, length(bytes)::BIGINT FROM plugins WHERE org_id = $1 ORDER BY id",
                &[&i64::from(org.0)],
            ).db()?;
            Ok(rows
                .iter()
                .map(|row| PluginRow {
                    id: row.get::<_, i64>(0) as u64,
                    name: row.get(1),
                    content_hash: row.get(2),
                    size: row.get::<_, i64>(3) as u64,
                })
                .collect())
        })?
    }

    fn save_definition(&self, d: &Definition) -> Result<DefinitionId> {
        let d = d.clone();
        self.writer.run(move |client| -> Result<DefinitionId> {
            let (trigger, kind) = (json(&d.trigger), json(&d.kind));
            if d.id.0 == 0 {
                let row = client
                    .query_one(
                        "INSERT INTO definitions (org_id, name, trigger, kind, active, auto_delete)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                        &[&i64::from(d.org.0), &d.name, &trigger, &kind, &d.active, &d.auto_delete],
                    )
                    .db()?;
                return Ok(DefinitionId(row.get::<_, i64>(0) as u64));
            }
            let changed = client
                .execute(
                    "UPDATE definitions SET name = $3, trigger = $4, kind = $5, active = $6, auto_delete = $7
                 WHERE org_id = $1 AND id = $2",
                    &[
                        &i64::from(d.org.0),
                        &(d.id.0 as i64),
                        &d.name,
                        &trigger,
                        &kind,
                        &d.active,
                        &d.auto_delete,
                    ],
                )
                .db()?;
            if changed == 0 {
                return Err(Error::NotFound("definition"));
            }
            Ok(d.id)
        })?
    }

    fn set_definition_active(&self, org: OrgId, id: DefinitionId, active: bool) -> Result<()> {
        self.update_definition(
            "UPDATE definitions SET active = $3 WHERE org_id = $1 AND id = $2",
            org,
            id,
            active,
        )
    }

    fn definitions(&self) -> Result<Vec<Definition>> {
        self.read().run(|client| -> Result<Vec<Definition>> {
            let rows = client
                .query("SELECT id, org_id, name, trigger, kind, active, auto_delete FROM definitions", &[])
                .db()?;
            rows.iter().map(definition_from_row).collect()
        })?
    }

    fn delete_definition(&self, org: OrgId, id: DefinitionId) -> Result<()> {
        self.writer.run(move |client| -> Result<()> {
            let changed = client
                .execute(
                    "DELETE FROM definitions WHERE org_id = $1 AND id = $2",
                    &[&i64::from(org.0), &(id.0 as i64)],
                )
                .db()?;
            if changed == 0 {
                return Err(Error::NotFound("definition"));
            }
            Ok(())
        })?
    }

    fn set_runaway_flag(&self, org: OrgId, id: DefinitionId, flag: Option<&str>) -> Result<()> {
        let flag = flag.map(str::to_owned);
        self.update_definition(
            "UPDATE definitions SET runaway_flag = $3 WHERE org_id = $1 AND id = $2",
            org,
            id,
            flag,
        )
    }

    fn runaway_flags(&self) -> Result<Vec<(OrgId, DefinitionId, String)>> {
        self.read().run(|client| -> Result<Vec<(OrgId, DefinitionId, String)>> {
            let rows = client
                .query(
                    "SELECT org_id, id, runaway_flag FROM definitions WHERE runaway_flag IS NOT NULL ORDER BY id",
                    &[],
                )
                .db()?;
            Ok(rows
                .iter()
                .map(|row| {
                    (OrgId(row.get::<_, i64>(0) as u32), DefinitionId(row.get::<_, i64>(1) as u64), row.get(2))
                })
                .collect())
        })?
    }

    fn commit_each(&self, batches: &[&Batch]) -> Result<Vec<Result<Vec<JobId>>>> {
        let batches: Vec<Batch> = batches.iter().map(|b| (*b).clone()).collect();
        self.writer.run(move |client| -> Result<Vec<Result<Vec<JobId>>>> {
            if let Some(results) = steady::commit(client, &batches) {
                return results;
            }
            let mut tx = client.transaction().db()?;
            let held = lock_fences(&mut tx, &batches)?;
            let mut results = Vec::with_capacity(batches.len());
            for batch in &batches {
                if let Some(fence) = batch.fence.filter(|fence| !held.contains(fence)) {
                    results.push(Err(Error::Fenced(fence.org)));
                    continue;
                }
                // A savepoint per batch that writes records (a nested transaction): one
                // whose record writes no longer apply is rolled back alone. Any other
                // failure fails the whole commit, so the rest need none (two round trips).
                if !writes_records(batch) {
                    results.push(Ok(write_batch(&mut tx, batch)?));
                    continue;
                }
                let mut savepoint = tx.transaction().db()?;
                match write_batch(&mut savepoint, batch) {
                    Ok(ids) => {
                        savepoint.commit().db()?;
                        results.push(Ok(ids));
                    }
                    Err(e @ Error::WriteConflict(_)) => {
                        savepoint.rollback().db()?;
                        results.push(Err(e));
                    }
                    Err(e) => return Err(e),
                }
            }
            tx.commit().db()?;
            if batches.iter().zip(&results).any(|(batch, result)| batch.unadopted && result.is_ok()) {
                tell_other_nodes(client);
            }
            Ok(results)
        })?
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRow>> {
        self.select_jobs(&UNFINISHED_JOBS, JobQuery::Unfinished)
    }

    fn job(&self, org: OrgId, id: JobId) -> Result<Option<JobRow>> {
        Ok(self.select_jobs(&JOB_BY_ID, JobQuery::One(i64::from(org.0), id.0 as i64))?.pop())
    }

    fn starts_by_id(&self, org: OrgId, ids: &[JobId]) -> Result<Vec<StartRow>> {
        // Whole rows, projected: one round trip either way.
        let ids = ids.iter().map(|id| id.0 as i64).collect();
        let rows = self.select_jobs(&JOBS_BY_ID, JobQuery::Many(i64::from(org.0), ids))?;
        Ok(rows.into_iter().map(StartRow::from).collect())
    }

    fn jobs(&self, org: OrgId, f: &JobFilter) -> Result<Vec<JobRow>> {
        let sql = if f.correlation_id.is_some() { &CORRELATED_JOBS } else { &NEWEST_JOBS };
        self.select_jobs(sql, JobQuery::Filtered(i64::from(org.0), f.clone()))
    }

    fn operation(&self, org: OrgId, job: JobId) -> Result<Option<OperationRow>> {
        self.read().run(move |client| -> Result<Option<OperationRow>> {
            let Some(row) = client.query_opt(
                "SELECT callback_uri, expires_at, delivery_state, delivery_attempts, delivery_error, delivered_at
                 FROM operations WHERE org_id = $1 AND job_id = $2",
                &[&i64::from(org.0), &(job.0 as i64)],
            ).db()?
            else {
                return Ok(None);
            };
            let state: String = row.get(2);
            let delivery = Delivery {
                state: from_json(&format!("\"{state}\""))?,
                attempts: row.get::<_, i64>(3) as u32,
                error: row.get(4),
                at: row.get(5),
            };
            Ok(Some(OperationRow { job, org, callback_uri: row.get(0), expires_at: row.get(1), delivery }))
        })?
    }

    fn record_delivery(&self, job: JobId, d: &Delivery) -> Result<()> {
        let d = d.clone();
        self.writer.run(move |client| -> Result<()> {
            client
                .execute(
                    "UPDATE operations SET delivery_state = $2, delivery_attempts = $3, delivery_error = $4,
                    delivered_at = $5 WHERE job_id = $1",
                    &[
                        &(job.0 as i64),
                        &delivery_state_name(d.state),
                        &i64::from(d.attempts),
                        &d.error,
                        &d.at,
                    ],
                )
                .db()?;
            Ok(())
        })?
    }

    fn undelivered_callbacks(&self) -> Result<Vec<(OrgId, JobId)>> {
        self.read().run(|client| -> Result<Vec<(OrgId, JobId)>> {
            let rows = client
                .query(
                    "SELECT o.org_id, o.job_id FROM operations o JOIN jobs j ON j.id = o.job_id
                 WHERE o.delivery_state = 'waiting' AND j.status >= 30 ORDER BY o.job_id",
                    &[],
                )
                .db()?;
            Ok(rows
                .iter()
                .map(|row| (OrgId(row.get::<_, i64>(0) as u32), JobId(row.get::<_, i64>(1) as u64)))
                .collect())
        })?
    }

    fn database_now(&self) -> Result<Millis> {
        self.coordinator.run(|client| -> Result<Millis> {
            Ok(client.query_one(&format!("SELECT {NOW_MS}"), &[]).db()?.get(0))
        })?
    }

    fn heartbeat(&self, node: &str, ttl: Millis) -> Result<Vec<String>> {
        let node = node.to_owned();
        self.coordinator.run(move |client| -> Result<Vec<String>> {
            client
                .execute(
                    &format!(
                        "INSERT INTO nodes (name, expires_at) VALUES ($1, {NOW_MS} + $2)
                     ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at"
                    ),
                    &[&node, &ttl],
                )
                .db()?;
            // Nodes dead for an hour are forgotten.
            client.execute(&format!("DELETE FROM nodes WHERE expires_at < {NOW_MS} - 3600000"), &[]).db()?;
            let rows = client
                .query(&format!("SELECT name FROM nodes WHERE expires_at > {NOW_MS} ORDER BY name"), &[])
                .db()?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })?
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        self.coordinator.run(|client| -> Result<Vec<Lease>> {
            let rows = client
                .query("SELECT org_id, node, epoch, expires_at FROM shard_leases ORDER BY org_id", &[])
                .db()?;
            Ok(rows
                .iter()
                .map(|row| Lease {
                    org: OrgId(row.get::<_, i64>(0) as u32),
                    node: row.get(1),
                    epoch: row.get::<_, i64>(2) as u64,
                    expires_at: row.get(3),
                })
                .collect())
        })?
    }

    fn take_lease(&self, node: &str, org: OrgId, ttl: Millis) -> Result<Option<Taken>> {
        let node = node.to_owned();
        self.coordinator.run(move |client| -> Result<Option<Taken>> {
            let mut tx = client.transaction().db()?;
            let org_id = i64::from(org.0);
            let row = tx.query_opt(
                &format!(
                    "INSERT INTO shard_leases (org_id, node, epoch, expires_at) VALUES ($1, $2, 1, {NOW_MS} + $3)
                     ON CONFLICT (org_id) DO UPDATE SET node = excluded.node,
                        epoch = shard_leases.epoch + 1, expires_at = excluded.expires_at
                     WHERE shard_leases.expires_at <= {NOW_MS} OR shard_leases.node = excluded.node
                     RETURNING epoch, released_at"
                ),
                &[&org_id, &node, &ttl],
            ).db()?;
            let Some(row) = row else { return Ok(None) };
            let (epoch, released_at): (i64, i64) = (row.get(0), row.get(1));
            tx.execute("DELETE FROM unadopted_jobs WHERE org_id = $1", &[&org_id]).db()?;
            let rows = tx.query(
                &format!("SELECT {JOB_COLUMNS} FROM {JOBS} WHERE org_id = $1 AND status < 30 ORDER BY id"),
                &[&org_id],
            ).db()?;
            let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
            tx.commit().db()?;
            Ok(Some(Taken { fence: Fence { org, epoch: epoch as u64 }, jobs, released_at }))
        })?
    }

    fn renew_leases(&self, node: &str, held: &[Fence], ttl: Millis) -> Result<Vec<OrgId>> {
        let (node, held) = (node.to_owned(), held.to_vec());
        self.coordinator.run(move |client| -> Result<Vec<OrgId>> {
            // One statement per lease, each its own transaction: a renewal never holds one
            // lease's row while waiting for another's (the writer holds them `FOR SHARE`).
            let mut renewed = Vec::new();
            for fence in held {
                let changed = client
                    .execute(
                        &format!(
                            "UPDATE shard_leases SET expires_at = {NOW_MS} + $4
                         WHERE org_id = $1 AND node = $2 AND epoch = $3"
                        ),
                        &[&i64::from(fence.org.0), &node, &(fence.epoch as i64), &ttl],
                    )
                    .db()?;
                if changed == 1 {
                    renewed.push(fence.org);
                }
            }
            Ok(renewed)
        })?
    }

    fn release_lease(&self, node: &str, fence: Fence, released_at: Millis) -> Result<()> {
        let node = node.to_owned();
        self.coordinator.run(move |client| -> Result<()> {
            client
                .execute(
                    "UPDATE shard_leases SET expires_at = 0, released_at = $4
                     WHERE org_id = $1 AND node = $2 AND epoch = $3",
                    &[&i64::from(fence.org.0), &node, &(fence.epoch as i64), &released_at],
                )
                .db()?;
            Ok(())
        })?
    }

    fn adopt_jobs(&self, held: &[Fence]) -> Result<Vec<JobRow>> {
        let held = held.to_vec();
        self.coordinator.run(move |client| -> Result<Vec<JobRow>> {
            let mut tx = client.transaction().db()?;
            let orgs: Vec<i64> = held.iter().map(|f| i64::from(f.org.0)).collect();
            let rows = tx
                .query(
                    "SELECT org_id, epoch FROM shard_leases WHERE org_id = ANY($1) ORDER BY org_id FOR SHARE",
                    &[&orgs],
                )
                .db()?;
            let holding: Vec<i64> = rows
                .iter()
                .map(|row| Fence {
                    org: OrgId(row.get::<_, i64>(0) as u32),
                    epoch: row.get::<_, i64>(1) as u64,
                })
                .filter(|fence| held.contains(fence))
                .map(|fence| i64::from(fence.org.0))
                .collect();
            if holding.is_empty() {
                return Ok(Vec::new());
            }
            let adopted: Vec<i64> = tx
                .query("DELETE FROM unadopted_jobs WHERE org_id = ANY($1) RETURNING job_id", &[&holding])
                .db()?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if adopted.is_empty() {
                tx.commit().db()?;
                return Ok(Vec::new());
            }
            let rows = tx
                .query(
                    &format!("SELECT {JOB_COLUMNS} FROM {JOBS} WHERE id = ANY($1) AND status < 30"),
                    &[&adopted],
                )
                .db()?;
            let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
            tx.commit().db()?;
            jobs.sort_by_key(|job| job.id);
            Ok(jobs)
        })?
    }

    fn starts_since(&self, org: OrgId, lane: Lane, since: Millis) -> Result<u32> {
        self.read().run(move |client| -> Result<u32> {
            let count: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM jobs WHERE org_id = $1 AND lane = $2 AND started_at >= $3",
                    &[&i64::from(org.0), &(lane.index() as i64), &since],
                )
                .db()?
                .get(0);
            Ok(count as u32)
        })?
    }

    fn workflow_starts_since(&self, org: OrgId, since: Millis, limit: u32) -> Result<Vec<WorkflowStart>> {
        self.read().run(move |client| -> Result<Vec<WorkflowStart>> {
            let rows = client
                .query(
                    "SELECT definition_id, record_entity, record_id, created_at, error_code FROM jobs
                     WHERE org_id = $1 AND created_at >= $2 AND operation = 'workflow' AND record_id IS NOT NULL
                     ORDER BY created_at DESC LIMIT $3",
                    &[&i64::from(org.0), &since, &i64::from(limit)],
                )
                .db()?;
            Ok(rows
                .iter()
                .rev()
                .map(|row| WorkflowStart {
                    definition: DefinitionId(row.get::<_, i64>(0) as u64),
                    record: (row.get::<_, Option<String>>(1).unwrap_or_default(), row.get(2)),
                    created_at: row.get(3),
                    error_code: row.get(4),
                })
                .collect())
        })?
    }

    fn wait_for_news(&self, timeout: std::time::Duration) -> Result<bool> {
        self.listener.run(move |client| -> Result<bool> {
            let mut notifications = client.notifications();
            let heard = notifications.timeout_iter(timeout).next().db()?.is_some();
            // Whatever else came meanwhile is the same news: one follow reads it all.
            while notifications.iter().next().db()?.is_some() {}
            Ok(heard)
        })?
    }

    fn log_change(&self, org: OrgId, kind: ChangeKind, key: u64) -> Result<u64> {
        self.coordinator.run(move |client| -> Result<u64> {
            let mut tx = client.transaction().db()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOG_LOCK]).db()?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO changes (org_id, kind, key) VALUES ($1, $2, $3) RETURNING id",
                    &[&i64::from(org.0), &kind.name(), &(key as i64)],
                )
                .db()?
                .get(0);
            tx.commit().db()?;
            tell_other_nodes(client);
            Ok(id as u64)
        })?
    }

    fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>> {
        self.coordinator.run(move |client| -> Result<Vec<Change>> {
            let rows = client
                .query(
                    "SELECT id, org_id, kind, key, answer FROM changes WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&(after as i64), &i64::from(limit)],
                )
                .db()?;
            rows.iter().map(change_from_row).collect()
        })?
    }

    fn last_change(&self) -> Result<u64> {
        self.coordinator.run(|client| -> Result<u64> {
            let id: i64 = client.query_one("SELECT COALESCE(MAX(id), 0) FROM changes", &[]).db()?.get(0);
            Ok(id as u64)
        })?
    }

    fn change(&self, id: u64) -> Result<Option<Change>> {
        self.read().run(move |client| -> Result<Option<Change>> {
            let row = client
                .query_opt("SELECT id, org_id, kind, key, answer FROM changes WHERE id = $1", &[&(id as i64)])
                .db()?;
            row.as_ref().map(change_from_row).transpose()
        })?
    }

    fn answer_change(&self, id: u64, answer: &str) -> Result<()> {
        let answer = answer.to_owned();
        self.coordinator.run(move |client| -> Result<()> {
            client.execute("UPDATE changes SET answer = $2 WHERE id = $1", &[&(id as i64), &answer]).db()?;
            Ok(())
        })?
    }

    fn take_singleton(&self, name: &str, node: &str, ttl: Millis) -> Result<bool> {
        let (name, node) = (name.to_owned(), node.to_owned());
        self.coordinator.run(move |client| -> Result<bool> {
            let row = client
                .query_opt(
                    &format!(
                        "INSERT INTO singletons (name, node, expires_at) VALUES ($1, $2, {NOW_MS} + $3)
                     ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                     WHERE singletons.expires_at <= {NOW_MS} OR singletons.node = excluded.node
                     RETURNING 1"
                    ),
                    &[&name, &node, &ttl],
                )
                .db()?;
            Ok(row.is_some())
        })?
    }

    fn purge(&self, c: &Cutoffs, limit: u64) -> Result<(u64, u64)> {
        let (c, limit) = (*c, limit as i64);
        self.writer.run(move |client| -> Result<(u64, u64)> {
            let mut attempt = 1;
            loop {
                match purge_once(client, &c, limit) {
                    Err(e) if gave_way(&e) && attempt < PURGE_ATTEMPTS => attempt += 1,
                    outcome => return outcome.db(),
                }
            }
        })?
    }

    fn job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>> {
        // Finished jobs from their counts (migration 9), unfinished ones from each lane's
        // range of `jobs_by_org_lane_status` below them.
        self.counts(
            org,
            "SELECT lane, status, n FROM finished_job_counts WHERE org_id = $1 AND n > 0
             UNION ALL
             SELECT lane, status, COUNT(*) FROM jobs
             WHERE org_id = $1 AND lane IN (0, 1, 2) AND status < 30 GROUP BY lane, status
             ORDER BY lane, status",
        )
    }

    fn finished_job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>> {
        self.counts(
            org,
            "SELECT lane, status, n FROM finished_job_counts WHERE org_id = $1 AND n > 0 ORDER BY lane, status",
        )
    }

    fn recount_finished_jobs(&self) -> Result<Vec<Miscount>> {
        self.writer.run(|client| -> Result<Vec<Miscount>> {
            let mut tx = client.transaction().db()?;
            // Every node's writers wait while the jobs are counted, so that no commit
            // lands between the count and its correction. `jobs` alone is locked: every
            // statement that changes the counts writes `jobs` in the same transaction,
            // and the job insert locks `finished_job_counts` (its first `WITH` item)
            // before `jobs`, so locking the counts table here too could deadlock with it.
            tx.batch_execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE").db()?;
            let mut rows = |sql: &str| -> Result<Vec<[i64; 4]>> {
                let rows = tx.query(sql, &[]).db()?;
                Ok(rows.iter().map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)]).collect())
            };
            let (kept, counted) = (rows(recount::KEPT)?, rows(recount::COUNTED)?);
            let miscounts = recount::miscounts(&kept, &counted)?;
            for m in &miscounts {
                tx.execute(
                    "INSERT INTO finished_job_counts (org_id, lane, status, n) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (org_id, lane, status) DO UPDATE SET n = EXCLUDED.n",
                    &[&i64::from(m.org.0), &(m.lane.index() as i64), &i64::from(m.status.code()), &m.counted],
                )
                .db()?;
            }
            tx.commit().db()?;
            Ok(miscounts)
        })?
    }
}

impl PostgresStore {
    /// Runs `sql`, a count of the org's (`$1`) jobs as (lane, status, count) rows.
    fn counts(&self, org: OrgId, sql: &'static str) -> Result<Vec<(Lane, Status, u64)>> {
        self.read().run(move |client| -> Result<Vec<(Lane, Status, u64)>> {
            let rows = client.query(sql, &[&i64::from(org.0)]).db()?;
            rows.iter()
                .map(|row| Ok((lane_of(row.get(0))?, status_of(row.get(1))?, row.get::<_, i64>(2) as u64)))
                .collect()
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new, empty database on the test server (`SLUICE_TEST_DATABASE_URL`); its URL.
    fn fresh_database() -> String {
        let base = std::env::var("SLUICE_TEST_DATABASE_URL").expect(
            "SLUICE_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
        );
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = Client::connect(&base, NoTls).expect("the test server answers");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let (server, _) = base.rsplit_once('/').expect("a URL naming a database");
        format!("{server}/{name}")
    }

    /// Reading records ahead looks each id up by the whole primary key even when the table
    /// was filled after its statistics were taken (here: never analysed), as a bulk import
    /// into a new database leaves it. Before, the generic plan scanned every record of the
    /// entity per batch.
    #[test]
    fn records_are_read_ahead_by_primary_key_on_a_table_never_analysed() {
        let url = fresh_database();
        drop(PostgresStore::open(&url).unwrap());
        let mut client = Client::connect(&url, NoTls).unwrap();
        client
            .batch_execute(
                "ALTER TABLE records SET (autovacuum_enabled = false);
                 INSERT INTO records (org_id, entity, id, attributes)
                     SELECT 1, 'account', 'a' || n, '{}' FROM generate_series(1, 5000) AS n;
                 SET plan_cache_mode = force_generic_plan;",
            )
            .unwrap();
        client
            .batch_execute(&format!("PREPARE read_ahead(BIGINT, TEXT, TEXT[]) AS {RECORDS_BY_ID}"))
            .unwrap();
        let plan: Vec<String> = client
            .query("EXPLAIN EXECUTE read_ahead(1, 'account', ARRAY['a1', 'a2'])", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Cond: ((org_id = $1) AND (entity = $2) AND (id = want.id))"), "{plan}");
        assert!(!plan.contains("Filter"), "{plan}");
        let store = PostgresStore::open(&url).unwrap();
        let found = store.retrieve_many("1", "account", &["a2".into(), "none".into(), "a1".into()]).unwrap();
        let ids: Vec<(&str, bool)> =
            found.iter().map(|(id, attributes)| (id.as_str(), attributes.is_some())).collect();
        assert_eq!(ids, [("a2", true), ("none", false), ("a1", true)]);
    }
}
