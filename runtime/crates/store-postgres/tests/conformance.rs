//! The store conformance suite (`sluice_store::conformance`) on PostgreSQL: a real
//! server, started on 127.0.0.1 by `scripts/test` (`SLUICE_TEST_DATABASE_URL`), a
//! database of its own per run.

use sluice_store::Store;
use sluice_store_postgres::PostgresStore;

/// A new, empty database on the test server; its URL.
fn fresh_database() -> String {
    let base = std::env::var("SLUICE_TEST_DATABASE_URL").expect(
        "SLUICE_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    );
    let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("the test server answers");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (server, _) = base.rsplit_once('/').expect("a URL naming a database");
    format!("{server}/{name}")
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let url = fresh_database();
    let open = |url: &str| -> Box<dyn Store> { Box::new(PostgresStore::open(url).unwrap()) };
    sluice_store::conformance::run(&|| open(&url), &|| open(&url));
    sluice_store::conformance::cluster(open(&url).as_ref());
    sluice_store::conformance::news(open(&url).as_ref(), open(&url).as_ref());
    sluice_store::conformance::read_ahead(open(&fresh_database()).as_ref());
    sluice_store::conformance::listing(open(&fresh_database()).as_ref());
    sluice_store::conformance::counts(open(&fresh_database()).as_ref());
    let recounted = fresh_database();
    let sql = |sql: &str| {
        let mut client = postgres::Client::connect(&recounted, postgres::NoTls).unwrap();
        client.batch_execute(sql).unwrap();
    };
    sluice_store::conformance::recount(open(&recounted).as_ref(), &sql);
}

/// Before migration 6 a job's payload was JSON text; after it, the same bytes. And
/// migration 9 counts the finished jobs already there.
#[test]
fn postgres_migrates_payloads_stored_as_text() {
    let url = fresh_database();
    let org = sluice_core::jobs::OrgId(1);
    let id = PostgresStore::open(&url)
        .unwrap()
        .insert_jobs(&[sluice_store::conformance::new_job(org, 1)])
        .unwrap()[0];
    // Canceled: migration 9 counts it.
    let canceled = sluice_store::JobUpdate::Status {
        id,
        org,
        lane: sluice_core::jobs::Lane::Priority,
        at: 2_000,
        status: sluice_core::jobs::Status::Canceled,
        error: None,
    };
    PostgresStore::open(&url).unwrap().apply(&[canceled]).unwrap();
    // Back to the schema before migration 6, with a payload as it was written then
    // (undoing 9, 8, 7, then 6: a later migration must be undone here too).
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "DROP TABLE finished_job_counts;
             UPDATE job_payloads SET payload = convert_to('{\"message\":\"Create\"}', 'UTF8');
             ALTER TABLE job_payloads ALTER COLUMN payload TYPE TEXT USING convert_from(payload, 'UTF8');
             ALTER TABLE definitions DROP COLUMN runaway_flag;
             ALTER TABLE shard_leases DROP COLUMN released_at;
             DROP INDEX jobs_workflow_starts;
             DELETE FROM schema_version WHERE applied IN (6, 7, 8, 9);",
        )
        .unwrap();
    let stored: String = client.query_one("SELECT payload FROM job_payloads", &[]).unwrap().get(0);
    assert_eq!(stored, r#"{"message":"Create"}"#);
    drop(client);
    let store = PostgresStore::open(&url).unwrap();
    let row = store.job(org, id).unwrap().unwrap();
    assert_eq!(row.payload, br#"{"message":"Create"}"#);
    let counted = (sluice_core::jobs::Lane::Priority, sluice_core::jobs::Status::Canceled, 1);
    assert_eq!(store.job_counts(org).unwrap(), vec![counted], "migration 9 counts the finished jobs");
}

/// The retention purge deletes finished jobs of every org while each org's holder
/// commits its own ends, and both change the org's finished counts. A purge that meets a
/// count row held by a holder's open transaction gives way (each of its attempts waits
/// at most 100 ms for the row) rather than keeping that holder's commit waiting or
/// deadlocking with it: it fails for now, deletes nothing, and purges everything once
/// the holder has committed.
#[test]
fn the_retention_purge_gives_way_to_a_holders_commit() {
    use sluice_core::jobs::{Lane, Status};
    let url = fresh_database();
    let store = PostgresStore::open(&url).unwrap();
    let org = store.create_org("purged").unwrap();
    let refused = |n| sluice_store::conformance::refused_job(org, n, Status::Failed);
    store.insert_jobs(&[refused(1), refused(2), refused(3)]).unwrap();
    let failed = vec![(Lane::Priority, Status::Failed, 3)];
    assert_eq!(store.job_counts(org).unwrap(), failed);

    // A holder's commit, open, holding the org's count of failed jobs as a commit that
    // finishes one of its jobs does until it commits.
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut commit = holder.transaction().unwrap();
    commit
        .query_one(
            "SELECT n FROM finished_job_counts WHERE org_id = $1 AND status = 31 FOR UPDATE",
            &[&i64::from(org.0)],
        )
        .unwrap();
    let cutoffs =
        sluice_store::Cutoffs { succeeded: 0, failed: 10_000, canceled: 0, trace: 0, operations: 0 };
    let (done, purged) = std::sync::mpsc::channel();
    let purging = std::thread::spawn({
        let url = url.clone();
        move || done.send(PostgresStore::open(&url).unwrap().purge(&cutoffs, 1_000)).unwrap()
    });
    // Waiting for the holder instead, the purge would not return until the commit below.
    let outcome = purged.recv_timeout(std::time::Duration::from_secs(60)).expect("the purge gives way");
    let error = outcome.expect_err("the purge gives way to the holder");
    assert!(error.to_string().contains("lock timeout"), "{error}");
    assert_eq!(store.job_counts(org).unwrap(), failed, "nothing purged, nothing uncounted");
    purging.join().unwrap();

    commit.commit().unwrap();
    assert_eq!(store.purge(&cutoffs, 1_000).unwrap(), (3, 0));
    assert_eq!(store.job_counts(org).unwrap(), vec![]);
}

/// A database migrated by a later version of Sluice is not opened: a node of this version
/// would write it without what the later one keeps (as a node from before migration 9
/// wrote jobs without their counts).
#[test]
fn postgres_refuses_a_schema_newer_than_it_knows() {
    let url = fresh_database();
    drop(PostgresStore::open(&url).unwrap());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.batch_execute("INSERT INTO schema_version (applied) VALUES (1000)").unwrap();
    let refused = PostgresStore::open(&url).err().expect("a newer schema is refused");
    assert!(matches!(refused, sluice_store::Error::SchemaTooNew { found: 1_000, .. }), "{refused}");
}
