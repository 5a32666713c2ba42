//! How much a tenant may store in one object: names, attributes, workflow steps,
//! filtering attributes, custom-API parameters. The numbers live here and nowhere else;
//! each is checked where the input enters (the API for definitions and tokens, the
//! record overlay for the records events and plug-ins write) before anything is
//! stored, and refused with [`TooLarge`], which names the limit (the API answers 422
//! `too-large`). The execution limits of a plug-in are in `engine::limits`.

/// Names: organisations, plug-ins, steps, workflows, custom APIs and their parameters,
/// token labels, entity and attribute names. Default 256 bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 256;

/// Attributes in one record (after an update is merged), one event, or one set of
/// parameters. Default 256.
pub const MAX_ATTRIBUTES: usize = 256;

/// One attribute value: a string, or an entity reference's entity, id and name
/// together. Default 64 KiB (65,536 bytes).
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// Steps in one workflow (each version). Default 64.
pub const MAX_WORKFLOW_STEPS: usize = 64;

/// Filtering attributes of one step or workflow trigger. Default 256, as many as a
/// record holds.
pub const MAX_FILTERING_ATTRIBUTES: usize = MAX_ATTRIBUTES;

/// Declared parameters of one custom API. Default 64.
pub const MAX_API_PARAMETERS: usize = 64;

/// Input over one of the limits above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {size} {unit}, over the limit of {limit}")]
pub struct TooLarge {
    /// What was too large, e.g. `a step's name`.
    pub what: String,
    pub size: usize,
    pub limit: usize,
    /// `bytes` or the counted things, e.g. `steps`.
    pub unit: &'static str,
}

/// Checks that `size` of `unit`s is at most `limit`.
pub fn check(what: impl Into<String>, size: usize, limit: usize, unit: &'static str) -> Result<(), TooLarge> {
    if size > limit {
        return Err(TooLarge { what: what.into(), size, limit, unit });
    }
    Ok(())
}

/// Checks a name against [`MAX_NAME_BYTES`].
pub fn name(what: impl Into<String>, name: &str) -> Result<(), TooLarge> {
    check(what, name.len(), MAX_NAME_BYTES, "bytes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_names_the_size_and_the_limit() {
        assert!(super::name("a step's name", &"n".repeat(256)).is_ok());
        let refused = super::name("a step's name", &"n".repeat(257)).unwrap_err();
        assert_eq!(refused.to_string(), "a step's name: 257 bytes, over the limit of 256");
        let refused = super::check("a workflow", 65, super::MAX_WORKFLOW_STEPS, "steps").unwrap_err();
        assert_eq!(refused.to_string(), "a workflow: 65 steps, over the limit of 64");
    }
}
