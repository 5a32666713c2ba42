//! Record queries: a conjunction of attribute conditions, evaluated the same way by
//! every store (the durable store may push them down, but must agree with [`Filter::matches`]).

use serde::{Deserialize, Serialize};

use super::{Attributes, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    Equal,
    NotEqual,
    GreaterThan,
    GreaterEqual,
    LessThan,
    LessEqual,
    IsNull,
    IsNotNull,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub attribute: String,
    pub operator: Operator,
    #[serde(default = "null")]
    pub value: Value,
}

fn null() -> Value {
    Value::Null
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub entity: String,
    /// The attributes to return; empty means all.
    #[serde(default)]
    pub columns: Vec<String>,
    /// All must hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// At most this many records (stores also cap it).
    #[serde(default)]
    pub top: Option<u32>,
}

impl Condition {
    pub fn matches(&self, attributes: &Attributes) -> bool {
        use std::cmp::Ordering::*;
        let actual = attributes.get(&self.attribute).unwrap_or(&Value::Null);
        let is_null = matches!(actual, Value::Null);
        let order = || actual.partial_cmp_value(&self.value);
        match self.operator {
            Operator::IsNull => is_null,
            Operator::IsNotNull => !is_null,
            Operator::Equal => order() == Some(Equal),
            Operator::NotEqual => order() != Some(Equal),
            Operator::GreaterThan => order() == Some(Greater),
            Operator::GreaterEqual => matches!(order(), Some(Greater | Equal)),
            Operator::LessThan => order() == Some(Less),
            Operator::LessEqual => matches!(order(), Some(Less | Equal)),
        }
    }
}

impl Filter {
    pub fn matches(&self, attributes: &Attributes) -> bool {
        self.conditions.iter().all(|c| c.matches(attributes))
    }

    /// Keeps only the requested columns (all when none are named).
    pub fn project(&self, attributes: &Attributes) -> Attributes {
        project(attributes, &self.columns)
    }
}

/// Keeps only `columns` of `attributes`; empty `columns` keeps all.
pub fn project(attributes: &Attributes, columns: &[String]) -> Attributes {
    if columns.is_empty() {
        return attributes.clone();
    }
    columns.iter().filter_map(|c| attributes.get(c).map(|v| (c.clone(), v.clone()))).collect()
}
