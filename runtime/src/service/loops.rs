//! Infinite-loop detection, as Dataverse does it: by depth within a correlation, and by
//! how often a workflow starts on one record.

use std::collections::{HashMap, VecDeque};

use crate::jobs::{DefinitionId, Millis};

/// The deepest a job may be within an hour of its correlation's start.
pub const MAX_DEPTH: u32 = 8;
/// The most times a workflow may start on one record within an hour.
pub const MAX_WORKFLOW_RUNS_PER_RECORD: usize = 16;
/// How far back the rules look.
pub const HOUR: Millis = 60 * 60 * 1000;

pub const DEPTH_ERROR_CODE: &str = "infinite-loop";
pub const WORKFLOW_LOOP_CODE: &str = "workflow-loop";
pub const WORKFLOW_LOOP_MESSAGE: &str = "This workflow job was canceled because the workflow that started it \
    included an infinite loop. Correct the workflow logic and try again.";

pub fn depth_message(depth: u32) -> String {
    format!(
        "This job was stopped at depth {depth}: an event fired by a plug-in fired another, more than \
         {MAX_DEPTH} levels deep within an hour of the first, which indicates an infinite loop."
    )
}

#[derive(Default)]
pub struct LoopDetector {
    /// When each correlation started.
    correlations: HashMap<String, Millis>,
    /// Recent starts of a workflow on a record.
    workflow_runs: HashMap<(DefinitionId, String, String), VecDeque<Millis>>,
}

impl LoopDetector {
    /// Whether a job at `depth` in `correlation` is a loop.
    pub fn too_deep(&mut self, correlation: &str, depth: u32, now: Millis) -> bool {
        let started = *self.correlations.entry(correlation.to_owned()).or_insert(now);
        depth > MAX_DEPTH && now - started < HOUR
    }

    /// Records one more start of `workflow` on the record; whether it is one too many.
    pub fn workflow_loops(&mut self, workflow: DefinitionId, record: (&str, &str), now: Millis) -> bool {
        let runs =
            self.workflow_runs.entry((workflow, record.0.to_owned(), record.1.to_owned())).or_default();
        while runs.front().is_some_and(|at| now - at >= HOUR) {
            runs.pop_front();
        }
        runs.push_back(now);
        runs.len() > MAX_WORKFLOW_RUNS_PER_RECORD
    }
}

impl LoopDetector {
    /// Forgets what was counted of the workflows `of` selects (an org's, before its
    /// counts are read again from the store).
    pub fn forget_workflows(&mut self, of: impl Fn(DefinitionId) -> bool) {
        self.workflow_runs.retain(|(workflow, ..), _| !of(*workflow));
    }

    /// Forgets correlations and workflow runs older than the hour the rules look at, so
    /// a long-running node does not keep every correlation it ever saw.
    pub fn prune(&mut self, now: Millis) {
        self.correlations.retain(|_, started| now - *started < HOUR);
        self.workflow_runs.retain(|_, runs| runs.back().is_some_and(|at| now - at < HOUR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_past_eight_within_the_hour_is_a_loop() {
        let mut loops = LoopDetector::default();
        assert!(!loops.too_deep("c", 1, 0));
        assert!(!loops.too_deep("c", 8, 1000));
        assert!(loops.too_deep("c", 9, 2000));
        assert!(!loops.too_deep("c", 9, HOUR), "an hour after the correlation began, depth is allowed");
        loops.prune(2 * HOUR);
        assert!(loops.correlations.is_empty(), "old correlations are forgotten");
    }

    #[test]
    fn counts_read_again_replace_the_ones_kept() {
        let mut loops = LoopDetector::default();
        let (ours, theirs) = (DefinitionId(1), DefinitionId(2));
        for n in 0..16 {
            loops.workflow_loops(ours, ("account", "a1"), n);
            loops.workflow_loops(theirs, ("account", "a1"), n);
        }
        loops.forget_workflows(|d| d == ours);
        assert!(!loops.workflow_loops(ours, ("account", "a1"), 20), "counted afresh");
        assert!(loops.workflow_loops(theirs, ("account", "a1"), 20), "another org's are kept");
    }

    #[test]
    fn the_seventeenth_run_of_a_workflow_on_a_record_within_the_hour_is_a_loop() {
        let mut loops = LoopDetector::default();
        let flow = DefinitionId(1);
        for n in 0..16 {
            assert!(!loops.workflow_loops(flow, ("account", "a1"), n));
        }
        assert!(loops.workflow_loops(flow, ("account", "a1"), 17));
        assert!(!loops.workflow_loops(flow, ("account", "a2"), 17), "another record is counted apart");
        assert!(!loops.workflow_loops(flow, ("account", "a1"), 17 + HOUR), "old runs age out");
    }
}
