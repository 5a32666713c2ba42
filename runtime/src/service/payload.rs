//! A job's payload: its execution context in the form a waiting job keeps it, on disk and
//! in memory until its start.
//!
//! One payload is stored per waiting job, so its size is most of a backlog's bytes: as
//! JSON a trivial `Create` took 334 of a job row's 458 bytes, and each start past the
//! payloads kept in memory parsed it back. The stored form is postcard (a compact
//! binary encoding) behind a version byte, and leaves out what the job's row already
//! holds (its org, correlation id and depth) and what a write's context repeats (the
//! Target parameter and the target's name and id, which are the record's; a post-image
//! equal to the target). The version byte is never `{`, so a payload written as JSON
//! (by an earlier Sluice) is still read.

use serde::{Deserialize, Serialize};

use crate::engine::ExecutionContext;
use crate::jobs::OrgId;
use crate::records::{Attributes, DateTime, Decimal, Entity, EntityReference, Value};
use sluice_core::run::{Mode, Stage};

/// The first byte of a payload in the form below; a later form takes the next number.
const VERSION: u8 = 1;

/// What the job's row holds beside the payload, and the payload leaves out when equal.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowKeys<'a> {
    pub org: OrgId,
    pub correlation_id: &'a str,
    pub depth: u32,
}

