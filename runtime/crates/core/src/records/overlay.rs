//! A write buffer over a record store: reads see the buffered writes, writes are kept
//! as [`RecordChange`]s instead of applied. An execution runs against an overlay so that
//! its writes commit atomically with its job's completion (or with its event), and
//! vanish if it fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::filter::project;
use super::{
    Attributes, Entity, Filter, RecordChange, RecordError, RecordStore, check_attribute_count,
    check_attributes, check_entity_name, merge, take_record_id,
};

pub struct Overlay {
    base: Arc<dyn RecordStore>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// (org, entity, id) → the record as written (`None`: deleted).
    records: HashMap<(String, String, String), Option<Attributes>>,
    changes: Vec<RecordChange>,
    /// Records read from the base ahead of use ([`Overlay::read_ahead`]), as they were
    /// then (`None`: not found); what `records` holds wins over them.
    read_ahead: HashMap<(String, String, String), Option<Attributes>>,
}

impl Overlay {
    pub fn new(base: Arc<dyn RecordStore>) -> Self {
        Overlay { base, pending: Mutex::default() }
    }

    /// Reads these records of `entity` from the base in one go, so that the writes about
    /// to touch them (a bulk import's events) need no read each. Like any read through
    /// the overlay, what it saw is checked again when the writes commit.
    pub fn read_ahead(&self, org: &str, entity: &str, ids: &[String]) -> Result<(), RecordError> {
        let found = self.base.retrieve_many(org, entity, ids)?;
        let mut pending = self.lock();
        for (id, record) in found {
            pending.read_ahead.insert((org.into(), entity.into(), id), record);
        }
        Ok(())
    }

    /// How many writes are buffered.
    pub fn changes_len(&self) -> usize {
        self.lock().changes.len()
    }

    /// The buffered writes, in order.
    pub fn changes(&self) -> Vec<RecordChange> {
        self.lock().changes.clone()
    }

