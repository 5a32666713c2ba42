//! Conveniences on the generated types, so plug-in code reads like business logic.

use crate::{Attribute, Context, Entity, Error, Output, Stage, Value};

impl Error {
    /// A business error: the job fails and is not retried.
    pub fn business(message: impl Into<String>) -> Self {
        Error::Business(message.into())
    }

    /// A transient error: the job is retried, then postponed if it keeps failing.
    pub fn transient(message: impl Into<String>) -> Self {
        Error::Transient(message.into())
    }
}

impl Output {
    pub fn new() -> Self {
        Output { output_parameters: Vec::new(), shared_variables: Vec::new() }
    }

    /// Adds an output parameter.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.output_parameters.push(Attribute { name: name.into(), value: value.into() });
        self
    }

    /// Adds a shared variable for later steps.
    pub fn share(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.shared_variables.push(Attribute { name: name.into(), value: value.into() });
        self
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

fn find<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Value> {
    attributes.iter().find(|a| a.name == name).map(|a| &a.value)
}

impl Context {
    /// An input parameter by name.
    pub fn input(&self, name: &str) -> Option<&Value> {
        find(&self.input_parameters, name)
    }

    /// A shared variable by name.
    pub fn shared(&self, name: &str) -> Option<&Value> {
        find(&self.shared_variables, name)
    }

    /// The record the step is about, as Dataverse hands it: before the operation
    /// (pre-validation, pre-operation) the Target, the attributes being written; after
    /// it, the post-image (the whole record), or the Target when there is none.
    pub fn target(&self) -> Option<&Entity> {
        match self.stage {
            Stage::PreValidation | Stage::PreOperation => self.target.as_ref(),
            Stage::PostOperation => self.post_image.as_ref().or(self.target.as_ref()),
        }
    }
}

impl Entity {
    pub fn get(&self, name: &str) -> Option<&Value> {
        find(&self.attributes, name)
    }

    /// A string attribute, if present and a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// An integer attribute, if present and an integer.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_integer)
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A decimal or money amount as an `f64` approximation, for display and arithmetic
    /// where exactness does not matter.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(i) => Some(*i as f64),
            Value::Decimal(d) | Value::Money(d) => Some(d.units as f64 / 10f64.powi(d.scale as i32)),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}

impl<V: Into<Value>> From<(&str, V)> for Attribute {
    fn from((name, value): (&str, V)) -> Self {
        Attribute { name: name.into(), value: value.into() }
    }
}
