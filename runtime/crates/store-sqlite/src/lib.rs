//! The embedded backend: one SQLite file in WAL mode with `synchronous = FULL`, so an
//! acknowledged write survives a crash. One writing connection behind a mutex (SQLite
//! has one writer anyway, and batches — group commit — make that writer fast), and a
//! small pool of read-only connections: WAL lets readers run beside the writer, so API
//! reads, authentication and plug-ins' record reads never wait for a commit's fsync, and
//! a commit never waits for someone's query.

mod checkpoint;
mod finished;
mod schema;

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::checkpoint::Checkpointer;
use crate::finished::FinishedCounts;
use crate::schema::{MIGRATIONS, next_id_sql};
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
    OperationRow, PluginRow, StartRow, StoredPlugin, TokenRow, Trigger, WorkflowStart,
};

pub struct SqliteStore {
    connection: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    checkpointer: Checkpointer,
}

/// The writing connection, held. Let go, it tells the checkpoint thread how large the
/// log has grown (see `checkpoint`).
struct Writing<'a> {
    connection: MutexGuard<'a, Connection>,
    checkpointer: &'a Checkpointer,
}

impl Deref for Writing<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.checkpointer.after_write();
    }
}

/// Read-only connections per store: enough that one tenant's slow reads (at most
/// [`MAX_QUERY_SCAN`](sluice_core::records::MAX_QUERY_SCAN) records each, and at most
/// one at a time per org — the engine's record-call gate) leave readers for the others.
const READERS: usize = 6;

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: row.get::<_, i64>(0)? as u64,
        org: OrgId(row.get::<_, i64>(1)? as u32),
        label: row.get(2)?,
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(JobRow, i64, i64, String)> {
    let record = match (row.get::<_, Option<String>>(8)?, row.get::<_, Option<String>>(9)?) {
        (Some(entity), Some(id)) => Some((entity, id)),
        _ => None,
    };
    let job = JobRow {
        id: JobId(row.get::<_, i64>(0)? as u64),
        org: OrgId(row.get::<_, i64>(1)? as u32),
        lane: Lane::Priority,
        operation: Operation::AsyncPlugin,
        definition: DefinitionId(row.get::<_, i64>(4)? as u64),
        definition_version: row.get::<_, i64>(5)? as u32,
        correlation_id: row.get(6)?,
        depth: row.get::<_, i64>(7)? as u32,
        record,
        payload: payload_column(row, 10)?,
        dependency_token: row.get(11)?,
        status: Status::WaitingForResources,
        created_at: row.get(13)?,
        started_at: row.get(14)?,
        completed_at: row.get(15)?,
        postpone_until: row.get(16)?,
        retry_count: row.get::<_, i64>(17)? as u32,
        postponement_count: row.get::<_, i64>(18)? as u32,
        error_code: row.get(19)?,
        error_message: row.get(20)?,
        output: row.get(21)?,
        accounting: Accounting {
            fuel_used: row.get::<_, i64>(22)? as u64,
            wall_time_us: row.get::<_, i64>(23)? as u64,
            host_time_us: row.get::<_, i64>(24)? as u64,
            peak_memory_bytes: row.get::<_, i64>(25)? as u64,
        },
        trace: row.get(26)?,
        exception_times: row
            .get::<_, Option<String>>(27)?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
    };
    Ok((job, row.get(2)?, row.get(12)?, row.get(3)?))
}

fn finish_job(parts: (JobRow, i64, i64, String)) -> Result<JobRow> {
    let (mut job, lane, status, operation) = parts;
    job.lane = lane_of(lane)?;
    job.status = status_of(status)?;
    job.operation = operation_of(&operation)?;
    Ok(job)
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_as(path, Opening::Migrate)
    }

    /// Opens the store at `path` for an operator's tool: a missing file, one without
    /// Sluice's schema or with an older one is refused, and left as it was.
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NoStore);
        }
        {
            // Read before anything is set on the file (its journal mode, its owner's
            // permissions): a file refused keeps them.
            let connection =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).db()?;
            let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).db()?;
            Opening::Existing.check(applied, MIGRATIONS.len())?;
        }
        Self::open_as(path, Opening::Existing)
    }

    fn open_as(path: &Path, opening: Opening) -> Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            sluice_core::files::private_dir(parent)?;
        }
        // Every org's records and secrets are in this file: its owner's only.
        sluice_core::files::private_file(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            if Path::new(&side).exists() {
                sluice_core::files::private_file(Path::new(&side))?;
            }
        }
        let mut connection = Connection::open(path).db()?;
        connection.pragma_update(None, "journal_mode", "WAL").db()?;
        connection.pragma_update(None, "synchronous", "FULL").db()?;
        connection.pragma_update(None, "foreign_keys", "ON").db()?;
        tune(&connection)?;
        connection.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).db()?;
        connection.busy_timeout(std::time::Duration::from_secs(10)).db()?;
        let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).db()?;
        opening.check(applied, MIGRATIONS.len())?;
        for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let tx = connection.transaction().db()?;
            tx.execute_batch(migration).db()?;
            tx.pragma_update(None, "user_version", number as i64 + 1).db()?;
            tx.commit().db()?;
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path).db()?;
            reader.pragma_update(None, "query_only", "ON").db()?;
            tune(&reader)?;
            reader.busy_timeout(std::time::Duration::from_secs(10)).db()?;
            readers.push(Mutex::new(reader));
        }
        let checkpointer = Checkpointer::start(path, &connection).db()??;
        Ok(SqliteStore {
            connection: Mutex::new(connection),
            readers,
            next_reader: AtomicUsize::new(0),
            checkpointer,
        })
    }

    /// The writing connection.
    fn lock(&self) -> Writing<'_> {
        // A panic while holding the lock cannot leave a transaction open (rusqlite rolls
        // back on drop), so the connection is still usable.
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        Writing { connection, checkpointer: &self.checkpointer }
    }

    /// A read-only connection: a free one if there is one, else the next in turn. Each
    /// statement reads the latest committed state (WAL snapshot at its start).
    fn read(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for n in 0..self.readers.len() {
            match self.readers[(start + n) % self.readers.len()].try_lock() {
                Ok(reader) => return reader,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % self.readers.len()].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The driver's failures as the store's (`?` cannot convert them by itself: the store's
/// [`Error`] belongs to `sluice-store`, which names no driver).
trait OrDatabase<T> {
    fn db(self) -> Result<T>;
}

impl<T> OrDatabase<T> for std::result::Result<T, rusqlite::Error> {
    fn db(self) -> Result<T> {
        self.map_err(|e| Error::Database(e.to_string()))
    }
}

fn record_error(e: rusqlite::Error) -> RecordError {
    RecordError::Invalid(format!("record storage failed: {e}"))
}

fn read_attributes(
    tx: &Connection,
    org: i64,
    entity: &str,
    id: &str,
) -> std::result::Result<Option<Attributes>, RecordError> {
    let text: Option<String> = tx
        .prepare_cached("SELECT attributes FROM records WHERE org_id = ?1 AND entity = ?2 AND id = ?3")
        .and_then(|mut read| read.query_row(params![org, entity, id], |row| row.get(0)).optional())
        .map_err(record_error)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| RecordError::Invalid(format!("corrupt record: {e}"))))
        .transpose()
}

/// Applies one record change; shared by direct writes and job completions.
fn apply_change(tx: &Connection, org: i64, change: &RecordChange) -> std::result::Result<(), RecordError> {
    match change {
        RecordChange::Create { entity, id, attributes } => {
            check_entity_name(entity)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO records (org_id, entity, id, attributes) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut insert| insert.execute(params![org, entity, id, json(attributes)]))
                .map_err(record_error)?;
            if inserted == 0 {
                return Err(RecordError::Invalid(format!("a {entity} record with id {id} already exists")));
            }
        }
        RecordChange::Update { entity, id, attributes } => {
            let mut record = read_attributes(tx, org, entity, id)?
                .ok_or_else(|| RecordError::NotFound { entity: entity.clone(), id: id.clone() })?;
            merge(&mut record, attributes);
            tx.prepare_cached(
                "UPDATE records SET attributes = ?4 WHERE org_id = ?1 AND entity = ?2 AND id = ?3",
            )
            .and_then(|mut update| update.execute(params![org, entity, id, json(&record)]))
            .map_err(record_error)?;
        }
        RecordChange::Delete { entity, id } => {
            let deleted = tx
                .prepare_cached("DELETE FROM records WHERE org_id = ?1 AND entity = ?2 AND id = ?3")
                .and_then(|mut delete| delete.execute(params![org, entity, id]))
                .map_err(record_error)?;
            if deleted == 0 {
                return Err(RecordError::NotFound { entity: entity.clone(), id: id.clone() });
            }
        }
    }
    Ok(())
}

