//! Conversions between the host's record types and the generated WIT types.

use super::context::{ExecutionContext, Mode, PluginOutput, Stage};
use super::host::bindings::exports::sluice::plugin::handler;
use super::host::bindings::sluice::plugin::{context, records as wit_records, types};
use sluice_core::records::{
    Attributes, Condition, DateTime, Decimal, Entity, EntityReference, Filter, Operator, RecordError, Value,
};

fn decimal_to_wit(d: Decimal) -> types::Decimal {
    types::Decimal { units: d.units, scale: d.scale }
}

/// A plug-in's decimal, refused past [`Decimal::MAX_SCALE`] (it could not be stored and
/// read back).
fn decimal_from_wit(d: types::Decimal) -> Result<Decimal, RecordError> {
    let decimal = Decimal { units: d.units, scale: d.scale };
    if !decimal.in_range() {
        return Err(RecordError::Invalid(format!(
            "a decimal's scale is at most {}, not {}",
            Decimal::MAX_SCALE,
            d.scale
        )));
    }
    Ok(decimal)
}

/// A plug-in's date-time, refused outside the years 0000 to 9999 or with a second or
/// more of nanoseconds (the JSON form could not write it and read it back).
fn date_time_from_wit(t: types::Datetime) -> Result<DateTime, RecordError> {
    let time = DateTime { seconds: t.seconds, nanoseconds: t.nanoseconds };
    if !time.in_range() {
        return Err(RecordError::Invalid(format!(
            "a date-time is within the years 0000 to 9999 ({} to {} seconds) with under 10^9 \
             nanoseconds, not {}s {}ns",
            DateTime::MIN_SECONDS,
            DateTime::MAX_SECONDS,
            t.seconds,
            t.nanoseconds
        )));
    }
    Ok(time)
}

pub(crate) fn value_to_wit(value: Value) -> types::Value {
    match value {
        Value::Null => types::Value::Null,
        Value::String(s) => types::Value::String(s),
        Value::Integer(i) => types::Value::Integer(i),
        Value::Decimal(d) => types::Value::Decimal(decimal_to_wit(d)),
        Value::Boolean(b) => types::Value::Boolean(b),
        Value::DateTime(t) => {
            types::Value::DateTime(types::Datetime { seconds: t.seconds, nanoseconds: t.nanoseconds })
        }
        Value::Money(d) => types::Value::Money(decimal_to_wit(d)),
        Value::OptionSet(o) => types::Value::OptionSet(o),
        Value::EntityReference(r) => {
            types::Value::EntityReference(types::EntityReference { entity: r.entity, id: r.id, name: r.name })
        }
    }
}

/// A plug-in's value as a host value; one the host could not store and read back is
/// refused (a named `invalid` record error the plug-in gets back).
pub(crate) fn value_from_wit(value: types::Value) -> Result<Value, RecordError> {
    Ok(match value {
        types::Value::Null => Value::Null,
        types::Value::String(s) => Value::String(s),
        types::Value::Integer(i) => Value::Integer(i),
        types::Value::Decimal(d) => Value::Decimal(decimal_from_wit(d)?),
        types::Value::Boolean(b) => Value::Boolean(b),
        types::Value::DateTime(t) => Value::DateTime(date_time_from_wit(t)?),
        types::Value::Money(d) => Value::Money(decimal_from_wit(d)?),
        types::Value::OptionSet(o) => Value::OptionSet(o),
        types::Value::EntityReference(r) => {
            Value::EntityReference(EntityReference { entity: r.entity, id: r.id, name: r.name })
        }
    })
}

pub(crate) fn attributes_to_wit(attributes: Attributes) -> Vec<types::Attribute> {
    attributes
        .into_iter()
        .map(|(name, value)| types::Attribute { name, value: value_to_wit(value) })
        .collect()
}

/// A list of named values becomes a map; when a name repeats, the last value wins. A
/// value out of range refuses the whole list, naming the attribute.
pub(crate) fn attributes_from_wit(attributes: Vec<types::Attribute>) -> Result<Attributes, RecordError> {
    attributes
        .into_iter()
        .map(|a| match value_from_wit(a.value) {
            Ok(value) => Ok((a.name, value)),
            Err(RecordError::Invalid(why)) => {
                Err(RecordError::Invalid(format!("attribute '{}': {why}", a.name)))
            }
            Err(other) => Err(other),
        })
        .collect()
}

pub(crate) fn entity_to_wit(entity: Entity) -> types::Entity {
    types::Entity {
        logical_name: entity.logical_name,
        id: entity.id,
        attributes: attributes_to_wit(entity.attributes),
    }
}

