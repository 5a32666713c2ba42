//! Runaway detection: which definitions create jobs abnormally fast, by a rule anyone
//! can check against the figures it reports. Pure logic on the times it is given.
//!
//! The rule, per definition (its parameters are [`RunawayRule`]'s, defaults here):
//! - The jobs it creates are counted in buckets of about 10 s. Its *recent rate* is the
//!   mean of the last two buckets (20 s); its *baseline* the mean rate of the buckets
//!   before those (an exponential mean over about 5 minutes), frozen while it is flagged.
//! - It is **flagged** when its recent rate is at least 20 jobs/s *and* at least 10× its
//!   baseline, *and* its backlog (jobs queued) is at least 1,000 and larger than 20 s
//!   before. So a surge that the lane keeps up with is not a runaway, nor is a
//!   definition whose normal rate is high: only one creating far more than it usually
//!   does, faster than its jobs drain. A flag comes within 30 s of the onset (the two
//!   buckets after it).
//! - It is **released** once its recent rate has stayed below half the rate that
//!   tripped it (half of max(20, 10 × baseline)) for three buckets in a row (30 s).
//! - Cleared by hand (the tenant or the operator), its recent rate becomes its baseline:
//!   the new rate is accepted as normal, and only a further surge flags it again.
//!
//! What a flag does (the service's part): the definition is throttled to a quarter of
//! its org's threads on the lane (`Scheduler::set_throttled`), shown on the dashboard and
//! in the API with the figures below, counted in metrics, logged, and sent to the org's
//! notification URL.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::jobs::{DefinitionId, Millis};

/// The runaway rule's parameters (`[runaway]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RunawayRule {
    /// Length of a counting bucket, in seconds. Default 10.
    pub bucket_seconds: u32,
    /// How many times its baseline the recent rate must be. Default 10.
    pub surge: f64,
    /// The recent rate below which nothing is flagged, in jobs/s. Default 20.
    pub min_rate: f64,
    /// The backlog below which nothing is flagged, in jobs. Default 1,000.
    pub min_backlog: u64,
    /// Buckets in a row below half the tripping rate before a release. Default 3.
    pub calm_buckets: u32,
    /// Buckets the baseline's exponential mean spans. Default 30 (5 minutes).
    pub baseline_buckets: u32,
}

impl Default for RunawayRule {
    fn default() -> Self {
        RunawayRule {
            bucket_seconds: 10,
            surge: 10.0,
            min_rate: 20.0,
            min_backlog: 1_000,
            calm_buckets: 3,
            baseline_buckets: 30,
        }
    }
}

/// Why and since when a definition is flagged, with the figures that tripped the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunawayFlag {
    /// When it was flagged and throttled (ms since the epoch).
    pub since: Millis,
    /// Its recent rate then, in jobs created per second.
    pub rate: f64,
    /// Its baseline rate then, in jobs per second.
    pub baseline: f64,
    /// Jobs it had queued then.
    pub backlog: u64,
    /// How much that backlog had grown in the 20 s before.
    pub growth: i64,
}

impl RunawayFlag {
    /// The flag in words, as the dashboard, the log and the API show it.
    pub fn reason(&self) -> String {
        let usual = if self.baseline < 0.05 {
            "where it created almost none before".to_owned()
        } else {
            format!("against its usual {:.1}/s ({:.0}×)", self.baseline, self.rate / self.baseline)
        };
        format!("creating {:.0} jobs/s {usual}; {} queued, +{} in 20 s", self.rate, self.backlog, self.growth)
    }
}

/// A definition flagged or released by a [`Detector::tick`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Flagged(DefinitionId, RunawayFlag),
    /// Released because it calmed down; the flag it had.
    Released(DefinitionId, RunawayFlag),
}

#[derive(Debug, Default)]
struct Track {
    /// Jobs created since the open bucket began.
    open: u64,
    /// The rates of the last full buckets (at most two), oldest first.
    recent: VecDeque<f64>,
    baseline: Option<f64>,
    /// The backlog at the end of the last buckets (at most three), oldest first.
    backlogs: VecDeque<u64>,
    flag: Option<RunawayFlag>,
    /// Buckets in a row a flagged definition has been calm.
    calm: u32,
}

impl Track {
    fn recent_rate(&self) -> f64 {
        if self.recent.is_empty() { 0.0 } else { self.recent.iter().sum::<f64>() / self.recent.len() as f64 }
    }
}

/// The rule applied to every definition that creates jobs.
#[derive(Debug)]
pub struct Detector {
    rule: RunawayRule,
    /// When the open bucket began (`None` before the first tick).
    bucket_start: Option<Millis>,
    tracks: HashMap<DefinitionId, Track>,
}