impl RecordStore for SqliteStore {
    fn create(
        &self,
        org: &str,
        entity: &str,
        mut attributes: Attributes,
    ) -> std::result::Result<String, RecordError> {
        let id = take_record_id(&mut attributes)?;
        let change = RecordChange::Create { entity: entity.into(), id: id.clone(), attributes };
        apply_change(&self.lock(), org_number(org)?, &change)?;
        Ok(id)
    }

    fn retrieve(
        &self,
        org: &str,
        entity: &str,
        id: &str,
        columns: &[String],
    ) -> std::result::Result<Entity, RecordError> {
        check_entity_name(entity)?;
        let attributes = read_attributes(&self.read(), org_number(org)?, entity, id)?
            .ok_or_else(|| RecordError::NotFound { entity: entity.into(), id: id.into() })?;
        Ok(Entity {
            logical_name: entity.into(),
            id: id.into(),
            attributes: sluice_core::records::project(&attributes, columns),
        })
    }

    fn retrieve_many(
        &self,
        org: &str,
        entity: &str,
        ids: &[String],
    ) -> std::result::Result<Vec<(String, Option<Attributes>)>, RecordError> {
        check_entity_name(entity)?;
        let org = org_number(org)?;
        let listed = serde_json::to_string(ids).map_err(|e| RecordError::Invalid(e.to_string()))?;
        let connection = self.read();
        let mut read = connection
            .prepare_cached(
                "SELECT id, attributes FROM records
                 WHERE org_id = ?1 AND entity = ?2 AND id IN (SELECT value FROM json_each(?3))",
            )
            .map_err(record_error)?;
        let found: HashMap<String, String> = read
            .query_map(params![org, entity, listed], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(record_error)?;
        records_in_order(ids, found)
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
        apply_change(&self.lock(), org_number(org)?, &change)
    }

    fn delete(&self, org: &str, entity: &str, id: &str) -> std::result::Result<(), RecordError> {
        apply_change(
            &self.lock(),
            org_number(org)?,
            &RecordChange::Delete { entity: entity.into(), id: id.into() },
        )
    }

    fn query(&self, org: &str, filter: &Filter) -> std::result::Result<Vec<Entity>, RecordError> {
        self.query_counted(org, filter).map(|(found, _)| found)
    }

    /// Reads the org's records of the entity in id order (the primary key's range),
    /// at most `MAX_QUERY_SCAN` of them, on a reader connection.
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
        let connection = self.read();
        let mut statement = connection
            .prepare_cached(
                "SELECT id, attributes FROM records WHERE org_id = ?1 AND entity = ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(record_error)?;
        let rows = statement
            .query_map(params![org, filter.entity, scan as i64 + 1], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(record_error)?;
        let mut found = Vec::new();
        let mut read = 0;
        for row in rows {
            if read == scan {
                return Err(sluice_core::records::query_too_broad(&filter.entity));
            }
            read += 1;
            let (id, text) = row.map_err(record_error)?;
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

fn definition_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, i64, String, String, String, bool, bool)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
}

impl Store for SqliteStore {
    /// Bytes of the database file (its pages).
    fn size_on_disk(&self) -> Result<u64> {
        let connection = self.lock();
        let pages: i64 = connection.pragma_query_value(None, "page_count", |r| r.get(0)).db()?;
        let size: i64 = connection.pragma_query_value(None, "page_size", |r| r.get(0)).db()?;
        Ok((pages * size) as u64)
    }

    fn create_org(&self, name: &str) -> Result<OrgId> {
        let connection = self.lock();
        let inserted =
            connection.execute("INSERT OR IGNORE INTO orgs (name) VALUES (?1)", params![name]).db()?;
        if inserted == 0 {
            return Err(Error::Conflict(format!("organisation '{name}'")));
        }
        Ok(OrgId(connection.last_insert_rowid() as u32))
    }

    fn orgs(&self) -> Result<Vec<(OrgId, String)>> {
        let connection = self.read();
        let mut statement = connection.prepare("SELECT id, name FROM orgs ORDER BY id").db()?;
        let rows =
            statement.query_map([], |row| Ok((OrgId(row.get::<_, i64>(0)? as u32), row.get(1)?))).db()?;
        rows.collect::<rusqlite::Result<_>>().db()
    }

    fn set_quotas(&self, org: OrgId, lane: Lane, quotas: Quotas) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO quotas (org_id, lane, quotas) VALUES (?1, ?2, ?3)
             ON CONFLICT (org_id, lane) DO UPDATE SET quotas = excluded.quotas",
                params![org.0, lane.index() as i64, json(&quotas)],
            )
            .db()?;
        Ok(())
    }

    fn all_quotas(&self) -> Result<Vec<(OrgId, Lane, Quotas)>> {
        let connection = self.read();
        let mut statement = connection.prepare("SELECT org_id, lane, quotas FROM quotas").db()?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)))
            .db()?;
        rows.map(|row| {
            let (org, lane, quotas) = row.db()?;
            Ok((OrgId(org as u32), lane_of(lane)?, from_json(&quotas)?))
        })
        .collect()
    }

    fn webhook_secret(&self, org: OrgId, fresh: &str) -> Result<String> {
        let connection = self.lock();
        connection
            .execute(
                "UPDATE orgs SET webhook_secret = COALESCE(webhook_secret, ?2) WHERE id = ?1",
                params![org.0, fresh],
            )
            .db()?;
        connection
            .query_row("SELECT webhook_secret FROM orgs WHERE id = ?1", params![org.0], |row| row.get(0))
            .optional()
            .db()?
            .ok_or(Error::NotFound("organisation"))
    }

    fn create_token(
        &self,
        org: OrgId,
        label: &str,
        prefix: &str,
        hash: &str,
        at: Millis,
    ) -> Result<TokenRow> {
        let connection = self.lock();
        let known: bool = connection
            .query_row("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)", params![org.0], |r| r.get(0))
            .db()?;
        if !known {
            return Err(Error::NotFound("organisation"));
        }
        connection
            .execute(
                "INSERT INTO tokens (org_id, label, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org.0, label, prefix, hash, at],
            )
            .db()?;
        let id = connection.last_insert_rowid() as u64;
        Ok(TokenRow { id, org, label: label.into(), prefix: prefix.into(), created_at: at, revoked_at: None })
    }

    fn tokens(&self, org: OrgId) -> Result<Vec<TokenRow>> {
        let connection = self.read();
        let mut statement = connection.prepare(
            "SELECT id, org_id, label, prefix, created_at, revoked_at FROM tokens WHERE org_id = ?1 ORDER BY id",
        ).db()?;
        let rows = statement.query_map(params![org.0], token_from_row).db()?;
        rows.collect::<rusqlite::Result<_>>().db()
    }

    fn revoke_token(&self, org: OrgId, id: u64, at: Millis) -> Result<()> {
        let changed = self
            .lock()
            .execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?3) WHERE org_id = ?1 AND id = ?2",
                params![org.0, id as i64, at],
            )
            .db()?;
        if changed == 0 {
            return Err(Error::NotFound("token"));
        }
        Ok(())
    }

    fn token_org(&self, hash: &str) -> Result<Option<OrgId>> {
        let connection = self.read();
        let mut statement = connection
            .prepare_cached("SELECT org_id FROM tokens WHERE hash = ?1 AND revoked_at IS NULL")
            .db()?;
        let org: Option<i64> = statement.query_row(params![hash], |row| row.get(0)).optional().db()?;
        Ok(org.map(|o| OrgId(o as u32)))
    }

    fn save_plugin(&self, org: OrgId, name: &str, content_hash: &str, bytes: &[u8]) -> Result<StoredPlugin> {
        let connection = self.lock();
        connection
            .execute(
                "INSERT OR IGNORE INTO plugins (org_id, name, content_hash, bytes) VALUES (?1, ?2, ?3, ?4)",
                params![org.0, name, content_hash, bytes],
            )
            .db()?;
        let id: i64 = connection
            .query_row(
                "SELECT id FROM plugins WHERE org_id = ?1 AND content_hash = ?2",
                params![org.0, content_hash],
                |row| row.get(0),
            )
            .db()?;
        Ok(StoredPlugin { id: id as u64, content_hash: content_hash.into() })
    }

    fn plugin_bytes(&self, org: OrgId, plugin: u64) -> Result<Option<Vec<u8>>> {
        self.read()
            .query_row(
                "SELECT bytes FROM plugins WHERE org_id = ?1 AND id = ?2",
                params![org.0, plugin as i64],
                |row| row.get(0),
            )
            .optional()
            .db()
    }

    fn plugins(&self, org: OrgId) -> Result<Vec<PluginRow>> {
        let connection = self.read();
        let mut statement = connection
            .prepare(
                "SELECT id, name, content_hash, length(bytes) FROM plugins WHERE org_id = ?1 ORDER BY id",
            )
            .db()?;
        let rows = statement
            .query_map(params![org.0], |row| {
                Ok(PluginRow {
                    id: row.get::<_, i64>(0)? as u64,
                    name: row.get(1)?,
                    content_hash: row.get(2)?,
                    size: row.get::<_, i64>(3)? as u64,
                })
            })
            .db()?;
        rows.collect::<rusqlite::Result<_>>().db()
    }

    fn save_definition(&self, d: &Definition) -> Result<DefinitionId> {
        let connection = self.lock();
        let (trigger, kind) = (json(&d.trigger), json(&d.kind));
        if d.id.0 == 0 {
            let sql = format!(
                "INSERT INTO definitions (id, org_id, name, trigger, kind, active, auto_delete)
                 VALUES ({}, ?1, ?2, ?3, ?4, ?5, ?6)",
                next_id_sql("definitions")
            );
            connection
                .execute(&sql, params![d.org.0, d.name, trigger, kind, d.active, d.auto_delete])
                .db()?;
            return Ok(DefinitionId(connection.last_insert_rowid() as u64));
        }
        let changed = connection
            .execute(
                "UPDATE definitions SET name = ?3, trigger = ?4, kind = ?5, active = ?6, auto_delete = ?7
             WHERE org_id = ?1 AND id = ?2",
                params![d.org.0, d.id.0 as i64, d.name, trigger, kind, d.active, d.auto_delete],
            )
            .db()?;
        if changed == 0 {
            return Err(Error::NotFound("definition"));
        }
        Ok(d.id)
    }

    fn set_definition_active(&self, org: OrgId, id: DefinitionId, active: bool) -> Result<()> {
        self.update_definition(
            "UPDATE definitions SET active = ?3 WHERE org_id = ?1 AND id = ?2",
            org,
            id,
            &active,
        )
    }

    fn definitions(&self) -> Result<Vec<Definition>> {
        let connection = self.read();
        let mut statement = connection
            .prepare("SELECT id, org_id, name, trigger, kind, active, auto_delete FROM definitions")
            .db()?;
        let rows = statement.query_map([], definition_from_row).db()?;
        rows.map(|row| {
            let (id, org, name, trigger, kind, active, auto_delete) = row.db()?;
            Ok(Definition {
                id: DefinitionId(id as u64),
                org: OrgId(org as u32),
                name,
                trigger: from_json::<Trigger>(&trigger)?,
                kind: from_json::<DefinitionKind>(&kind)?,
                active,
                auto_delete,
            })
        })
        .collect()
    }

    fn delete_definition(&self, org: OrgId, id: DefinitionId) -> Result<()> {
        let changed = self
            .lock()
            .execute("DELETE FROM definitions WHERE org_id = ?1 AND id = ?2", params![org.0, id.0 as i64])
            .db()?;
        if changed == 0 {
            return Err(Error::NotFound("definition"));
        }
        Ok(())
    }

    fn set_runaway_flag(&self, org: OrgId, id: DefinitionId, flag: Option<&str>) -> Result<()> {
        self.update_definition(
            "UPDATE definitions SET runaway_flag = ?3 WHERE org_id = ?1 AND id = ?2",
            org,
            id,
            &flag,
        )
    }

    fn runaway_flags(&self) -> Result<Vec<(OrgId, DefinitionId, String)>> {
        let connection = self.read();
        let mut statement = connection
            .prepare(
                "SELECT org_id, id, runaway_flag FROM definitions WHERE runaway_flag IS NOT NULL ORDER BY id",
            )
            .db()?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    OrgId(row.get::<_, i64>(0)? as u32),
                    DefinitionId(row.get::<_, i64>(1)? as u64),
                    row.get(2)?,
                ))
            })
            .db()?;
        rows.map(|row| row.db()).collect()
    }

    fn commit_each(&self, batches: &[&Batch]) -> Result<Vec<Result<Vec<JobId>>>> {
        let mut connection = self.lock();
        let mut tx = connection.transaction().db()?;
        let mut results = Vec::with_capacity(batches.len());
        let mut counts = FinishedCounts::default();
        for batch in batches {
            // A savepoint per batch: one whose record writes no longer apply is rolled
            // back alone and the others commit.
            let savepoint = tx.savepoint().db()?;
            let mut batch_counts = FinishedCounts::default();
            match write_batch(&savepoint, batch, &mut batch_counts) {
                Ok(ids) => {
                    savepoint.commit().db()?;
                    counts.merge(batch_counts);
                    results.push(Ok(ids));
                }
                Err(e @ (Error::WriteConflict(_) | Error::Fenced(_))) => {
                    // Dropping a savepoint rolls it back.
                    drop(savepoint);
                    results.push(Err(e));
                }
                Err(e) => return Err(e),
            }
        }
        counts.write(&tx)?;
        tx.commit().db()?;
        Ok(results)
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRow>> {
        self.select_jobs(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {UNFINISHED} ORDER BY id"), params![])
    }

    fn job(&self, org: OrgId, id: JobId) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE org_id = ?1 AND id = ?2");
        Ok(self.select_jobs(&sql, params![org.0, id.0 as i64])?.pop())
    }

    fn starts_by_id(&self, org: OrgId, ids: &[JobId]) -> Result<Vec<StartRow>> {
        // An embedded read costs microseconds, no round trip to batch away; but a point
        // lookup descends the table's tree, and a read ahead asks for a definition's next
        // jobs, mostly consecutive ids: those are read as ranges of the table, each page
        // once (a tenth of the cost a row past a million jobs, `sluice bench backlog`).
        let connection = self.read();
        let mut sorted: Vec<u64> = ids.iter().map(|id| id.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut found = Vec::with_capacity(sorted.len());
        for run in dense_runs(&sorted) {
            if run.len() < RANGE_READ_MIN {
                let mut statement = connection.prepare_cached(&START_BY_ID).db()?;
                for id in run {
                    let mut rows = statement.query(params![*id as i64]).db()?;
                    if let Some(row) = rows.next().db()? {
                        found.extend(start_of_org(row, org)?);
                    }
                }
                continue;
            }
            let (first, last) = (run[0], run[run.len() - 1]);
            let mut statement = connection.prepare_cached(&STARTS_IN_RANGE).db()?;
            let mut rows = statement.query(params![first as i64, last as i64]).db()?;
            let mut wanted = run.iter().peekable();
            while let Some(row) = rows.next().db()? {
                let id = row.get::<_, i64>(0).db()? as u64;
                while wanted.next_if(|w| **w < id).is_some() {}
                if wanted.next_if_eq(&&id).is_some() {
                    found.extend(start_of_org(row, org)?);
                }
            }
        }
        Ok(found)
    }

    fn jobs(&self, org: OrgId, f: &JobFilter) -> Result<Vec<JobRow>> {
        let status = f.status.map(Status::code);
        let lane = f.lane.map(|l| l.index() as i64);
        let before = f.before.map(|j| j.0 as i64);
        if f.definition.is_none() && f.correlation_id.is_none() {
            return self.select_jobs(&NEWEST_JOBS, params![org.0, status, lane, before, f.limit]);
        }
        // A correlation id is found through its own index; a definition's jobs are
        // sought among all of the org's (a cost of the org's own: its reads run one at
        // a time, `Service::org_read`).
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE org_id = ?1 AND (?2 IS NULL OR status = ?2)
             AND (?3 IS NULL OR definition_id = ?3) AND (?4 IS NULL OR lane = ?4)
             AND (?5 IS NULL OR correlation_id = ?5) AND id < COALESCE(?6, {MAX_ID})
             ORDER BY id DESC LIMIT ?7"
        );
        self.select_jobs(
            &sql,
            params![org.0, status, f.definition.map(|d| d.0 as i64), lane, f.correlation_id, before, f.limit],
        )
    }

    fn operation(&self, org: OrgId, job: JobId) -> Result<Option<OperationRow>> {
        let connection = self.read();
        let row = connection
            .query_row(
                "SELECT callback_uri, expires_at, delivery_state, delivery_attempts, delivery_error, delivered_at
                 FROM operations WHERE org_id = ?1 AND job_id = ?2",
                params![org.0, job.0 as i64],
                |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional().db()?;
        let Some((callback_uri, expires_at, state, attempts, error, at)) = row else { return Ok(None) };
        let delivery =
            Delivery { state: from_json(&format!("\"{state}\""))?, attempts: attempts as u32, error, at };
        Ok(Some(OperationRow { job, org, callback_uri, expires_at, delivery }))
    }

    fn record_delivery(&self, job: JobId, d: &Delivery) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE operations SET delivery_state = ?2, delivery_attempts = ?3, delivery_error = ?4,
                delivered_at = ?5 WHERE job_id = ?1",
                params![job.0 as i64, delivery_state_name(d.state), d.attempts, d.error, d.at],
            )
            .db()?;
        Ok(())
    }

    fn undelivered_callbacks(&self) -> Result<Vec<(OrgId, JobId)>> {
        let connection = self.read();
        let mut statement = connection
            .prepare(
                "SELECT o.org_id, o.job_id FROM operations o JOIN jobs j ON j.id = o.job_id
             WHERE o.delivery_state = 'waiting' AND j.status >= 30 ORDER BY o.job_id",
            )
            .db()?;
        let rows = statement
            .query_map([], |row| {
                Ok((OrgId(row.get::<_, i64>(0)? as u32), JobId(row.get::<_, i64>(1)? as u64)))
            })
            .db()?;
        rows.collect::<rusqlite::Result<_>>().db()
    }

    fn database_now(&self) -> Result<Millis> {
        // One node, one clock: the machine's.
        Ok(system_now())
    }

    fn heartbeat(&self, node: &str, ttl: Millis) -> Result<Vec<String>> {
        let now = system_now();
        let mut connection = self.lock();
        let tx = connection.transaction().db()?;
        tx.execute(
            "INSERT INTO nodes (name, expires_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
            params![node, now + ttl],
        )
        .db()?;
        // Nodes dead for an hour are forgotten.
        tx.execute("DELETE FROM nodes WHERE expires_at < ?1", params![now - 3_600_000]).db()?;
        let live = {
            let mut statement =
                tx.prepare("SELECT name FROM nodes WHERE expires_at > ?1 ORDER BY name").db()?;
            statement
                .query_map(params![now], |row| row.get(0))
                .db()?
                .collect::<rusqlite::Result<Vec<String>>>()
                .db()?
        };
        tx.commit().db()?;
        Ok(live)
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let connection = self.read();
        let mut statement = connection
            .prepare("SELECT org_id, node, epoch, expires_at FROM shard_leases ORDER BY org_id")
            .db()?;
        let rows = statement
            .query_map([], |row| {
                Ok(Lease {
                    org: OrgId(row.get::<_, i64>(0)? as u32),
                    node: row.get(1)?,
                    epoch: row.get::<_, i64>(2)? as u64,
                    expires_at: row.get(3)?,
                })
            })
            .db()?;
        rows.collect::<rusqlite::Result<_>>().db()
    }

    fn take_lease(&self, node: &str, org: OrgId, ttl: Millis) -> Result<Option<Taken>> {
        let now = system_now();
        let mut connection = self.lock();
        let tx = connection.transaction().db()?;
        let taken: Option<(i64, Millis)> = tx
            .query_row(
                "INSERT INTO shard_leases (org_id, node, epoch, expires_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (org_id) DO UPDATE SET node = excluded.node, epoch = epoch + 1,
                    expires_at = excluded.expires_at
                 WHERE shard_leases.expires_at <= ?4 OR shard_leases.node = excluded.node
                 RETURNING epoch, released_at",
                params![org.0, node, now + ttl, now],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .db()?;
        let Some((epoch, released_at)) = taken else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET adopted = 1 WHERE org_id = ?1 AND adopted = 0 AND status < 30",
            params![org.0],
        )
        .db()?;
        let jobs = {
            let mut statement = tx
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE org_id = ?1 AND {UNFINISHED_OF_ORG} ORDER BY id"
                ))
                .db()?;
            let rows = statement.query_map(params![org.0], job_from_row).db()?;
            rows.map(|row| finish_job(row.db()?)).collect::<Result<Vec<_>>>()?
        };
        tx.commit().db()?;
        Ok(Some(Taken { fence: Fence { org, epoch: epoch as u64 }, jobs, released_at }))
    }

    fn renew_leases(&self, node: &str, held: &[Fence], ttl: Millis) -> Result<Vec<OrgId>> {
        let now = system_now();
        let mut connection = self.lock();
        let tx = connection.transaction().db()?;
        let mut renewed = Vec::new();
        for fence in held {
            let changed = tx
                .execute(
                    "UPDATE shard_leases SET expires_at = ?4 WHERE org_id = ?1 AND node = ?2 AND epoch = ?3",
                    params![fence.org.0, node, fence.epoch as i64, now + ttl],
                )
                .db()?;
            if changed == 1 {
                renewed.push(fence.org);
            }
        }
        tx.commit().db()?;
        Ok(renewed)
    }

    fn release_lease(&self, node: &str, fence: Fence, released_at: Millis) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE shard_leases SET expires_at = 0, released_at = ?4
                 WHERE org_id = ?1 AND node = ?2 AND epoch = ?3",
                params![fence.org.0, node, fence.epoch as i64, released_at],
            )
            .db()?;
        Ok(())
    }

    fn adopt_jobs(&self, held: &[Fence]) -> Result<Vec<JobRow>> {
        let mut connection = self.lock();
        let tx = connection.transaction().db()?;
        let mut jobs = Vec::new();
        for fence in held {
            let holds = tx
                .prepare_cached("SELECT 1 FROM shard_leases WHERE org_id = ?1 AND epoch = ?2")
                .db()?
                .exists(params![fence.org.0, fence.epoch as i64])
                .db()?;
            if !holds {
                continue;
            }
            let mut statement = tx
                .prepare_cached(&format!(
                    "UPDATE jobs SET adopted = 1 WHERE org_id = ?1 AND adopted = 0 AND status < 30
                 RETURNING {JOB_COLUMNS}"
                ))
                .db()?;
            let rows = statement.query_map(params![fence.org.0], job_from_row).db()?;
            for row in rows {
                jobs.push(finish_job(row.db()?)?);
            }
        }
        tx.commit().db()?;
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    fn starts_since(&self, org: OrgId, lane: Lane, since: Millis) -> Result<u32> {
        let count: i64 = self
            .read()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE org_id = ?1 AND lane = ?2 AND started_at >= ?3",
                params![org.0, lane.index() as i64, since],
                |row| row.get(0),
            )
            .db()?;
        Ok(count as u32)
    }

    fn workflow_starts_since(&self, org: OrgId, since: Millis, limit: u32) -> Result<Vec<WorkflowStart>> {
        let connection = self.read();
        let mut statement = connection.prepare_cached(WORKFLOW_STARTS).db()?;
        let rows = statement
            .query_map(params![org.0, since, limit], |row| {
                Ok(WorkflowStart {
                    definition: DefinitionId(row.get::<_, i64>(0)? as u64),
                    record: (row.get::<_, Option<String>>(1)?.unwrap_or_default(), row.get(2)?),
                    created_at: row.get(3)?,
                    error_code: row.get(4)?,
                })
            })
            .db()?;
        let mut starts: Vec<WorkflowStart> = rows.collect::<rusqlite::Result<_>>().db()?;
        starts.reverse();
        Ok(starts)
    }

    fn log_change(&self, org: OrgId, kind: ChangeKind, key: u64) -> Result<u64> {
        let connection = self.lock();
        connection
            .execute(
                "INSERT INTO changes (org_id, kind, key) VALUES (?1, ?2, ?3)",
                params![org.0, kind.name(), key as i64],
            )
            .db()?;
        Ok(connection.last_insert_rowid() as u64)
    }

    fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>> {
        let connection = self.read();
        let mut statement = connection
            .prepare_cached(
                "SELECT id, org_id, kind, key, answer FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .db()?;
        let rows = statement.query_map(params![after as i64, limit], change_from_row).db()?;
        rows.map(|row| row.db()?).collect()
    }

    fn last_change(&self) -> Result<u64> {
        let id: i64 =
            self.read().query_row("SELECT COALESCE(MAX(id), 0) FROM changes", [], |row| row.get(0)).db()?;
        Ok(id as u64)
    }

    fn change(&self, id: u64) -> Result<Option<Change>> {
        let connection = self.read();
        let row = connection
            .query_row(
                "SELECT id, org_id, kind, key, answer FROM changes WHERE id = ?1",
                params![id as i64],
                change_from_row,
            )
            .optional()
            .db()?;
        row.transpose()
    }

    fn answer_change(&self, id: u64, answer: &str) -> Result<()> {
        self.lock()
            .execute("UPDATE changes SET answer = ?2 WHERE id = ?1", params![id as i64, answer])
            .db()?;
        Ok(())
    }

    fn take_singleton(&self, name: &str, node: &str, ttl: Millis) -> Result<bool> {
        let now = system_now();
        let taken = self
            .lock()
            .query_row(
                "INSERT INTO singletons (name, node, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                 WHERE singletons.expires_at <= ?4 OR singletons.node = excluded.node
                 RETURNING 1",
                params![name, node, now + ttl, now],
                |_| Ok(()),
            )
            .optional()
            .db()?;
        Ok(taken.is_some())
    }

    fn purge(&self, c: &Cutoffs, limit: u64) -> Result<(u64, u64)> {
        let limit = limit as i64;
        let mut connection = self.lock();
        let tx = connection.transaction().db()?;
        let mut deleted = 0;
        let mut counts = FinishedCounts::default();
        // Deletes what `sql` selects; the finished counts lose each job deleted.
        let mut delete = |sql: &str, parameters: &[&dyn rusqlite::ToSql]| -> Result<i64> {
            let mut statement = tx.prepare_cached(sql).db()?;
            let mut rows = statement.query(parameters).db()?;
            let mut gone = 0;
            while let Some(row) = rows.next().db()? {
                counts.add_row((row.get(0).db()?, row.get(1).db()?, row.get(2).db()?), -1)?;
                gone += 1;
            }
            Ok(gone)
        };
        for (status, before) in
            [(Status::Succeeded, c.succeeded), (Status::Failed, c.failed), (Status::Canceled, c.canceled)]
        {
            deleted += delete(
                &format!("DELETE FROM jobs WHERE id IN ({PURGEABLE}) RETURNING org_id, lane, status"),
                params![status.code(), before, Operation::BackgroundOperation.name(), limit - deleted],
            )?;
        }
        // Background operations live for their TTL, whatever their status.
        deleted += delete(
            "DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j JOIN operations o ON o.job_id = j.id
                WHERE j.status >= 30 AND o.expires_at < ?1 LIMIT ?2) RETURNING org_id, lane, status",
            params![c.operations, limit - deleted],
        )?;
        counts.write(&tx)?;
        let cleared = tx
            .execute(
                "UPDATE jobs SET trace = NULL WHERE id IN (SELECT id FROM jobs
                    WHERE trace IS NOT NULL AND completed_at < ?1 LIMIT ?2)",
                params![c.trace, limit],
            )
            .db()? as i64;
        tx.commit().db()?;
        Ok((deleted as u64, cleared as u64))
    }

    fn job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>> {
        // Finished jobs from their counts (see `finished`), unfinished ones from each
        // lane's range of `jobs_by_org_lane_status` below the finished statuses.
        self.counts(
            org,
            "SELECT lane, status, n FROM finished_job_counts WHERE org_id = ?1 AND n > 0
             UNION ALL
             SELECT lane, status, COUNT(*) FROM jobs WHERE org_id = ?1 AND lane IN (0, 1, 2) AND status < 30
             GROUP BY lane, status
             ORDER BY lane, status",
        )
    }

    fn finished_job_counts(&self, org: OrgId) -> Result<Vec<(Lane, Status, u64)>> {
        self.counts(
            org,
            "SELECT lane, status, n FROM finished_job_counts WHERE org_id = ?1 AND n > 0 ORDER BY lane, status",
        )
    }

    fn recount_finished_jobs(&self) -> Result<Vec<Miscount>> {
        let mut connection = self.lock();
        // Immediate: the write lock from the start, so that no commit lands between the
        // count and its correction.
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).db()?;
        let rows = |sql: &str| -> Result<Vec<[i64; 4]>> {
            let mut statement = tx.prepare(sql).db()?;
            let rows = statement.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?])).db()?;
            rows.collect::<rusqlite::Result<_>>().db()
        };
        let miscounts = recount::miscounts(&rows(recount::KEPT)?, &rows(recount::COUNTED)?)?;
        {
            let mut correct = tx
                .prepare(
                    "INSERT INTO finished_job_counts (org_id, lane, status, n) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (org_id, lane, status) DO UPDATE SET n = excluded.n",
                )
                .db()?;
            for m in &miscounts {
                correct.execute(params![m.org.0, m.lane.index() as i64, m.status.code(), m.counted]).db()?;
            }
        }
        tx.commit().db()?;
        Ok(miscounts)
    }
}

