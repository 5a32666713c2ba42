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
}
