//! Conversions between the host's record types and the generated WIT types.

use super::context::{ExecutionContext, Mode, PluginOutput, Stage};
use super::host::bindings::exports::sluice::plugin::handler;
use super::host::bindings::sluice::plugin::{context, records as wit_records, types};
use crate::records::{
    Attributes, Condition, DateTime, Decimal, Entity, EntityReference, Filter, Operator, RecordError, Value,
};

fn decimal_to_wit(d: Decimal) -> types::Decimal {
    types::Decimal { units: d.units, scale: d.scale }
}

fn decimal_from_wit(d: types::Decimal) -> Decimal {
    Decimal { units: d.units, scale: d.scale }
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

pub(crate) fn value_from_wit(value: types::Value) -> Value {
    match value {
        types::Value::Null => Value::Null,
        types::Value::String(s) => Value::String(s),
        types::Value::Integer(i) => Value::Integer(i),
        types::Value::Decimal(d) => Value::Decimal(decimal_from_wit(d)),
        types::Value::Boolean(b) => Value::Boolean(b),
        types::Value::DateTime(t) => {
            Value::DateTime(DateTime { seconds: t.seconds, nanoseconds: t.nanoseconds })
        }
        types::Value::Money(d) => Value::Money(decimal_from_wit(d)),
        types::Value::OptionSet(o) => Value::OptionSet(o),
        types::Value::EntityReference(r) => {
            Value::EntityReference(EntityReference { entity: r.entity, id: r.id, name: r.name })
        }
    }
}

pub(crate) fn attributes_to_wit(attributes: Attributes) -> Vec<types::Attribute> {
    attributes
        .into_iter()
        .map(|(name, value)| types::Attribute { name, value: value_to_wit(value) })
        .collect()
}

/// A list of named values becomes a map; when a name repeats, the last value wins.
pub(crate) fn attributes_from_wit(attributes: Vec<types::Attribute>) -> Attributes {
    attributes.into_iter().map(|a| (a.name, value_from_wit(a.value))).collect()
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
        RecordError::NotFound { .. } => wit_records::RecordError::NotFound(error.to_string()),
        RecordError::Invalid(_) | RecordError::QueryTooBroad { .. } => {
            wit_records::RecordError::Invalid(error.to_string())
        }
    }
}

pub(crate) fn filter_from_wit(filter: wit_records::Filter) -> Filter {
    Filter {
        entity: filter.entity,
        columns: filter.columns,
        conditions: filter
            .conditions
            .into_iter()
            .map(|c| Condition {
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
                value: value_from_wit(c.value),
            })
            .collect(),
        top: filter.top,
    }
}

pub(crate) fn context_to_wit(ctx: &ExecutionContext) -> context::ExecutionContext {
    context::ExecutionContext {
        org_id: ctx.org_id.clone(),
        user_id: ctx.user_id.clone(),
        message: ctx.message.clone(),
        entity: ctx.entity.clone(),
        record_id: ctx.record_id.clone(),
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
        correlation_id: ctx.correlation_id.clone(),
        input_parameters: attributes_to_wit(ctx.input_parameters.clone()),
        target: ctx.target.clone().map(entity_to_wit),
        pre_image: ctx.pre_image.clone().map(entity_to_wit),
        post_image: ctx.post_image.clone().map(entity_to_wit),
        shared_variables: attributes_to_wit(ctx.shared_variables.clone()),
    }
}

pub(crate) fn output_from_wit(output: handler::Output) -> PluginOutput {
    PluginOutput {
        output_parameters: attributes_from_wit(output.output_parameters),
        shared_variables: attributes_from_wit(output.shared_variables),
    }
}
