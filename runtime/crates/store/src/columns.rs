//! What both backends share: how the model's values are written in columns (lanes and
//! statuses as numbers, structured values as JSON text, enums by their JSON name) and the
//! jobs table's column list.

use crate::model::{DeliveryState, Operation};
use crate::{Error, Result};
use sluice_core::jobs::{Lane, Status};
use sluice_core::records::RecordError;

pub fn lane_of(n: i64) -> Result<Lane> {
    Lane::ALL.get(n as usize).copied().ok_or_else(|| Error::Corrupt(format!("lane {n}")))
}

pub fn status_of(n: i64) -> Result<Status> {
    Status::from_code(n as u32).ok_or_else(|| Error::Corrupt(format!("status {n}")))
}

pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(e.to_string()))
}

pub fn operation_of(name: &str) -> Result<Operation> {
    Operation::from_name(name).ok_or_else(|| Error::Corrupt(format!("operation '{name}'")))
}

pub fn delivery_state_name(state: DeliveryState) -> String {
    json(&state).trim_matches('"').to_owned()
}

/// Record-service calls name the org by its number, as text.
pub fn org_number(org: &str) -> std::result::Result<i64, RecordError> {
    org.parse().map_err(|_| RecordError::Invalid(format!("unknown organisation '{org}'")))
}

pub const JOB_COLUMNS: &str = "id, org_id, lane, operation, definition_id, definition_version, correlation_id, \
    depth, record_entity, record_id, payload, dependency_token, status, created_at, started_at, completed_at, \
    postpone_until, retry_count, postponement_count, error_code, error_message, output, fuel_used, wall_time_us, \
    host_time_us, peak_memory_bytes, trace, exception_times";

/// The answer of `retrieve_many`: for each id asked, in order, its record parsed from the
/// attributes' JSON text `found` under it, or `None`.
pub fn records_in_order(
    ids: &[String],
    mut found: std::collections::HashMap<String, String>,
) -> std::result::Result<Vec<(String, Option<sluice_core::records::Attributes>)>, RecordError> {
    ids.iter()
        .map(|id| {
            let record = found.remove(id).map(|text| {
                serde_json::from_str(&text).map_err(|e| RecordError::Invalid(format!("corrupt record: {e}")))
            });
            Ok((id.clone(), record.transpose()?))
        })
        .collect()
}
