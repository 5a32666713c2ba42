//! The host's side of the execution context a plug-in receives, with the JSON form of
//! `sluice plugin run --input CONTEXT.json`.

use serde::{Deserialize, Serialize};

use crate::records::{Attributes, Entity};
pub use sluice_core::run::{Mode, Stage};

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
    /// The record being written (Dataverse's `Target`): the attributes a Create or
    /// Update sets; none for Delete.
    #[serde(default)]
    pub target: Option<Entity>,
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
            target: None,
            pre_image: None,
            post_image: None,
            shared_variables: Attributes::new(),
        }
    }
}

impl ExecutionContext {
    /// The context of a step triggered by a write on a record, as Dataverse hands it:
    /// the `Target` is what the caller writes (Create, Update), the pre-image the
    /// record before (Update, Delete), the post-image the record after (Create,
    /// Update). Built by this one function for the service's sync steps and jobs; the
    /// stage rules are [`ExecutionContext::for_stage`], which the local harness applies too.
    pub fn for_write(
        message: &str,
        entity: &str,
        record_id: &str,
        written: Option<Attributes>,
        pre_image: Option<Entity>,
        post_image: Option<Entity>,
    ) -> Self {
        let mut context = ExecutionContext::new(message, entity);
        context.record_id = Some(record_id.to_owned());
        context.input_parameters.insert("Target".into(), crate::records::Value::String(record_id.to_owned()));
        context.target = written.map(|attributes| Entity {
            logical_name: entity.to_owned(),
            id: record_id.to_owned(),
            attributes,
        });
        context.pre_image = pre_image;
        context.post_image = post_image;
        context
    }

    /// The same context as a step of `stage` sees it: before the operation there is no
    /// post-image yet (a context file that gives one for an early stage has it taken as
    /// the Target, if it has none).
    pub fn for_stage(mut self, stage: Stage) -> Self {
        self.stage = stage;
        if stage != Stage::PostOperation {
            let post_image = self.post_image.take();
            if self.target.is_none() && self.message != "Delete" {
                self.target = post_image;
            }
        }
        self
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
