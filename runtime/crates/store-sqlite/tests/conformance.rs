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
}

#[test]
fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    std::fs::write(&path, b"this is not sqlite, it is a shopping list").unwrap();
    assert!(SqliteStore::open(&path).is_err());
}
