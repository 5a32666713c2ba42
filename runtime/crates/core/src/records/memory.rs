//! An in-memory [`RecordStore`]: for the local test harness (`sluice plugin run`) and
//! for tests. Not durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::filter::project;
use super::{
    Attributes, Entity, Filter, RecordError, RecordStore, Value, check_attribute_count, check_attributes,
    check_entity_name, merge, take_record_id,
};

/// The most records one query returns.
pub const MAX_QUERY_RECORDS: usize = 5_000;

type Table = BTreeMap<String, Attributes>;

#[derive(Default)]
pub struct MemoryRecords {
    /// (org, entity) → id → attributes.
    tables: Mutex<HashMap<(String, String), Table>>,
}

impl MemoryRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads records into an organisation (the `--records` file of `sluice plugin run`).
    pub fn with_records(org: &str, records: Vec<Entity>) -> Result<Self, RecordError> {
        let store = MemoryRecords::new();
        for mut record in records {
            record.attributes.insert("id".into(), Value::String(record.id.clone()));
            store.create(org, &record.logical_name, record.attributes)?;
        }
        Ok(store)
    }

    /// Every record of an organisation, for display after a run.
    pub fn dump(&self, org: &str) -> Vec<Entity> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Entity> = tables
            .iter()
            .filter(|((o, _), _)| o == org)
            .flat_map(|((_, entity), table)| {
                table.iter().map(|(id, attributes)| Entity {
                    logical_name: entity.clone(),
                    id: id.clone(),
                    attributes: attributes.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.logical_name, &a.id).cmp(&(&b.logical_name, &b.id)));
        out
    }

    fn with_table<R>(
        &self,
        org: &str,
        entity: &str,
        f: impl FnOnce(&mut Table) -> R,
    ) -> Result<R, RecordError> {
        check_entity_name(entity)?;
        // A poisoned lock only means another thread panicked mid-call; the map is still whole.
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(tables.entry((org.to_owned(), entity.to_owned())).or_default()))
    }
}

fn not_found(entity: &str, id: &str) -> RecordError {
    RecordError::NotFound { entity: entity.into(), id: id.into() }
}

impl RecordStore for MemoryRecords {
    fn create(&self, org: &str, entity: &str, mut attributes: Attributes) -> Result<String, RecordError> {
        let id = take_record_id(&mut attributes)?;
        check_attributes(&attributes)?;
        self.with_table(org, entity, |table| {
            if table.contains_key(&id) {
                return Err(RecordError::Invalid(format!("a {entity} record with id {id} already exists")));
            }
            table.insert(id.clone(), attributes);
            Ok(id)
        })?
    }

    fn retrieve(&self, org: &str, entity: &str, id: &str, columns: &[String]) -> Result<Entity, RecordError> {
        self.with_table(org, entity, |table| {
            table.get(id).map(|attributes| Entity {
                logical_name: entity.into(),
                id: id.into(),
                attributes: project(attributes, columns),
            })
        })?
        .ok_or_else(|| not_found(entity, id))
    }

    fn update(&self, org: &str, entity: &str, id: &str, attributes: Attributes) -> Result<(), RecordError> {
        if attributes.contains_key("id") {
            return Err(RecordError::Invalid("a record's id cannot be updated".into()));
        }
        check_attributes(&attributes)?;
        self.with_table(org, entity, |table| {
            let record = table.get_mut(id).ok_or_else(|| not_found(entity, id))?;
            let mut merged = record.clone();
            merge(&mut merged, &attributes);
            check_attribute_count(&merged)?;
            *record = merged;
            Ok(())
        })?
    }

    fn delete(&self, org: &str, entity: &str, id: &str) -> Result<(), RecordError> {
        self.with_table(org, entity, |table| table.remove(id).map(drop).ok_or_else(|| not_found(entity, id)))?
    }

    fn query(&self, org: &str, filter: &Filter) -> Result<Vec<Entity>, RecordError> {
        self.query_counted(org, filter).map(|(found, _)| found)
    }

    fn query_counted(&self, org: &str, filter: &Filter) -> Result<(Vec<Entity>, u64), RecordError> {
        let top = filter.top.map_or(MAX_QUERY_RECORDS, |t| (t as usize).min(MAX_QUERY_RECORDS));
        let (found, read) = self.with_table(org, &filter.entity, |table| {
            let mut found = Vec::new();
            let mut read = 0;
            for (id, attributes) in table.iter() {
                if found.len() >= top || read >= super::MAX_QUERY_SCAN {
                    break;
                }
                read += 1;
                if filter.matches(attributes) {
                    found.push(Entity {
                        logical_name: filter.entity.clone(),
                        id: id.clone(),
                        attributes: filter.project(attributes),
                    });
                }
            }
            let refused = read >= super::MAX_QUERY_SCAN && found.len() < top && table.len() > read;
            (if refused { None } else { Some(found) }, read as u64)
        })?;
        let found = found.ok_or_else(|| super::query_too_broad(&filter.entity))?;
        Ok((found, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Condition, Operator};

    fn attrs(pairs: &[(&str, Value)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn records_are_confined_to_their_organisation() {
        let store = MemoryRecords::new();
        let id = store.create("org-a", "account", attrs(&[("name", "Contoso".into())])).unwrap();
        assert!(store.retrieve("org-a", "account", &id, &[]).is_ok());
        assert_eq!(store.retrieve("org-b", "account", &id, &[]), Err(not_found("account", &id)));
        assert!(store.update("org-b", "account", &id, Attributes::new()).is_err());
        assert!(store.delete("org-b", "account", &id).is_err());
        let everything = Filter { entity: "account".into(), columns: vec![], conditions: vec![], top: None };
        assert!(store.query("org-b", &everything).unwrap().is_empty());
    }

    #[test]
    fn update_sets_and_clears_attributes() {
        let store = MemoryRecords::new();
        let id = store
            .create("o", "account", attrs(&[("id", "a1".into()), ("name", "A".into()), ("fax", "1".into())]))
            .unwrap();
        assert_eq!(id, "a1");
        store.update("o", "account", "a1", attrs(&[("name", "B".into()), ("fax", Value::Null)])).unwrap();
        let record = store.retrieve("o", "account", "a1", &[]).unwrap();
        assert_eq!(record.attributes, attrs(&[("name", "B".into())]));
        assert!(store.create("o", "account", attrs(&[("id", "a1".into())])).is_err(), "duplicate id");
    }

    #[test]
    fn queries_filter_project_and_cap() {
        let store = MemoryRecords::new();
        for n in 0..10 {
            store.create("o", "lead", attrs(&[("score", Value::Integer(n)), ("name", "x".into())])).unwrap();
        }
        let filter = Filter {
            entity: "lead".into(),
            columns: vec!["score".into()],
            conditions: vec![Condition {
                attribute: "score".into(),
                operator: Operator::GreaterEqual,
                value: Value::Integer(7),
            }],
            top: Some(2),
        };
        let found = store.query("o", &filter).unwrap();
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|e| e.attributes.len() == 1 && e.attributes.contains_key("score")));
    }

    #[test]
    fn bad_entity_names_are_refused() {
        let store = MemoryRecords::new();
        assert!(matches!(store.create("o", "", Attributes::new()), Err(RecordError::Invalid(_))));
        assert!(matches!(
            store.create("o", "Robert'); DROP", Attributes::new()),
            Err(RecordError::Invalid(_))
        ));
    }
}