impl SqliteStore {
    /// Runs `sql`, a count of the org's (`?1`) jobs as (lane, status, count) rows.
    fn counts(&self, org: OrgId, sql: &str) -> Result<Vec<(Lane, Status, u64)>> {
        let connection = self.read();
        let mut statement = connection.prepare_cached(sql).db()?;
        let rows = statement
            .query_map(params![org.0], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .db()?;
        rows.map(|row| {
            let (lane, status, count) = row.db()?;
            Ok((lane_of(lane)?, status_of(status)?, count as u64))
        })
        .collect()
    }
}

/// A change's row; a kind this version does not know is corrupt data.
fn change_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Change>> {
    let kind: String = row.get(2)?;
    Ok(match ChangeKind::of_name(&kind) {
        Some(kind) => Ok(Change {
            id: row.get::<_, i64>(0)? as u64,
            org: OrgId(row.get::<_, i64>(1)? as u32),
            kind,
            key: row.get::<_, i64>(3)? as u64,
            answer: row.get(4)?,
        }),
        None => Err(Error::Corrupt(format!("a change of unknown kind '{kind}'"))),
    })
}

/// Pages kept in each reading connection's cache, in KiB (SQLite's default is 2,000 KiB).
const CACHE_KIB: i64 = 64 * 1024;

/// Pages kept in the writing connection's cache, in KiB: small, because SQLite walks
/// the whole cache at the end of every transaction in which a b-tree split reordered
/// pages (`balance_nonroot` parks a page at the lock-byte page's number, so the end of
/// the transaction "truncates" the cache past the database's end by visiting every
/// cached page). The walk's cost grows with the cache: draining a million-job backlog
/// (a `perf record` of `sluice bench backlog` split by drain, by hand), 1.5 µs of the writer's time a job at 32 MiB,
/// 1.1 at 16, 0.5 at 8, 0.24 at 4. The writer's hot pages (the ends of the job indexes)
/// fit in 4 MiB: no more pages were read from the operating system's cache at 4 than at
/// 32 (0.07-0.12 µs a job either way), and `noisy-neighbour` and `throughput` did not
/// change.
const WRITER_CACHE_KIB: i64 = 4 * 1024;

/// Statements kept prepared per connection (rusqlite's default is 16; the job path and
/// the API use more than that, and a statement parsed again costs more than it runs).
const PREPARED_STATEMENTS: usize = 128;

/// Settings for speed that do not weaken durability: a page cache that holds the hot
/// part of the job indexes past a few hundred thousand jobs, and temporary files
/// (the statement journal of each batch's savepoint) in memory rather than on disk.
fn tune(connection: &Connection) -> Result<()> {
    connection.pragma_update(None, "cache_size", -CACHE_KIB).db()?;
    connection.pragma_update(None, "temp_store", "MEMORY").db()?;
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(())
}

/// The machine's clock in epoch milliseconds.
fn system_now() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// The finished jobs of one status past their retention (`?1` status, `?2` cutoff, `?3`
/// the background operations' name, `?4` how many). `status >= 30` is spelled out: the
/// planner cannot tell that `?1` is a finished status and, without it, scanned every job
/// (the whole backlog, holding the write connection that every commit needs) instead of
/// reading the partial index `jobs_finished`.
const PURGEABLE: &str = "SELECT id FROM jobs
    WHERE status = ?1 AND status >= 30 AND completed_at < ?2 AND operation != ?3 LIMIT ?4";

impl SqliteStore {
    /// Runs `sql`, an update of one definition (`?1` its org, `?2` its id, `?3` the
    /// value): `NotFound` if the org has no such definition.
    fn update_definition(
        &self,
        sql: &str,
        org: OrgId,
        id: DefinitionId,
        value: &dyn rusqlite::ToSql,
    ) -> Result<()> {
        let changed = self.lock().execute(sql, params![org.0, id.0 as i64, value]).db()?;
        if changed == 0 {
            return Err(Error::NotFound("definition"));
        }
        Ok(())
    }

