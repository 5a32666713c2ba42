//! `sluice store`: an operator's work on a node's store itself, without a server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use sluice::store::{PostgresStore, SqliteStore, Store};

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Count every org's finished jobs again from the jobs and correct the kept counts
    /// that health and quotas read. They drift only if jobs were written without them: a
    /// node of a version before the counts were kept, still running after another
    /// migrated the database. Every writer waits while the jobs are read (0.11 s a million
    /// on SQLite, 0.18 s on PostgreSQL); prints each count corrected. The store must have
    /// been migrated by a node of this version: the command creates and migrates nothing.
    Recount {
        /// The data directory of a node on SQLite.
        #[arg(long, default_value = "sluice-data")]
        data: PathBuf,
        /// A PostgreSQL database instead (`postgres://user@host:port/db`).
        #[arg(long)]
        database: Option<String>,
    },
}

pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Recount { data, database } => {
            // A tool opens a store as it is: a database without Sluice's schema, or one
            // a node of this version has not migrated, is refused and left unchanged.
            let store: Arc<dyn Store> = match &database {
                Some(url) => Arc::new(
                    PostgresStore::open_existing(url)
                        .with_context(|| format!("cannot open {}", super::format::redacted(url)))?,
                ),
                None => {
                    let file = data.join("sluice.db");
                    Arc::new(SqliteStore::open_existing(&file).with_context(|| {
                        format!("cannot open {} (--data names a node's data directory)", file.display())
                    })?)
                }
            };
            let miscounts = store.recount_finished_jobs()?;
            for m in &miscounts {
                println!(
                    "org {} {} {}: kept {}, counted {}",
                    m.org.0,
                    m.lane.name(),
                    m.status.name(),
                    m.kept,
                    m.counted
                );
            }
            println!("{} counts corrected", miscounts.len());
            Ok(())
        }
    }
}
