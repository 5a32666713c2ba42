//! The host's side of the execution context a plug-in receives, with the JSON form of
//! `sluice plugin run --input CONTEXT.json`.

use serde::{Deserialize, Serialize};

use sluice_core::records::{Attributes, Entity};
pub use sluice_core::run::{Mode, Stage};

/// What a plug-in is told about the event it runs for. Only `message` and `entity` are
/// required in JSON; the rest default (org `local`, depth 1, a fresh correlation id, ...).
/// Fields at their default are left out when it is written: a job's payload is this
/// JSON, one per waiting job, and the defaults were a quarter of a typical one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionContext {
    #[serde(default = "local")]
    pub org_id: String,
    #[serde(default = "local", skip_serializing_if = "is_local")]
    pub user_id: String,
    /// `Create`, `Update`, `Delete` or a custom message.
    pub message: String,
    /// The primary entity's logical name.
    pub entity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: Mode,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub depth: u32,
    #[serde(default = "new_correlation_id")]
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub input_parameters: Attributes,
    /// The record being written (Dataverse's `Target`): the attributes a Create or
    /// Update sets; none for Delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_image: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_image: Option<Entity>,
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub shared_variables: Attributes,
}

fn local() -> String {
    "local".into()
}

fn one() -> u32 {
    1
}

fn is_local(id: &str) -> bool {
    id == "local"
}

fn is_one(depth: &u32) -> bool {
    *depth == 1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn new_correlation_id() -> String {
    sluice_core::new_id()
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
        context
            .input_parameters
            .insert("Target".into(), sluice_core::records::Value::String(record_id.to_owned()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::records::Value;

    /// A job's payload leaves out what is at its default and reads back the same.
    #[test]
    fn a_context_is_written_without_its_defaults_and_reads_back_whole() {
        let mut context = ExecutionContext::new("Create", "account");
        context.correlation_id = "c".into();
        let text = serde_json::to_string(&context).unwrap();
        assert_eq!(text, r#"{"org_id":"local","message":"Create","entity":"account","correlation_id":"c"}"#);
        assert_eq!(serde_json::from_str::<ExecutionContext>(&text).unwrap(), context);

        let mut full = context.clone().for_stage(Stage::PreOperation);
        full.user_id = "u".into();
        full.mode = Mode::Synchronous;
        full.depth = 2;
        full.record_id = Some("a1".into());
        full.input_parameters.insert("p".into(), Value::from("v"));
        full.shared_variables.insert("s".into(), Value::Integer(1));
        full.pre_image =
            Some(Entity { logical_name: "account".into(), id: "a1".into(), attributes: Attributes::new() });
        let text = serde_json::to_string(&full).unwrap();
        for field in [
            "user_id",
            "stage",
            "mode",
            "depth",
            "record_id",
            "input_parameters",
            "shared_variables",
            "pre_image",
        ] {
            assert!(text.contains(&format!("\"{field}\"")), "{field} missing from {text}");
        }
        assert_eq!(serde_json::from_str::<ExecutionContext>(&text).unwrap(), full);
    }
}