    fn select_jobs(&self, sql: &str, parameters: impl rusqlite::Params) -> Result<Vec<JobRow>> {
        let connection = self.read();
        let mut statement = connection.prepare_cached(sql).db()?;
        let rows = statement.query_map(parameters, job_from_row).db()?;
        rows.map(|row| finish_job(row.db()?)).collect()
    }
}

/// The columns a start reads back, in the order `start_of_org` takes them.
const START_COLUMNS: &str = "id, org_id, lane, definition_id, correlation_id, depth, payload, created_at,
    retry_count = 0 AND postponement_count = 0";

/// Above every job id (SQLite's largest rowid).
const MAX_ID: i64 = i64::MAX;

/// An org's newest jobs (`?1` org, `?2` status or NULL, `?3` lane or NULL, `?4` only
/// older than this id or NULL, `?5` how many). Sorting an org's jobs by id alone read
/// every one of them (1.67 s with a million waiting, `sluice bench backlog`); instead
/// each lane and status's own range of `jobs_by_org_lane_status`, already in id order,
/// gives at most `?5`, and the newest of those are kept. The lanes and statuses
/// filtered out are skipped before their range is read (a term without a column is
/// tested once).
static NEWEST_JOBS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let ranges: Vec<String> = Lane::ALL
        .iter()
        .flat_map(|lane| Status::ALL.iter().map(move |status| (lane.index(), status.code())))
        .map(|(lane, status)| {
            format!(
                "SELECT id FROM (SELECT id FROM jobs WHERE org_id = ?1 AND lane = {lane} AND status = {status}
                 AND (?2 IS NULL OR ?2 = {status}) AND (?3 IS NULL OR ?3 = {lane})
                 AND id < COALESCE(?4, {MAX_ID}) ORDER BY id DESC LIMIT ?5)"
            )
        })
        .collect();
    format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({}) ORDER BY id DESC LIMIT ?5",
        ranges.join(" UNION ALL ")
    )
});

