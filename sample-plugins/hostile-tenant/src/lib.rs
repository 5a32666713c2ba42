//! Hostile tenant: what one org can do to the resources every org shares, chosen by the
//! step's unsecure configuration (one word):
//! - `conflict`: creates the `task` record `clash` (every run the same id), so that runs
//!   finishing together write conflicting records;
//! - `query-storm`: queries the whole `task` entity with a condition no record meets,
//!   over and over, to hold the store's readers;
//! - `failed-writes`: updates a record that does not exist, over and over, ignoring the
//!   errors (failed writes must count against the write limit);
//! - anything else: returns at once.

use sluice_sdk::records::{self, Condition, Filter, Operator};
use sluice_sdk::{Context, Error, Output, Plugin, Value};

struct HostileTenant;

impl Plugin for HostileTenant {
    fn execute(_: Context) -> Result<Output, Error> {
        let mode = sluice_sdk::config::unsecure().unwrap_or_default();
        let mut calls: i64 = 0;
        match mode.trim() {
            "conflict" => {
                records::create("task", &[("id", "clash").into(), ("subject", "mine").into()])
                    .map_err(|e| Error::Transient(format!("{e:?}")))?;
                calls = 1;
            }
            "query-storm" => loop {
                let filter = Filter {
                    entity: "task".into(),
                    columns: vec![],
                    conditions: vec![Condition {
                        attribute: "subject".into(),
                        operator: Operator::Equal,
                        value: Value::from("no such subject"),
                    }],
                    top: None,
                };
                // Errors are ignored on purpose: a storm does not stop to read them.
                let _ = records::query(&filter);
            },
            "failed-writes" => loop {
                let _ = records::update("task", "missing", &[("subject", "storm").into()]);
            },
            _ => {}
        }
        Ok(Output::new().with("calls", calls))
    }
}

sluice_sdk::export_plugin!(HostileTenant);