impl Detector {
    pub fn new(rule: RunawayRule) -> Self {
        Detector { rule, bucket_start: None, tracks: HashMap::new() }
    }

    /// `n` jobs of `definition` were created.
    pub fn created(&mut self, definition: DefinitionId, n: u64) {
        self.tracks.entry(definition).or_default().open += n;
    }

    /// The flag a definition has, if it is flagged.
    pub fn flag(&self, definition: DefinitionId) -> Option<&RunawayFlag> {
        self.tracks.get(&definition)?.flag.as_ref()
    }

    /// Clears a flag by hand: the definition's recent rate becomes its baseline.
    /// Returns the flag it had.
    pub fn clear(&mut self, definition: DefinitionId) -> Option<RunawayFlag> {
        let track = self.tracks.get_mut(&definition)?;
        let flag = track.flag.take()?;
        track.baseline = Some(track.baseline.unwrap_or(0.0).max(track.recent_rate()));
        track.calm = 0;
        Some(flag)
    }

    /// Takes a flag kept from before (a restart, or the node that held the org before):
    /// the definition is flagged again, against the baseline it was flagged at, until the
    /// rule releases it or a hand clears it.
    pub fn restore(&mut self, definition: DefinitionId, flag: RunawayFlag) {
        let track = self.tracks.entry(definition).or_default();
        track.baseline = Some(flag.baseline);
        track.calm = 0;
        track.flag = Some(flag);
    }

    /// Forgets a deleted definition (or one of an org this node no longer holds).
    pub fn forget(&mut self, definition: DefinitionId) {
        self.tracks.remove(&definition);
    }

