//! The host's side of the execution context a plug-in receives, with the JSON form of
//! `sluice plugin run --input CONTEXT.json`.

use serde::{Deserialize, Serialize};

use crate::records::{Attributes, Entity};

/// When a step runs relative to the core operation; Dataverse numbers them 10, 20, 40.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    PreValidation,
    PreOperation,
    #[default]
    PostOperation,
}

impl Stage {
    pub fn number(self) -> u32 {
        match self {
            Stage::PreValidation => 10,
            Stage::PreOperation => 20,
            Stage::PostOperation => 40,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Synchronous,
    #[default]
    Asynchronous,
}

/// What a plug-in is told about the event it runs for. Only `message` and `entity` are
/// required in JSON; the rest default (org `local`, depth 1, a fresh correlation id, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionContext {
    #[serde(default = "local")]
    pub org_id: String,
    #[serde(default = "local")]
    pub user_id: String,
    /// `Create`, `Update`, `Delete` or a custom message.
    pub message: String,
    /// The primary entity's logical name.
    pub entity: String,
    #[serde(default)]
    pub record_id: Option<String>,
    #[serde(default)]
    pub stage: Stage,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "one")]
    pub depth: u32,
    #[serde(default = "new_correlation_id")]
    pub correlation_id: String,
    #[serde(default)]
    pub input_parameters: Attributes,
    #[serde(default)]
    pub pre_image: Option<Entity>,
    #[serde(default)]
    pub post_image: Option<Entity>,
    #[serde(default)]
    pub shared_variables: Attributes,
}

fn local() -> String {
    "local".into()
}

fn one() -> u32 {
    1
}

fn new_correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl ExecutionContext {
    /// A context for `message` on `entity` with every other field at its default.
    pub fn new(message: &str, entity: &str) -> Self {
        ExecutionContext {
            org_id: local(),
            user_id: local(),
            message: message.into(),
            entity: entity.into(),
            record_id: None,
            stage: Stage::default(),
            mode: Mode::default(),
            depth: 1,
            correlation_id: new_correlation_id(),
            input_parameters: Attributes::new(),
            pre_image: None,
            post_image: None,
            shared_variables: Attributes::new(),
        }
    }
}

/// What a successful execution returns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PluginOutput {
    pub output_parameters: Attributes,
    pub shared_variables: Attributes,
}

impl PluginOutput {
    /// The size counted against the output limit: names plus values.
    pub fn encoded_len(&self) -> u64 {
        self.output_parameters
            .iter()
            .chain(&self.shared_variables)
            .map(|(name, value)| (name.len() + value.encoded_len()) as u64)
            .sum()
    }
}