/// Why a stored payload could not be read back (a damaged row: its job fails alone).
#[derive(Debug, thiserror::Error)]
pub(super) enum PayloadError {
    #[error("payload of an unknown form (first byte {0})")]
    UnknownForm(u8),
    #[error("empty payload")]
    Empty,
    #[error("payload does not decode: {0}")]
    Binary(#[from] postcard::Error),
    #[error("payload is not a context: {0}")]
    Json(#[from] serde_json::Error),
    #[error("payload holds a bad value: {0}")]
    Value(String),
}

/// The context in its stored form.
pub(super) fn encode(context: &ExecutionContext, row: RowKeys<'_>) -> Vec<u8> {
    let record_id = context.record_id.as_deref();
    let target_parameter = matches!(
        (record_id, context.input_parameters.get("Target")),
        (Some(id), Some(Value::String(target))) if target == id
    );
    let input_parameters = context
        .input_parameters
        .iter()
        .filter(|(name, _)| !(target_parameter && name.as_str() == "Target"))
        .map(|(name, value)| (name.clone(), StoredValue::of(value)))
        .collect();
    let target = context.target.as_ref().map(|e| StoredEntity::of(e, context));
    let post_image = match &context.post_image {
        None => Image::None,
        Some(image) if Some(image) == context.target.as_ref() => Image::SameAsTarget,
        Some(image) => Image::Own(StoredEntity::of(image, context)),
    };
    let stored = Stored {
        org_id: (context.org_id != row.org.0.to_string()).then(|| context.org_id.clone()),
        user_id: (context.user_id != "local").then(|| context.user_id.clone()),
        message: context.message.clone(),
        entity: context.entity.clone(),
        record_id: context.record_id.clone(),
        stage: context.stage.number() as u8,
        synchronous: context.mode == Mode::Synchronous,
        depth: (context.depth != row.depth).then_some(context.depth),
        correlation_id: (context.correlation_id != row.correlation_id)
            .then(|| context.correlation_id.clone()),
        input_parameters,
        target_parameter,
        target,
        pre_image: context.pre_image.as_ref().map(|e| StoredEntity::of(e, context)),
        post_image,
        shared_variables: pairs(&context.shared_variables),
    };
    postcard::to_extend(&stored, vec![VERSION]).expect("a context encodes into memory")
}

/// The context back from its stored form (or from JSON, as an earlier Sluice wrote it).
pub(super) fn decode(bytes: &[u8], row: RowKeys<'_>) -> Result<ExecutionContext, PayloadError> {
    match bytes.first() {
        None => Err(PayloadError::Empty),
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&VERSION) => postcard::from_bytes::<Stored>(&bytes[1..])?.into_context(row),
        Some(&other) => Err(PayloadError::UnknownForm(other)),
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// `None`: the job's org.
    org_id: Option<String>,
    /// `None`: `local`.
    user_id: Option<String>,
    message: String,
    entity: String,
    record_id: Option<String>,
    /// Dataverse's number: 10, 20 or 40.
    stage: u8,
    synchronous: bool,
    /// `None`: the job's depth.
    depth: Option<u32>,
    /// `None`: the job's correlation id.
    correlation_id: Option<String>,
    input_parameters: Vec<(String, StoredValue)>,
    /// The `Target` input parameter was the record's id (a write's context).
    target_parameter: bool,
    target: Option<StoredEntity>,
    pre_image: Option<StoredEntity>,
    post_image: Image,
    shared_variables: Vec<(String, StoredValue)>,
}

#[derive(Serialize, Deserialize)]
enum Image {
    None,
    SameAsTarget,
    Own(StoredEntity),
}

/// A record; its name and id left out (`None`) when they are the context's entity and
/// record id.
#[derive(Serialize, Deserialize)]
struct StoredEntity {
    logical_name: Option<String>,
    id: Option<String>,
    attributes: Vec<(String, StoredValue)>,
}

/// [`Value`] with derived serde: `Value`'s own goes through its JSON form, which a
/// format that is not self-describing cannot read back. Appending a variant keeps
/// the old ones' numbers.
#[derive(Serialize, Deserialize)]
enum StoredValue {
    Null,
    String(String),
    Integer(i64),
    Decimal(i64, u8),
    Boolean(bool),
    DateTime(i64, u32),
    Money(i64, u8),
    OptionSet(i32),
    EntityReference(String, String, Option<String>),
}

impl StoredEntity {
    fn of(entity: &Entity, context: &ExecutionContext) -> StoredEntity {
        StoredEntity {
            logical_name: (entity.logical_name != context.entity).then(|| entity.logical_name.clone()),
            id: (Some(entity.id.as_str()) != context.record_id.as_deref()).then(|| entity.id.clone()),
            attributes: pairs(&entity.attributes),
        }
    }

    fn into_entity(self, entity: &str, record_id: Option<&str>) -> Result<Entity, PayloadError> {
        Ok(Entity {
            logical_name: self.logical_name.unwrap_or_else(|| entity.to_owned()),
            id: match self.id {
                Some(id) => id,
                None => {
                    record_id.ok_or_else(|| PayloadError::Value("a record without an id".into()))?.to_owned()
                }
            },
            attributes: attributes(self.attributes)?,
        })
    }
}

impl Stored {
    fn into_context(self, row: RowKeys<'_>) -> Result<ExecutionContext, PayloadError> {
        let stage = match self.stage {
            10 => Stage::PreValidation,
            20 => Stage::PreOperation,
            40 => Stage::PostOperation,
            other => return Err(PayloadError::Value(format!("stage {other}"))),
        };
        let record_id = self.record_id.as_deref();
        let target = self.target.map(|e| e.into_entity(&self.entity, record_id)).transpose()?;
        let post_image = match self.post_image {
            Image::None => None,
            Image::SameAsTarget => {
                Some(target.clone().ok_or_else(|| PayloadError::Value("no target".into()))?)
            }
            Image::Own(e) => Some(e.into_entity(&self.entity, record_id)?),
        };
        let pre_image = self.pre_image.map(|e| e.into_entity(&self.entity, record_id)).transpose()?;
        let mut input_parameters = attributes(self.input_parameters)?;
        if self.target_parameter {
            let id = record_id.ok_or_else(|| PayloadError::Value("a Target without a record".into()))?;
            input_parameters.insert("Target".into(), Value::String(id.to_owned()));
        }
        Ok(ExecutionContext {
            org_id: self.org_id.unwrap_or_else(|| row.org.0.to_string()),
            user_id: self.user_id.unwrap_or_else(|| "local".into()),
            message: self.message,
            entity: self.entity,
            record_id: self.record_id,
            stage,
            mode: if self.synchronous { Mode::Synchronous } else { Mode::Asynchronous },
            depth: self.depth.unwrap_or(row.depth),
            correlation_id: self.correlation_id.unwrap_or_else(|| row.correlation_id.to_owned()),
            input_parameters,
            target,
            pre_image,
            post_image,
            shared_variables: attributes(self.shared_variables)?,
        })
    }
}

fn pairs(attributes: &Attributes) -> Vec<(String, StoredValue)> {
    attributes.iter().map(|(name, value)| (name.clone(), StoredValue::of(value))).collect()
}

fn attributes(pairs: Vec<(String, StoredValue)>) -> Result<Attributes, PayloadError> {
    pairs.into_iter().map(|(name, value)| Ok((name, value.into_value()?))).collect()
}

impl StoredValue {
    fn of(value: &Value) -> StoredValue {
        match value {
            Value::Null => StoredValue::Null,
            Value::String(s) => StoredValue::String(s.clone()),
            Value::Integer(i) => StoredValue::Integer(*i),
            Value::Decimal(d) => StoredValue::Decimal(d.units, d.scale),
            Value::Boolean(b) => StoredValue::Boolean(*b),
            Value::DateTime(t) => StoredValue::DateTime(t.seconds, t.nanoseconds),
            Value::Money(d) => StoredValue::Money(d.units, d.scale),
            Value::OptionSet(o) => StoredValue::OptionSet(*o),
            Value::EntityReference(r) => {
                StoredValue::EntityReference(r.entity.clone(), r.id.clone(), r.name.clone())
            }
        }
    }

    /// The value, checked as the JSON form checks it where it enters.
    fn into_value(self) -> Result<Value, PayloadError> {
        let decimal = |units, scale| {
            if scale > Decimal::MAX_SCALE {
                return Err(PayloadError::Value(format!("a decimal of scale {scale}")));
            }
            Ok(Decimal { units, scale })
        };
        Ok(match self {
            StoredValue::Null => Value::Null,
            StoredValue::String(s) => Value::String(s),
            StoredValue::Integer(i) => Value::Integer(i),
            StoredValue::Decimal(units, scale) => Value::Decimal(decimal(units, scale)?),
            StoredValue::Boolean(b) => Value::Boolean(b),
            StoredValue::DateTime(seconds, nanoseconds) => {
                if nanoseconds >= 1_000_000_000 {
                    return Err(PayloadError::Value(format!("{nanoseconds} nanoseconds")));
                }
                Value::DateTime(DateTime { seconds, nanoseconds })
            }
            StoredValue::Money(units, scale) => Value::Money(decimal(units, scale)?),
            StoredValue::OptionSet(o) => Value::OptionSet(o),
            StoredValue::EntityReference(entity, id, name) => {
                Value::EntityReference(EntityReference { entity, id, name })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(correlation_id: &str) -> RowKeys<'_> {
        RowKeys { org: OrgId(7), correlation_id, depth: 2 }
    }

    fn write_context() -> ExecutionContext {
        let mut attributes = Attributes::new();
        attributes.insert("name".into(), Value::String("Contoso".into()));
        attributes.insert("revenue".into(), Value::Money(Decimal { units: 125_050, scale: 2 }));
        attributes.insert("founded".into(), Value::DateTime(DateTime { seconds: -86_400, nanoseconds: 5 }));
        attributes.insert("rating".into(), Value::Decimal(Decimal { units: -3, scale: 18 }));
        attributes.insert("open".into(), Value::Boolean(true));
        attributes.insert("kind".into(), Value::OptionSet(-4));
        attributes.insert(
            "parent".into(),
            Value::EntityReference(EntityReference {
                entity: "account".into(),
                id: "p-1".into(),
                name: Some("Parent".into()),
            }),
        );
        attributes.insert("fax".into(), Value::Null);
        attributes.insert("employees".into(), Value::Integer(i64::MIN));
        let pre = Entity { logical_name: "account".into(), id: "a-1".into(), attributes: Attributes::new() };
        let mut context = ExecutionContext::for_write(
            "Update",
            "account",
            "a-1",
            Some(attributes.clone()),
            Some(pre),
            Some(Entity { logical_name: "account".into(), id: "a-1".into(), attributes }),
        );
        context.org_id = "7".into();
        context.depth = 2;
        context
    }

    #[test]
    fn a_context_comes_back_whole() {
        let context = write_context();
        let bytes = encode(&context, row(&context.correlation_id));
        assert_eq!(decode(&bytes, row(&context.correlation_id)).unwrap(), context);
    }

    #[test]
    fn what_differs_from_the_row_and_the_record_is_kept() {
        let mut context = write_context();
        context.org_id = "local".into();
        context.user_id = "u-9".into();
        context.depth = 5;
        context.stage = Stage::PreOperation;
        context.mode = Mode::Synchronous;
        context.input_parameters.insert("Target".into(), Value::String("someone-else".into()));
        context.post_image.as_mut().unwrap().id = "other".into();
        context.pre_image.as_mut().unwrap().logical_name = "contact".into();
        context.shared_variables.insert("step".into(), Value::Integer(3));
        let bytes = encode(&context, row("not-the-context's"));
        assert_eq!(decode(&bytes, row("not-the-context's")).unwrap(), context);

        let mut custom = ExecutionContext::new("new_Approve", "none");
        custom.input_parameters.insert("Target".into(), Value::String("x".into()));
        let bytes = encode(&custom, row(&custom.correlation_id));
        assert_eq!(decode(&bytes, row(&custom.correlation_id)).unwrap(), custom);
    }

    #[test]
    fn a_trivial_create_takes_a_few_dozen_bytes() {
        let mut context = ExecutionContext::for_write(
            "Create",
            "account",
            "account-2169",
            Some(Attributes::new()),
            None,
            Some(Entity {
                logical_name: "account".into(),
                id: "account-2169".into(),
                attributes: Attributes::new(),
            }),
        );
        context.org_id = "7".into();
        context.depth = 2;
        let json = serde_json::to_vec(&context).unwrap();
        let bytes = encode(&context, row(&context.correlation_id));
        // 45 bytes against JSON's 338: the message, the entity and the record id, and a
        // byte a field.
        assert!(bytes.len() <= 48, "{} bytes (JSON {})", bytes.len(), json.len());
        assert_eq!(decode(&json, row(&context.correlation_id)).unwrap(), context, "JSON is still read");
    }

    #[test]
    fn a_damaged_payload_is_an_error_not_a_panic() {
        let context = write_context();
        let bytes = encode(&context, row(&context.correlation_id));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], row("c")).is_err(), "cut at {cut}");
        }
        assert!(matches!(decode(&[9, 1, 2], row("c")), Err(PayloadError::UnknownForm(9))));
        let stored = Stored {
            org_id: None,
            user_id: None,
            message: "Create".into(),
            entity: "account".into(),
            record_id: None,
            stage: 40,
            synchronous: false,
            depth: None,
            correlation_id: None,
            input_parameters: vec![("x".into(), StoredValue::Decimal(1, 19))],
            target_parameter: false,
            target: None,
            pre_image: None,
            post_image: Image::None,
            shared_variables: Vec::new(),
        };
        let bad_scale = postcard::to_extend(&stored, vec![VERSION]).unwrap();
        assert!(matches!(decode(&bad_scale, row("c")), Err(PayloadError::Value(_))));
    }
}
