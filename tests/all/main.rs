//! Sluice's integration tests: one binary, one module per behaviour users care about.
//! Guest plug-ins come from `sample-plugins/`, built by `sluice-sample-plugins`.

mod api;
mod bulk_import;
mod callbacks;
mod cli;
mod client;
mod cluster;
mod cluster_simulation;
mod crash_recovery;
mod dashboard;
mod durable_state;
mod fairness;
mod fuzz;
mod hostile_input;
mod hostile_plugins;
mod hostile_tenants;
mod http;
mod isolation;
mod job_service;
mod language_plugins;
mod limits;
mod multi_node;
mod observability;
mod outbound_http;
mod runaways;
mod sample_plugins;
mod scheduler_simulation;
mod support;
mod upload_validation;
