//! Sluice's vocabulary, shared by the service, the engine and every store backend:
//! ids, lanes, statuses and quotas of jobs ([`jobs`]); records, their values, filters
//! and limits ([`records`], [`limits`]); what a run is registered as and what it cost
//! ([`run`]); and private files ([`files`]). No database and no WebAssembly here.

pub mod files;
pub mod jobs;
pub mod limits;
pub mod records;
pub mod run;