static START_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {START_COLUMNS} FROM jobs WHERE id = ?1"));
static STARTS_IN_RANGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {START_COLUMNS} FROM jobs WHERE id BETWEEN ?1 AND ?2"));

/// A run of at least this many ids, none more than [`RANGE_READ_GAP`] past the one
/// before, is read as one range of the table.
const RANGE_READ_MIN: usize = 16;
const RANGE_READ_GAP: u64 = 4;

/// Splits sorted ids into runs whose neighbours are at most [`RANGE_READ_GAP`] apart:
/// a range read of one reads at most `RANGE_READ_GAP - 1` unwanted rows per wanted one.
fn dense_runs(sorted: &[u64]) -> impl Iterator<Item = &[u64]> {
    sorted.chunk_by(|a, b| b - a <= RANGE_READ_GAP)
}

/// A start's row, if it is a job of `org` (a read by id finds any org's).
fn start_of_org(row: &rusqlite::Row<'_>, org: OrgId) -> Result<Option<StartRow>> {
    if row.get::<_, i64>(1).db()? != i64::from(org.0) {
        return Ok(None);
    }
    Ok(Some(StartRow {
        id: JobId(row.get::<_, i64>(0).db()? as u64),
        lane: lane_of(row.get(2).db()?)?,
        definition: DefinitionId(row.get::<_, i64>(3).db()? as u64),
        correlation_id: row.get(4).db()?,
        depth: row.get::<_, i64>(5).db()? as u32,
        payload: payload_column(row, 6).db()?,
        created_at: row.get(7).db()?,
        first_run: row.get(8).db()?,
    }))
}

