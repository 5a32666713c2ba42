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
pub use value::{Attributes, DateTime, Decimal, Entity, EntityReference, Value, weight};

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
    /// A query read [`MAX_QUERY_SCAN`] records without finding what it asks for.
    #[error(
        "the query reads more than {limit} {entity} records without finding what it asks for; \
         narrow it (conditions that match sooner, or a smaller `top`)"
    )]
    QueryTooBroad { entity: String, limit: u64 },
}

/// What a write did, in order; the job service turns these into events at depth + 1.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum RecordChange {
    Create { entity: String, id: String, attributes: Attributes },
    Update { entity: String, id: String, attributes: Attributes },
    Delete { entity: String, id: String },
}

impl RecordChange {
    /// Applies this change again to `store` (an overlay, to check that it still applies
    /// after other writes): a create whose id is taken, or an update or delete of a
    /// record that is gone, is refused as it would be at commit.
    pub fn replay(&self, store: &dyn RecordStore, org: &str) -> Result<(), RecordError> {
        match self {
            RecordChange::Create { entity, id, attributes } => {
                let mut attributes = attributes.clone();
                attributes.insert("id".into(), Value::String(id.clone()));
                store.create(org, entity, attributes).map(drop)
            }
            RecordChange::Update { entity, id, attributes } => {
                store.update(org, entity, id, attributes.clone())
            }
            RecordChange::Delete { entity, id } => store.delete(org, entity, id),
        }
    }
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

    /// Reads the records of one entity with these ids, every attribute, `None` for an id
    /// not found: for a caller about to touch them all (a bulk import's events). A store
    /// that can read many in one query should; the default reads them one by one.
    fn retrieve_many(
        &self,
        org: &str,
        entity: &str,
        ids: &[String],
    ) -> Result<Vec<(String, Option<Attributes>)>, RecordError> {
        ids.iter()
            .map(|id| match self.retrieve(org, entity, id, &[]) {
                Ok(found) => Ok((id.clone(), Some(found.attributes))),
                Err(RecordError::NotFound { .. }) => Ok((id.clone(), None)),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Like [`RecordStore::query`], and says how many records it read to answer: what
    /// a plug-in's query is charged for. A store that reads only what it returns need
    /// not override it.
    fn query_counted(&self, org: &str, filter: &Filter) -> Result<(Vec<Entity>, u64), RecordError> {
        let found = self.query(org, filter)?;
        let read = found.len() as u64;
        Ok((found, read))
    }
}

/// The most records one query may read (matching or not) before it is refused: a
/// query costs at most this much work, whatever the entity's size. Narrow a query
/// that hits it with `top`.
pub const MAX_QUERY_SCAN: usize = 10_000;

/// The refusal of a query that reads past [`MAX_QUERY_SCAN`].
pub fn query_too_broad(entity: &str) -> RecordError {
    RecordError::QueryTooBroad { entity: entity.into(), limit: MAX_QUERY_SCAN as u64 }
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

    /// A query with the number of records it read.
    pub fn query_counted(&self, filter: &Filter) -> Result<(Vec<Entity>, u64), RecordError> {
        self.store.query_counted(&self.org, filter)
    }
}

/// Takes the record id out of a create's attributes: the `id` attribute if given, else a
/// new UUID. Shared by every store so that ids are chosen the same way everywhere.
pub fn take_record_id(attributes: &mut Attributes) -> Result<String, RecordError> {
    match attributes.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        None | Some(Value::Null) => Ok(crate::new_id()),
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
