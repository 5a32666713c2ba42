//! The store conformance suite (`sluice_store::conformance`) on SQLite.

use std::path::Path;

use sluice_store::Store;
use sluice_store_sqlite::SqliteStore;

#[test]
fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("sluice.db");
    let open = |path: &Path| -> Box<dyn Store> { Box::new(SqliteStore::open(path).unwrap()) };
    sluice_store::conformance::run(&|| open(&path), &|| open(&path));
    sluice_store::conformance::cluster(open(&path).as_ref());
    let fresh = dir.path().join("reading-ahead.db");
    sluice_store::conformance::read_ahead(open(&fresh).as_ref());
    let listed = dir.path().join("listing.db");
    sluice_store::conformance::listing(open(&listed).as_ref());
    sluice_store::conformance::counts(open(&dir.path().join("counts.db")).as_ref());
    let recounted = dir.path().join("recount.db");
    let sql = |sql: &str| rusqlite::Connection::open(&recounted).unwrap().execute_batch(sql).unwrap();
    sluice_store::conformance::recount(open(&recounted).as_ref(), &sql);
}

#[test]
fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    std::fs::write(&path, b"this is not sqlite, it is a shopping list").unwrap();
    assert!(SqliteStore::open(&path).is_err());
}

/// Earlier versions stored a job's payload as JSON text; it is read back as its bytes.
#[test]
fn sqlite_reads_a_payload_stored_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    let org = sluice_core::jobs::OrgId(1);
    let id =
        SqliteStore::open(&path).unwrap().insert_jobs(&[sluice_store::conformance::new_job(org, 1)]).unwrap()
            [0];
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute("UPDATE jobs SET payload = '{\"message\":\"Create\"}' WHERE id = ?1", [id.0 as i64])
        .unwrap();
    drop(connection);
    let row = SqliteStore::open(&path).unwrap().job(org, id).unwrap().unwrap();
    assert_eq!(row.payload, br#"{"message":"Create"}"#);
}

/// A database written before the finished jobs were counted (migration 9) gets its
/// counts when it is next opened.
#[test]
fn sqlite_counts_the_finished_jobs_of_an_older_database() {
    use sluice_core::jobs::{Lane, Status};
    use sluice_store::{Batch, JobUpdate};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    let org = sluice_core::jobs::OrgId(1);
    {
        let store = SqliteStore::open(&path).unwrap();
        let jobs: Vec<_> = (0..5).map(|n| sluice_store::conformance::new_job(org, n)).collect();
        let ids = store.insert_jobs(&jobs).unwrap();
        let canceled = |id| JobUpdate::Status {
            id,
            org,
            lane: Lane::Priority,
            at: 2_000,
            status: Status::Canceled,
            error: None,
        };
        store
            .commit(&Batch { updates: vec![canceled(ids[0]), canceled(ids[1])], ..Batch::default() })
            .unwrap();
    }
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.execute_batch("DROP TABLE finished_job_counts; PRAGMA user_version = 8;").unwrap();
    drop(connection);
    let mut counts = SqliteStore::open(&path).unwrap().job_counts(org).unwrap();
    counts.sort_by_key(|(_, status, _)| status.code());
    assert_eq!(
        counts,
        vec![(Lane::Priority, Status::WaitingForResources, 3), (Lane::Priority, Status::Canceled, 2)]
    );
}

/// A file migrated by a later version of Sluice is not opened (this version would write
/// it without what the later one keeps), and is left as it was.
#[test]
fn sqlite_refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.pragma_update(None, "user_version", 1_000).unwrap();
    drop(connection);
    let refused = SqliteStore::open(&path).err().expect("a newer schema is refused");
    assert!(matches!(refused, sluice_store::Error::SchemaTooNew { found: 1_000, .. }), "{refused}");
    assert!(refused.to_string().contains("upgrade this node"), "{refused}");
    let connection = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, 1_000);
}