    /// Moves this overlay's writes into `target` (the overlay this one was stacked on,
    /// or one that sees the same records), as if they had been made there.
    pub fn merge_into(&self, target: &Overlay) {
        let mine = std::mem::take(&mut *self.lock());
        let mut theirs = target.lock();
        theirs.records.extend(mine.records);
        theirs.changes.extend(mine.changes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record as the overlay knows it (written here, else read ahead): `Some(None)`
    /// if deleted or not found, `None` if the base must be asked.
    fn known(&self, org: &str, entity: &str, id: &str) -> Option<Option<Attributes>> {
        let key = (org.into(), entity.into(), id.into());
        let pending = self.lock();
        pending.records.get(&key).or_else(|| pending.read_ahead.get(&key)).cloned()
    }

    fn current(&self, org: &str, entity: &str, id: &str) -> Result<Attributes, RecordError> {
        match self.known(org, entity, id) {
            Some(Some(attributes)) => Ok(attributes),
            Some(None) => Err(RecordError::NotFound { entity: entity.into(), id: id.into() }),
            None => self.base.retrieve(org, entity, id, &[]).map(|e| e.attributes),
        }
    }

    fn write(&self, org: &str, entity: &str, id: &str, record: Option<Attributes>, change: RecordChange) {
        let mut pending = self.lock();
        pending.records.insert((org.into(), entity.into(), id.into()), record);
        pending.changes.push(change);
    }
}

impl RecordStore for Overlay {
    fn create(&self, org: &str, entity: &str, mut attributes: Attributes) -> Result<String, RecordError> {
        check_entity_name(entity)?;
        let id = take_record_id(&mut attributes)?;
        check_attributes(&attributes)?;
        if self.current(org, entity, &id).is_ok() {
            return Err(RecordError::Invalid(format!("a {entity} record with id {id} already exists")));
        }
        let change =
            RecordChange::Create { entity: entity.into(), id: id.clone(), attributes: attributes.clone() };
        self.write(org, entity, &id, Some(attributes), change);
        Ok(id)
    }

    fn retrieve(&self, org: &str, entity: &str, id: &str, columns: &[String]) -> Result<Entity, RecordError> {
        check_entity_name(entity)?;
        let attributes = self.current(org, entity, id)?;
        Ok(Entity { logical_name: entity.into(), id: id.into(), attributes: project(&attributes, columns) })
    }

    fn update(&self, org: &str, entity: &str, id: &str, attributes: Attributes) -> Result<(), RecordError> {
        check_entity_name(entity)?;
        if attributes.contains_key("id") {
            return Err(RecordError::Invalid("a record's id cannot be updated".into()));
        }
        check_attributes(&attributes)?;
        let mut record = self.current(org, entity, id)?;
        merge(&mut record, &attributes);
        check_attribute_count(&record)?;
        let change = RecordChange::Update { entity: entity.into(), id: id.into(), attributes };
        self.write(org, entity, id, Some(record), change);
        Ok(())
    }

    fn delete(&self, org: &str, entity: &str, id: &str) -> Result<(), RecordError> {
        check_entity_name(entity)?;
        self.current(org, entity, id)?;
        self.write(org, entity, id, None, RecordChange::Delete { entity: entity.into(), id: id.into() });
        Ok(())
    }

    fn query(&self, org: &str, filter: &Filter) -> Result<Vec<Entity>, RecordError> {
        self.query_counted(org, filter).map(|(found, _)| found)
    }

    fn query_counted(&self, org: &str, filter: &Filter) -> Result<(Vec<Entity>, u64), RecordError> {
        let touched: HashMap<String, Option<Attributes>> = self
            .lock()
            .records
            .iter()
            .filter(|((o, e, _), _)| o == org && *e == filter.entity)
            .map(|((_, _, id), record)| (id.clone(), record.clone()))
            .collect();
        // Ask the base for everything matching (then fix up what this overlay touched).
        let base_filter = Filter { columns: Vec::new(), top: None, ..filter.clone() };
        let (base, read) = self.base.query_counted(org, &base_filter)?;
        let read = read + touched.len() as u64;
        let mut found: Vec<Entity> = base.into_iter().filter(|e| !touched.contains_key(&e.id)).collect();
        for (id, record) in touched {
            if let Some(attributes) = record.filter(|a| filter.matches(a)) {
                found.push(Entity { logical_name: filter.entity.clone(), id, attributes });
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(top) = filter.top {
            found.truncate(top as usize);
        }
        for entity in &mut found {
            entity.attributes = filter.project(&entity.attributes);
        }
        Ok((found, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{MemoryRecords, Value};

    #[test]
    fn writes_are_buffered_and_visible_to_reads_only_through_the_overlay() {
        let base = Arc::new(MemoryRecords::new());
        let id = base.create("o", "account", Attributes::from([("name".into(), Value::from("A"))])).unwrap();
        let overlay = Overlay::new(base.clone());
        overlay.update("o", "account", &id, Attributes::from([("name".into(), Value::from("B"))])).unwrap();
        let created = overlay.create("o", "account", Attributes::new()).unwrap();
        assert_eq!(overlay.retrieve("o", "account", &id, &[]).unwrap().attributes["name"], Value::from("B"));
        assert_eq!(base.retrieve("o", "account", &id, &[]).unwrap().attributes["name"], Value::from("A"));
        let all = Filter { entity: "account".into(), columns: vec![], conditions: vec![], top: None };
        assert_eq!(overlay.query("o", &all).unwrap().len(), 2);
        assert_eq!(base.query("o", &all).unwrap().len(), 1);
        overlay.delete("o", "account", &created).unwrap();
        assert_eq!(overlay.query("o", &all).unwrap().len(), 1);
        assert_eq!(overlay.changes().len(), 3);
    }

    /// A bulk import reads its records ahead in one go; its writes then need no read
    /// each, see what was read (found or not), and still win over it.
    #[test]
    fn records_read_ahead_serve_the_writes_that_follow() {
        let base = Arc::new(MemoryRecords::new());
        let named = |id: &str, name: &str| {
            Attributes::from([("id".into(), Value::from(id)), ("name".into(), Value::from(name))])
        };
        base.create("o", "account", named("a1", "A")).unwrap();
        let overlay = Overlay::new(base.clone());
        overlay.read_ahead("o", "account", &["a1".into(), "a2".into()]).unwrap();
        // Changed in the base after the read: the overlay answers from what it read,
        // as it would from a read of its own (the commit checks again).
        base.delete("o", "account", "a1").unwrap();
        base.create("o", "account", named("a2", "late")).unwrap();
        assert_eq!(overlay.retrieve("o", "account", "a1", &[]).unwrap().attributes["name"], Value::from("A"));
        assert!(overlay.create("o", "account", named("a2", "B")).is_ok());
        assert_eq!(overlay.retrieve("o", "account", "a2", &[]).unwrap().attributes["name"], Value::from("B"));
        overlay.delete("o", "account", "a1").unwrap();
        assert!(matches!(overlay.retrieve("o", "account", "a1", &[]), Err(RecordError::NotFound { .. })));
    }

    /// What plug-ins and events write: at most 256 attributes per record (an update
    /// cannot grow one past it), names and values within their limits; refused writes
    /// leave no change behind.
    #[test]
    fn writes_past_the_record_limits_are_refused() {
        let overlay = Overlay::new(Arc::new(MemoryRecords::new()));
        let attributes =
            |n: usize| -> Attributes { (0..n).map(|i| (format!("a{i}"), Value::from(1))).collect() };
        let too_large = |result: Result<(), RecordError>| matches!(result, Err(RecordError::TooLarge(_)));
        assert!(too_large(overlay.create("o", "account", attributes(257)).map(drop)));
        let long_name = Attributes::from([("n".repeat(257), Value::Null)]);
        assert!(too_large(overlay.create("o", "account", long_name).map(drop)));
        let big = Attributes::from([("big".into(), Value::String("x".repeat(65_537)))]);
        assert!(too_large(overlay.create("o", "account", big).map(drop)));
        let id = overlay.create("o", "account", attributes(256)).unwrap();
        let one_more = Attributes::from([("one_more".into(), Value::from(1))]);
        assert!(too_large(overlay.update("o", "account", &id, one_more)));
        let replace = Attributes::from([("a0".into(), Value::Null), ("one_more".into(), Value::from(1))]);
        overlay.update("o", "account", &id, replace).unwrap();
        assert_eq!(overlay.changes().len(), 2);
    }
}