/// A job's payload: bytes (a BLOB), or the JSON text an earlier Sluice wrote.
fn payload_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    match row.get_ref(index)? {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(bytes.to_vec()),
        other => Err(rusqlite::Error::InvalidColumnType(index, "payload".into(), other.data_type())),
    }
}

/// Unfinished jobs of an org, read from `jobs_by_org_lane_status` one lane after another
/// (a condition on `org_id` must come with it).
const UNFINISHED_OF_ORG: &str = "lane IN (0, 1, 2) AND status < 30";
const _: () = assert!(Lane::ALL.len() == 3, "UNFINISHED names every lane's index");

/// Every org's unfinished jobs, from the same index (migration 8).
const UNFINISHED: &str = "org_id IN (SELECT id FROM orgs) AND lane IN (0, 1, 2) AND status < 30";

const INSERT_JOB: &str = "INSERT INTO jobs (id, org_id, lane, operation, definition_id, definition_version,
        correlation_id, depth, record_entity, record_id, payload, dependency_token, status, created_at,
        completed_at, error_code, error_message, adopted)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

static NEXT_JOB_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {}", next_id_sql("jobs")));

/// Writes one batch: its record changes, its transitions, its new jobs; the changes to
/// the finished counts go to `counts`.
fn write_batch(tx: &Connection, batch: &Batch, counts: &mut FinishedCounts) -> Result<Vec<JobId>> {
    if let Some(fence) = batch.fence {
        let held = tx
            .prepare_cached("SELECT 1 FROM shard_leases WHERE org_id = ?1 AND epoch = ?2")
            .db()?
            .exists(params![fence.org.0, fence.epoch as i64])
            .db()?;
        if !held {
            return Err(Error::Fenced(fence.org));
        }
    }
    for (org, change) in &batch.changes {
        apply_change(tx, i64::from(org.0), change).map_err(|e| Error::WriteConflict(e.to_string()))?;
    }
    for update in &batch.updates {
        apply_update(tx, update, counts)?;
    }
    insert_jobs(tx, &batch.jobs, !batch.unadopted, counts)
}

