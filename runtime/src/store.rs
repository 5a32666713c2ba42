//! Durable storage: the [`Store`] trait and its model (crate `sluice-store`), and the two
//! backends, each a crate of its own so that nothing here can name a driver's types:
//! [`SqliteStore`] (crate `sluice-store-sqlite`, the embedded default) and
//! [`PostgresStore`] (crate `sluice-store-postgres`, for several nodes on one database).
//! Both pass the one conformance suite (`sluice_store::conformance`).

pub use sluice_store::*;
pub use sluice_store_postgres::PostgresStore;
pub use sluice_store_sqlite::SqliteStore;