pub(crate) fn record_error_to_wit(error: &RecordError) -> wit_records::RecordError {
    match error {
        RecordError::TooLarge(_) => wit_records::RecordError::Invalid(error.to_string()),
        RecordError::NotFound { .. } => wit_records::RecordError::NotFound(error.to_string()),
        RecordError::Invalid(_) | RecordError::QueryTooBroad { .. } => {
            wit_records::RecordError::Invalid(error.to_string())
        }
    }
}

pub(crate) fn filter_from_wit(filter: wit_records::Filter) -> Result<Filter, RecordError> {
    Ok(Filter {
        entity: filter.entity,
        columns: filter.columns,
        conditions: filter
            .conditions
            .into_iter()
            .map(|c| {
                Ok(Condition {
                    attribute: c.attribute,
                    operator: match c.operator {
                        wit_records::Operator::Equal => Operator::Equal,
                        wit_records::Operator::NotEqual => Operator::NotEqual,
                        wit_records::Operator::GreaterThan => Operator::GreaterThan,
                        wit_records::Operator::GreaterEqual => Operator::GreaterEqual,
                        wit_records::Operator::LessThan => Operator::LessThan,
                        wit_records::Operator::LessEqual => Operator::LessEqual,
                        wit_records::Operator::IsNull => Operator::IsNull,
                        wit_records::Operator::IsNotNull => Operator::IsNotNull,
                    },
                    value: value_from_wit(c.value)?,
                })
            })
            .collect::<Result<_, RecordError>>()?,
        top: filter.top,
    })
}

/// The context as the guest receives it (taken: an execution hands its context over).
pub(crate) fn context_to_wit(ctx: ExecutionContext) -> context::ExecutionContext {
    context::ExecutionContext {
        org_id: ctx.org_id,
        user_id: ctx.user_id,
        message: ctx.message,
        entity: ctx.entity,
        record_id: ctx.record_id,
        stage: match ctx.stage {
            Stage::PreValidation => context::Stage::PreValidation,
            Stage::PreOperation => context::Stage::PreOperation,
            Stage::PostOperation => context::Stage::PostOperation,
        },
        mode: match ctx.mode {
            Mode::Synchronous => context::Mode::Synchronous,
            Mode::Asynchronous => context::Mode::Asynchronous,
        },
        depth: ctx.depth,
        correlation_id: ctx.correlation_id,
        input_parameters: attributes_to_wit(ctx.input_parameters),
        target: ctx.target.map(entity_to_wit),
        pre_image: ctx.pre_image.map(entity_to_wit),
        post_image: ctx.post_image.map(entity_to_wit),
        shared_variables: attributes_to_wit(ctx.shared_variables),
    }
}

/// A plug-in's output; a value out of range refuses it.
pub(crate) fn output_from_wit(output: handler::Output) -> Result<PluginOutput, RecordError> {
    Ok(PluginOutput {
        output_parameters: attributes_from_wit(output.output_parameters)?,
        shared_variables: attributes_from_wit(output.shared_variables)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value a plug-in can send is refused at the boundary or stored in a form
    /// that reads back the same: nothing out of range reaches the store.
    #[test]
    fn values_from_plugins_are_in_range_or_refused() {
        let decimal = |units, scale| types::Decimal { units, scale };
        let time = |seconds, nanoseconds| types::Datetime { seconds, nanoseconds };
        let hostile = [
            types::Value::Decimal(decimal(1, 19)),
            types::Value::Decimal(decimal(-5, 255)),
            types::Value::Money(decimal(i64::MAX, 200)),
            types::Value::DateTime(time(i64::MAX, 0)),
            types::Value::DateTime(time(i64::MIN, 0)),
            types::Value::DateTime(time(253_402_300_800, 0)),
            types::Value::DateTime(time(-62_167_219_201, 0)),
            types::Value::DateTime(time(0, 1_000_000_000)),
            types::Value::DateTime(time(0, u32::MAX)),
        ];
        let in_range = [
            types::Value::Decimal(decimal(i64::MIN, 18)),
            types::Value::DateTime(time(253_402_300_799, 999_999_999)),
            types::Value::DateTime(time(-62_167_219_200, 0)),
        ];
        for value in in_range {
            let stored = attributes_from_wit(vec![types::Attribute { name: "x".into(), value }]).unwrap();
            let json = serde_json::to_string(&stored).unwrap();
            assert_eq!(serde_json::from_str::<Attributes>(&json).unwrap(), stored, "{json}");
        }
        for value in hostile {
            let attributes = vec![types::Attribute { name: "x".into(), value }];
            match attributes_from_wit(attributes) {
                Err(RecordError::Invalid(why)) => assert!(why.starts_with("attribute 'x': a "), "{why}"),
                Err(other) => panic!("not an invalid-record error: {other}"),
                Ok(stored) => {
                    let json = serde_json::to_string(&stored).unwrap();
                    let read: Result<Attributes, _> = serde_json::from_str(&json);
                    assert!(read.is_ok_and(|read| read == stored), "{json} does not read back");
                }
            }
        }
    }
}