fn insert_jobs(
    tx: &Connection,
    jobs: &[NewJob],
    adopted: bool,
    counts: &mut FinishedCounts,
) -> Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(jobs.len());
    if jobs.is_empty() {
        return Ok(ids);
    }
    // Ids are taken once per batch and counted up: the transaction holds the database's
    // write lock, so nobody else inserts meanwhile (`next_id_sql` per row cost two
    // lookups for every job).
    let mut next: i64 = tx.prepare_cached(&NEXT_JOB_ID).db()?.query_row([], |row| row.get(0)).db()?;
    {
        let mut insert = tx.prepare_cached(INSERT_JOB).db()?;
        for job in jobs {
            let job_id = next;
            next += 1;
            let (entity, id) = job.record.clone().unzip();
            let (code, message) = job.error.clone().unzip();
            let completed = job.status.is_terminal().then_some(job.created_at);
            insert
                .execute(params![
                    job_id,
                    job.org.0,
                    job.lane.index() as i64,
                    job.operation.name(),
                    job.definition.0 as i64,
                    job.definition_version,
                    job.correlation_id,
                    job.depth,
                    entity,
                    id,
                    job.payload,
                    job.dependency_token,
                    job.status.code(),
                    job.created_at,
                    completed,
                    code,
                    message,
                    adopted,
                ])
                .db()?;
            counts.add(job.org, job.lane, job.status, 1);
            ids.push(JobId(job_id as u64));
            if let Some(background) = &job.background {
                let state = match background.callback_uri {
                    Some(_) => DeliveryState::Waiting,
                    None => DeliveryState::None,
                };
                tx.prepare_cached(
                    "INSERT INTO operations (job_id, org_id, callback_uri, expires_at, delivery_state)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .db()?
                .execute(params![
                    job_id,
                    job.org.0,
                    background.callback_uri,
                    background.expires_at,
                    delivery_state_name(state)
                ])
                .db()?;
            }
        }
    }
    Ok(ids)
}

