//! The SQLite schema, as numbered migrations applied in order at open. `PRAGMA
//! user_version` records how many have run; a migration is never edited once released.

pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE orgs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE quotas (
        org_id INTEGER NOT NULL REFERENCES orgs(id),
        lane INTEGER NOT NULL,
        quotas TEXT NOT NULL,
        PRIMARY KEY (org_id, lane)
    );
    CREATE TABLE plugins (
        id INTEGER PRIMARY KEY,
        org_id INTEGER NOT NULL REFERENCES orgs(id),
        name TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        bytes BLOB NOT NULL,
        UNIQUE (org_id, content_hash)
    );
    CREATE TABLE definitions (
        id INTEGER PRIMARY KEY,
        org_id INTEGER NOT NULL REFERENCES orgs(id),
        name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        kind TEXT NOT NULL,
        active INTEGER NOT NULL,
        auto_delete INTEGER NOT NULL
    );
    CREATE TABLE records (
        org_id INTEGER NOT NULL,
        entity TEXT NOT NULL,
        id TEXT NOT NULL,
        attributes TEXT NOT NULL,
        PRIMARY KEY (org_id, entity, id)
    ) WITHOUT ROWID;
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        org_id INTEGER NOT NULL,
        lane INTEGER NOT NULL,
        operation TEXT NOT NULL,
        definition_id INTEGER NOT NULL,
        definition_version INTEGER NOT NULL,
        correlation_id TEXT NOT NULL,
        depth INTEGER NOT NULL,
        record_entity TEXT,
        record_id TEXT,
        payload TEXT NOT NULL,
        dependency_token TEXT,
        status INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        completed_at INTEGER,
        postpone_until INTEGER,
        retry_count INTEGER NOT NULL DEFAULT 0,
        postponement_count INTEGER NOT NULL DEFAULT 0,
        error_code TEXT,
        error_message TEXT,
        output TEXT,
        fuel_used INTEGER NOT NULL DEFAULT 0,
        wall_time_us INTEGER NOT NULL DEFAULT 0,
        host_time_us INTEGER NOT NULL DEFAULT 0,
        peak_memory_bytes INTEGER NOT NULL DEFAULT 0,
        trace TEXT
    );
    -- Leads with (org, lane, status) so one org's backlog never slows another's reads.
    CREATE INDEX jobs_by_org_lane_status ON jobs (org_id, lane, status, id);
    -- Unfinished jobs, for the restart scan, without touching the finished ones.
    CREATE INDEX jobs_unfinished ON jobs (status) WHERE status < 30;
    ",
    // 2: retention deletes finished jobs by age, and clears old trace logs.
    "
    CREATE INDEX jobs_finished ON jobs (status, completed_at) WHERE status >= 30;
    CREATE INDEX jobs_traced ON jobs (completed_at) WHERE trace IS NOT NULL;
    ",
    // 3: the HTTP API: tenant tokens (hashed), callback secrets, background operations.
    "
    ALTER TABLE orgs ADD COLUMN webhook_secret TEXT;
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        org_id INTEGER NOT NULL REFERENCES orgs(id),
        label TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE operations (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        org_id INTEGER NOT NULL,
        callback_uri TEXT,
        expires_at INTEGER NOT NULL,
        delivery_state TEXT NOT NULL,
        delivery_attempts INTEGER NOT NULL DEFAULT 0,
        delivery_error TEXT,
        delivered_at INTEGER
    );
    CREATE INDEX operations_by_expiry ON operations (expires_at);
    CREATE INDEX operations_waiting ON operations (job_id) WHERE delivery_state = 'waiting';
    CREATE INDEX jobs_by_correlation ON jobs (org_id, correlation_id);
    ",
    // 4: ids are never reused (SQLite's rowid would reuse the highest id once its row
    // is deleted: a deleted step's id would name the next step, a purged job's the next
    // job). Inserts take max(highest live id, highest deleted id) + 1; the triggers note
    // a deleted id only when it was the highest. And a job's recent exception times, so
    // a restart keeps counting A in D.
    "
    CREATE TABLE id_high_water (
        name TEXT PRIMARY KEY,
        id INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TRIGGER definitions_high_water AFTER DELETE ON definitions
    WHEN old.id > COALESCE((SELECT MAX(id) FROM definitions), 0)
    BEGIN
        INSERT INTO id_high_water (name, id) VALUES ('definitions', old.id)
        ON CONFLICT (name) DO UPDATE SET id = MAX(id, excluded.id);
    END;
    CREATE TRIGGER jobs_high_water AFTER DELETE ON jobs
    WHEN old.id > COALESCE((SELECT MAX(id) FROM jobs), 0)
    BEGIN
        INSERT INTO id_high_water (name, id) VALUES ('jobs', old.id)
        ON CONFLICT (name) DO UPDATE SET id = MAX(id, excluded.id);
    END;
    ALTER TABLE jobs ADD COLUMN exception_times TEXT;
    ",
    // 5: several nodes on one database (see `cluster.rs`). SQLite runs one node, which
    // holds every org, but keeps the same tables so both backends pass one suite.
    "
    ALTER TABLE jobs ADD COLUMN adopted INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX jobs_unadopted ON jobs (org_id) WHERE adopted = 0 AND status < 30;
    CREATE TABLE shard_leases (
        org_id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key INTEGER NOT NULL,
        answer TEXT
    );
    CREATE TABLE singletons (
        name TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 6: a definition's runaway flag, kept across restarts and lease handovers.
    "
    ALTER TABLE definitions ADD COLUMN runaway_flag TEXT;
    ",
    // 7: when a lease was given back, in the releasing node's clock: the next holder
    // starts nothing of the org before its own clock has passed it (see `take_lease`);
    // workflow jobs on a record by creation time, for the loop rule's counts (see
    // `workflow_starts_since`), in a partial index no other job pays an entry for.
    "
    ALTER TABLE shard_leases ADD COLUMN released_at INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_workflow_starts ON jobs (org_id, created_at)
        WHERE operation = 'workflow' AND record_id IS NOT NULL;
    ",
    // 8: unfinished jobs are read through `jobs_by_org_lane_status` (org, each lane,
    // status below 30: see `UNFINISHED`); an index of its own cost every job an entry
    // written at its creation and deleted at its end, on the store's one writer.
    "
    DROP INDEX jobs_unfinished;
    ",
    // 9: each org's finished jobs counted per lane and status, kept by the writer in
    // the transactions that finish, insert or delete them (see `finished`): an org's
    // health read costs the same with a month of history as with none (counting the
    // rows took about 0.1 s a million). Unfinished jobs are still counted from
    // `jobs_by_org_lane_status`.
    "
    CREATE TABLE finished_job_counts (
        org_id INTEGER NOT NULL,
        lane INTEGER NOT NULL,
        status INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (org_id, lane, status)
    ) WITHOUT ROWID;
    INSERT INTO finished_job_counts (org_id, lane, status, n)
        SELECT org_id, lane, status, COUNT(*) FROM jobs WHERE status >= 30 GROUP BY org_id, lane, status;
    ",
];

/// The id a new row of `table` gets: above every id it ever had (see migration 4).
pub fn next_id_sql(table: &str) -> String {
    format!(
        "MAX(COALESCE((SELECT MAX(id) FROM {table}), 0), \
         COALESCE((SELECT id FROM id_high_water WHERE name = '{table}'), 0)) + 1"
    )
}