    /// Closes the open bucket if it is due at `now`, with each definition's queued jobs
    /// (`backlog`), and applies the rule; returns the definitions flagged and released.
    pub fn tick(&mut self, now: Millis, backlog: &HashMap<DefinitionId, u64>) -> Vec<Change> {
        let bucket = Millis::from(self.rule.bucket_seconds.max(1)) * 1000;
        let Some(start) = self.bucket_start else {
            self.bucket_start = Some(now);
            return Vec::new();
        };
        if now - start < bucket {
            return Vec::new();
        }
        self.bucket_start = Some(now);
        // A late tick (an idle driver) closes one longer bucket: rates stay per second.
        let seconds = (now - start) as f64 / 1000.0;
        for definition in backlog.keys() {
            self.tracks.entry(*definition).or_default();
        }
        let rule = self.rule;
        let mut changes = Vec::new();
        for (definition, track) in &mut self.tracks {
            let queued = backlog.get(definition).copied().unwrap_or(0);
            track.recent.push_back(std::mem::take(&mut track.open) as f64 / seconds);
            if track.recent.len() > 2 {
                let old = track.recent.pop_front().expect("three rates");
                if track.flag.is_none() {
                    let alpha = 1.0 / f64::from(rule.baseline_buckets.max(1));
                    track.baseline = Some(match track.baseline {
                        Some(b) => b + (old - b) * alpha,
                        None => old,
                    });
                }
            }
            let growth = track.backlogs.front().map_or(queued as i64, |then| queued as i64 - *then as i64);
            track.backlogs.push_back(queued);
            if track.backlogs.len() > 2 {
                track.backlogs.pop_front();
            }
            let rate = track.recent_rate();
            match &track.flag {
                None => {
                    let baseline = track.baseline.unwrap_or(0.0);
                    let trips = rule.min_rate.max(rule.surge * baseline);
                    if rate >= trips && queued >= rule.min_backlog && growth > 0 {
                        let flag = RunawayFlag { since: now, rate, baseline, backlog: queued, growth };
                        track.flag = Some(flag.clone());
                        track.calm = 0;
                        changes.push(Change::Flagged(*definition, flag));
                    }
                }
                Some(flag) => {
                    let trips = rule.min_rate.max(rule.surge * flag.baseline);
                    track.calm = if rate < trips / 2.0 { track.calm + 1 } else { 0 };
                    if track.calm >= rule.calm_buckets {
                        let flag = track.flag.take().expect("flagged");
                        track.calm = 0;
                        changes.push(Change::Released(*definition, flag));
                    }
                }
            }
        }
        // Definitions with nothing going on are forgotten (their baseline is ~0 anyway).
        self.tracks.retain(|d, t| {
            t.flag.is_some()
                || t.open > 0
                || backlog.contains_key(d)
                || t.recent.iter().any(|r| *r > 0.0)
                || t.baseline.is_some_and(|b| b >= 0.01)
        });
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: DefinitionId = DefinitionId(7);
    const SECOND: Millis = 1_000;

    /// Drives one definition second by second: `rate` jobs/s created, `backlog` queued.
    struct Run {
        detector: Detector,
        now: Millis,
        changes: Vec<(Millis, Change)>,
    }

    impl Run {
        fn new() -> Self {
            let mut detector = Detector::new(RunawayRule::default());
            detector.tick(0, &HashMap::new());
            Run { detector, now: 0, changes: Vec::new() }
        }

        fn seconds(&mut self, seconds: i64, rate: u64, backlog: impl Fn(i64) -> u64) {
            for _ in 0..seconds {
                self.now += SECOND;
                self.detector.created(FLOW, rate);
                let queued = HashMap::from([(FLOW, backlog(self.now))]);
                for change in self.detector.tick(self.now, &queued) {
                    self.changes.push((self.now, change));
                }
            }
        }
    }

    #[test]
    fn a_definition_going_from_1_to_1000_jobs_per_second_is_flagged_within_a_minute() {
        let mut run = Run::new();
        // Ten minutes at 1 job/s, drained as it comes.
        run.seconds(600, 1, |_| 0);
        assert!(run.changes.is_empty());
        // Then 1,000/s, which the lane cannot drain: the backlog grows 900/s.
        let onset = run.now;
        run.seconds(60, 1_000, |now| ((now - onset) / SECOND) as u64 * 900);
        let (at, change) = run.changes.first().expect("flagged");
        let Change::Flagged(definition, flag) = change else { panic!("{change:?}") };
        assert_eq!(*definition, FLOW);
        assert!(*at - onset <= 30 * SECOND, "flagged {} s after the onset", (*at - onset) / SECOND);
        // The first bucket of the surge already trips it: the mean of 1 and 1,000 a second.
        assert!(flag.rate >= 500.0 && flag.baseline < 1.5, "{flag:?}");
        assert!(flag.backlog >= 1_000 && flag.growth > 0, "{flag:?}");
        assert!(
            flag.reason().starts_with("creating 500 jobs/s against its usual 1.0/s"),
            "{}",
            flag.reason()
        );
        assert_eq!(run.detector.flag(FLOW), Some(flag));
    }

    #[test]
    fn a_steady_high_rate_definition_is_not_flagged_even_when_its_backlog_grows() {
        let mut run = Run::new();
        // 1,000 jobs/s for ten minutes, the lane keeping up.
        run.seconds(600, 1_000, |_| 0);
        // The same rate, the lane falling behind: its backlog grows, its rate is normal.
        let slowed = run.now;
        run.seconds(300, 1_000, |now| ((now - slowed) / SECOND) as u64 * 300);
        assert!(run.changes.is_empty(), "{:?}", run.changes);
    }

    #[test]
    fn a_surge_the_lane_keeps_up_with_is_not_a_runaway() {
        let mut run = Run::new();
        run.seconds(600, 1, |_| 0);
        run.seconds(120, 1_000, |_| 50);
        assert!(run.changes.is_empty(), "{:?}", run.changes);
    }

    #[test]
    fn a_flagged_definition_that_calms_down_is_released() {
        let mut run = Run::new();
        run.seconds(600, 1, |_| 0);
        let onset = run.now;
        run.seconds(60, 1_000, |now| ((now - onset) / SECOND) as u64 * 900);
        assert_eq!(run.changes.len(), 1);
        // Still surging: stays flagged, however long (its baseline does not learn it).
        run.seconds(600, 1_000, |now| ((now - onset) / SECOND) as u64 * 900);
        assert_eq!(run.changes.len(), 1, "{:?}", run.changes);
        // Back to 2/s, the backlog draining.
        let calm = run.now;
        run.seconds(60, 2, |now| 100_000u64.saturating_sub(((now - calm) / SECOND) as u64 * 100));
        let (at, change) = run.changes.last().unwrap();
        assert!(matches!(change, Change::Released(FLOW, _)), "{change:?}");
        assert!(*at - calm <= 60 * SECOND);
        assert_eq!(run.detector.flag(FLOW), None);
    }

    #[test]
    fn a_flag_cleared_by_hand_accepts_the_new_rate_until_a_further_surge() {
        let mut run = Run::new();
        run.seconds(600, 1, |_| 0);
        let onset = run.now;
        run.seconds(60, 1_000, |now| ((now - onset) / SECOND) as u64 * 900);
        assert!(run.detector.clear(FLOW).is_some());
        run.seconds(300, 1_000, |now| ((now - onset) / SECOND) as u64 * 900);
        assert_eq!(run.changes.len(), 1, "1,000/s is its normal now: {:?}", run.changes);
        run.seconds(60, 20_000, |now| ((now - onset) / SECOND) as u64 * 19_000);
        assert!(matches!(run.changes.last(), Some((_, Change::Flagged(..)))), "a further surge flags it");
    }
}