/// Applies a transition. A finished job's status never changes again (`status < 30`),
/// so that the finished counts stay true (see `finished`).
fn apply_update(tx: &Connection, update: &JobUpdate, counts: &mut FinishedCounts) -> Result<()> {
    match update {
        JobUpdate::Started { id, at, .. } => {
            tx.prepare_cached(
                "UPDATE jobs SET status = 20, started_at = ?2, postpone_until = NULL WHERE id = ?1 AND status < 30",
            )
            .db()?
            .execute(params![id.0 as i64, at])
            .db()?;
        }
        JobUpdate::Status { id, org, lane, at, status, error } => {
            let completed = status.is_terminal().then_some(*at);
            let (code, message) = error.clone().unzip();
            let changed = tx
                .prepare_cached(
                    "UPDATE jobs SET status = ?2, completed_at = COALESCE(?3, completed_at),
                    error_code = COALESCE(?4, error_code), error_message = COALESCE(?5, error_message),
                    postpone_until = CASE WHEN ?2 = 10 THEN postpone_until ELSE NULL END
                 WHERE id = ?1 AND status < 30",
                )
                .db()?
                .execute(params![id.0 as i64, status.code(), completed, code, message])
                .db()?;
            counts.add(*org, *lane, *status, changed as i64);
        }
        JobUpdate::Finished {
            id,
            org,
            lane,
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
            changes,
            delete,
            exception_times,
        } => {
            if *status == Status::Succeeded {
                for change in changes {
                    // The service checks a round's writes before committing them; a
                    // write that still fails here refuses the batch, never half of it.
                    apply_change(tx, i64::from(org.0), change)
                        .map_err(|e| Error::WriteConflict(format!("record write of job {}: {e}", id.0)))?;
                }
            }
            if *delete {
                // An unfinished job's row: never counted.
                tx.prepare_cached("DELETE FROM jobs WHERE id = ?1 AND status < 30")
                    .db()?
                    .execute(params![id.0 as i64])
                    .db()?;
                return Ok(());
            }
            let completed = status.is_terminal().then_some(*at);
            let (code, message) = error.clone().unzip();
            let changed = tx.prepare_cached(
                "UPDATE jobs SET status = ?2, completed_at = ?3, postpone_until = ?4,
                    retry_count = retry_count + ?5, postponement_count = ?6, error_code = ?7, error_message = ?8,
                    output = ?9, fuel_used = fuel_used + ?10, wall_time_us = wall_time_us + ?11,
                    host_time_us = host_time_us + ?12, peak_memory_bytes = MAX(peak_memory_bytes, ?13), trace = ?14,
                    exception_times = ?15, started_at = COALESCE(?16, started_at)
                 WHERE id = ?1 AND status < 30",
            ).db()?
            .execute(params![
                id.0 as i64,
                status.code(),
                completed,
                postpone_until,
                i64::from(*retried),
                postponement_count,
                code,
                message,
                output,
                accounting.fuel_used as i64,
                accounting.wall_time_us as i64,
                accounting.host_time_us as i64,
                accounting.peak_memory_bytes as i64,
                trace,
                (!exception_times.is_empty()).then(|| json(exception_times)),
                started,
            ]).db()?;
            counts.add(*org, *lane, *status, changed as i64);
        }
    }
    Ok(())
}

/// The newest workflow jobs on a record of an org since a time, from the partial index
/// `jobs_workflow_starts` (migration 7).
const WORKFLOW_STARTS: &str =
    "SELECT definition_id, record_entity, record_id, created_at, error_code FROM jobs
    WHERE org_id = ?1 AND created_at >= ?2 AND operation = 'workflow' AND record_id IS NOT NULL
    ORDER BY created_at DESC LIMIT ?3";

#[cfg(test)]
mod tests {
    use super::*;

    /// How SQLite plans `sql` on a fresh store's schema.
    fn plan(sql: &str) -> String {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(&dir.path().join("plan.db")).expect("a fresh store");
        let connection = store.read();
        let mut statement =
            connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("a valid statement");
        let values: [&dyn rusqlite::ToSql; 4] = [&30, &0, &"x", &10];
        let bound = &values[..statement.parameter_count()];
        let details = statement
            .query_map(bound, |row| row.get::<_, String>(3))
            .expect("a plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("its rows");
        details.join("; ")
    }

    #[test]
    fn the_retention_purge_reads_the_finished_jobs_index_not_every_job() {
        let plan = plan(PURGEABLE);
        assert!(plan.contains("jobs_finished"), "{plan}");
        assert!(!plan.contains("SCAN jobs"), "{plan}");
    }

    #[test]
    fn unfinished_jobs_are_read_from_the_ready_index_not_every_job() {
        for sql in [
            format!("SELECT id FROM jobs WHERE {UNFINISHED}"),
            format!("SELECT id FROM jobs WHERE org_id = 1 AND {UNFINISHED_OF_ORG}"),
        ] {
            let plan = plan(&sql);
            assert!(plan.contains("jobs_by_org_lane_status (org_id=? AND lane=? AND status<?)"), "{plan}");
            assert!(!plan.contains("SCAN jobs"), "{plan}");
        }
    }

    #[test]
    fn the_loop_rules_starts_are_read_from_their_partial_index() {
        let plan = plan(WORKFLOW_STARTS);
        assert!(plan.contains("jobs_workflow_starts"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "in the index's order: {plan}");
    }
}
