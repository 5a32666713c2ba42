//! Organisations' record data: the types, the [`RecordStore`] trait the plug-in record
//! service calls, and an in-memory store. The durable store implements the same trait.
//!
//! Every call names its organisation; a store never returns or touches another
//! organisation's records. Plug-ins reach a store only through [`OrgRecords`], which
//! fixes the organisation, so a plug-in cannot name another one.

mod filter;
mod memory;
mod overlay;
mod value;

use std::sync::Arc;

use crate::limits::{self, MAX_ATTRIBUTES, MAX_VALUE_BYTES, TooLarge};

pub use filter::{Condition, Filter, Operator, project};
pub use memory::{MAX_QUERY_RECORDS, MemoryRecords};
pub use overlay::Overlay;
pub use value::{Attributes, DateTime, Decimal, Entity, EntityReference, Value};

/// Why a record operation was refused. Returned to the plug-in as a value it can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no {entity} record with id {id}")]
    NotFound { entity: String, id: String },
    /// Over one of the [`limits`](crate::limits) on what a record holds.
    #[error("record too large: {0}")]
    TooLarge(#[from] TooLarge),
    #[error("invalid record request: {0}")]
    Invalid(String),
}

/// What a write did, in order; the job service turns these into events at depth + 1.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum RecordChange {
    Create { entity: String, id: String, attributes: Attributes },
    Update { entity: String, id: String, attributes: Attributes },
    Delete { entity: String, id: String },
}

/// Storage of records, per organisation.
pub trait RecordStore: Send + Sync {
    /// Creates a record; its id is the `id` attribute if given (and not in use), else new.
    fn create(&self, org: &str, entity: &str, attributes: Attributes) -> Result<String, RecordError>;
    /// Reads a record; empty `columns` means every attribute.
    fn retrieve(&self, org: &str, entity: &str, id: &str, columns: &[String]) -> Result<Entity, RecordError>;
    /// Sets the given attributes; a `null` value clears one.
    fn update(&self, org: &str, entity: &str, id: &str, attributes: Attributes) -> Result<(), RecordError>;
    fn delete(&self, org: &str, entity: &str, id: &str) -> Result<(), RecordError>;
    fn query(&self, org: &str, filter: &Filter) -> Result<Vec<Entity>, RecordError>;
}

/// One organisation's view of a record store: the only handle a plug-in execution gets.
#[derive(Clone)]
pub struct OrgRecords {
    org: String,
    store: Arc<dyn RecordStore>,
}

impl OrgRecords {
    pub fn new(org: impl Into<String>, store: Arc<dyn RecordStore>) -> Self {
        OrgRecords { org: org.into(), store }
    }

    pub fn org(&self) -> &str {
        &self.org
    }

    pub fn create(&self, entity: &str, attributes: Attributes) -> Result<String, RecordError> {
        self.store.create(&self.org, entity, attributes)
    }

    pub fn retrieve(&self, entity: &str, id: &str, columns: &[String]) -> Result<Entity, RecordError> {
        self.store.retrieve(&self.org, entity, id, columns)
    }

    pub fn update(&self, entity: &str, id: &str, attributes: Attributes) -> Result<(), RecordError> {
        self.store.update(&self.org, entity, id, attributes)
    }

    pub fn delete(&self, entity: &str, id: &str) -> Result<(), RecordError> {
        self.store.delete(&self.org, entity, id)
    }

    pub fn query(&self, filter: &Filter) -> Result<Vec<Entity>, RecordError> {
        self.store.query(&self.org, filter)
    }
}

/// Takes the record id out of a create's attributes: the `id` attribute if given, else a
/// new UUID. Shared by every store so that ids are chosen the same way everywhere.
pub fn take_record_id(attributes: &mut Attributes) -> Result<String, RecordError> {
    match attributes.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        None | Some(Value::Null) => Ok(uuid::Uuid::new_v4().to_string()),
        Some(other) => Err(RecordError::Invalid(format!("a record id is a non-empty string, not {other:?}"))),
    }
}

/// Applies an update's attributes to a record: a `null` value clears one.
pub fn merge(record: &mut Attributes, changes: &Attributes) {
    for (name, value) in changes {
        match value {
            Value::Null => record.remove(name),
            value => record.insert(name.clone(), value.clone()),
        };
    }
}

/// Checks an entity's logical name: 1–64 characters of `a-z`, `0-9` and `_`.
pub fn check_entity_name(entity: &str) -> Result<(), RecordError> {
    let valid = !entity.is_empty()
        && entity.len() <= 64
        && entity.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(RecordError::Invalid(format!(
            "'{entity}' is not an entity logical name (1-64 characters of a-z, 0-9, _)"
        )))
    }
}

/// Checks what a write sets against the [`limits`]: at most [`MAX_ATTRIBUTES`]
/// attributes, names within [`limits::MAX_NAME_BYTES`], values within
/// [`MAX_VALUE_BYTES`]. An update checks the merged record's count again with
/// [`check_attribute_count`].
pub fn check_attributes(attributes: &Attributes) -> Result<(), RecordError> {
    check_attribute_count(attributes)?;
    for (name, value) in attributes {
        limits::name("an attribute's name", name)?;
        limits::check(format!("attribute '{name}'"), value.encoded_len(), MAX_VALUE_BYTES, "bytes")?;
    }
    Ok(())
}

/// Checks a record's (or a write's) number of attributes against [`MAX_ATTRIBUTES`].
pub fn check_attribute_count(attributes: &Attributes) -> Result<(), RecordError> {
    Ok(limits::check("a record's attributes", attributes.len(), MAX_ATTRIBUTES, "attributes")?)
}
