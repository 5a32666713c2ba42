//! Sluice: a WebAssembly plug-in host for multi-tenant business applications.
//!
//! - [`engine`]: the sandbox that validates, compiles and runs plug-ins under limits;
//! - [`scheduler`]: which job runs next and what happens after (pure, clock injected);
//! - [`store`]: durable storage, the `Store` trait and its backends (SQLite, PostgreSQL),
//!   each a crate of its own under `runtime/crates/`; [`service`]: the asynchronous service;
//! - [`api`]: the HTTP API; [`callbacks`]: signed, SSRF-checked operation callbacks;
//! - from `sluice-core`: [`jobs`] (system jobs, lanes, status codes and quotas),
//!   [`records`] (organisations' record data and the trait plug-ins reach it by),
//!   [`limits`] (how much a tenant may store in one name, record, workflow or API).

#![forbid(unsafe_code)]

pub mod api;
pub mod callbacks;
pub mod config;
pub mod dashboard;
pub mod metrics;
pub mod service;
pub mod store;

pub use sluice_core::{files, jobs, limits, records};
pub use sluice_engine::{self as engine, egress, turns};
pub use sluice_scheduler as scheduler;
