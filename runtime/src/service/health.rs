//! Platform health, as the dashboard shows it: per org and lane the backlog by status,
//! the caps and how close the org is to them, exceptions in the current exception
//! window; throughput and backlog over time (sampled by the driver every second, ten
//! minutes kept); and the definitions that hurt the platform most, a runaway flagged.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::{Notice, Result, RunawayFlag, Service, State};
use crate::jobs::{DefinitionId, Lane, MINUTE, Millis, OrgId};

/// How often the driver samples, and how many samples are kept.
pub const SAMPLE_EVERY: Millis = 1_000;
const SAMPLES_KEPT: usize = 600;
/// A definition with at least this many queued jobs, still growing over the last
/// minute, is flagged as a runaway.
pub const RUNAWAY_BACKLOG: u64 = 100;

/// One sample of the platform.
#[derive(Debug, Clone, Default)]
pub(super) struct Sample {
    at: Millis,
    /// Per org: jobs finished so far (cumulative) and queued now.
    orgs: HashMap<OrgId, (u64, u64)>,
    /// Queued jobs per definition.
    definitions: HashMap<DefinitionId, u64>,
}

/// What the service counts between samples.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Jobs that reached a terminal status, per org (cumulative).
    pub finished: HashMap<OrgId, u64>,
    /// Per definition: executions, failed executions (exceptions and business errors),
    /// fuel used.
    pub definitions: HashMap<DefinitionId, DefinitionCounters>,
    /// When each org and lane's recent exceptions happened.
    pub exceptions: HashMap<(OrgId, Lane), VecDeque<Millis>>,
    pub samples: VecDeque<Sample>,
    pub last_sample: Millis,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DefinitionCounters {
    pub runs: u64,
    pub failures: u64,
    pub fuel: u64,
}

/// One org's health.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrgHealth {
    pub org: u32,
    pub name: String,
    pub lanes: Vec<LaneView>,
    /// Sample times (ms since the epoch), jobs finished per second, jobs queued.
    pub series: Series,
    /// The definitions that cost the platform most, worst first (at most 10).
    pub definitions: Vec<DefinitionHealth>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneView {
    #[serde(flatten)]
    pub health: super::LaneHealth,
    /// Exceptions within the current exception window (D minutes).
    pub exceptions_in_window: u64,
    /// Postponed until a time.
    pub postponed: u64,
    /// Suspended (postponed, forever or not, and paused).
    pub suspended: u64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Series {
    pub at: Vec<Millis>,
    pub throughput: Vec<f64>,
    pub backlog: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DefinitionHealth {
    pub id: u64,
    pub name: String,
    pub kind: &'static str,
    pub active: bool,
    /// Jobs queued now.
    pub backlog: u64,
    /// Change of the backlog over the last minute.
    pub growth: i64,
    pub runs: u64,
    pub failures: u64,
    pub fuel_used: u64,
    /// Why it is flagged (a runaway, or failing), if it is.
    pub flag: Option<String>,
    /// Flagged as a runaway and throttled: since when, and the figures that tripped the
    /// rule.
    pub runaway: Option<RunawayFlag>,
}

impl Counters {
    /// Remembers an exception, forgetting those older than any window could count.
    pub fn exception(&mut self, org: OrgId, lane: Lane, now: Millis, window: Millis) {
        let times = self.exceptions.entry((org, lane)).or_default();
        times.push_back(now);
        while times.front().is_some_and(|t| *t < now - window) {
            times.pop_front();
        }
    }
}

impl Service {
    /// Takes a sample if a second has passed since the last one (called by the driver).
    pub(super) fn sample_if_due(&self) {
        let now = self.now();
        let mut state = self.state();
        if now - state.counters.last_sample < SAMPLE_EVERY {
            return;
        }
        state.counters.last_sample = now;
        let sample = sample(&state, now);
        let changes = state.runaways.tick(now, &sample.definitions);
        let mut notices = Vec::new();
        for change in changes {
            let (definition, flag, throttled) = match change {
                super::runaway::Change::Flagged(d, flag) => (d, flag, true),
                super::runaway::Change::Released(d, flag) => (d, flag, false),
            };
            state.scheduler.set_throttled(definition, throttled);
            let Some(found) = state.definitions.get(&definition) else { continue };
            notices.push(Notice {
                kind: if throttled { "definition.throttled" } else { "definition.released" },
                org: found.org.0,
                definition: definition.0,
                definition_name: found.name.clone(),
                reason: flag.reason(),
                flag,
                at: now,
            });
        }
        let samples = &mut state.counters.samples;
        samples.push_back(sample);
        while samples.len() > SAMPLES_KEPT {
            samples.pop_front();
        }
        drop(state);
        for notice in notices {
            self.announce_runaway(notice);
        }
    }

    /// Tells the operator (a log line, the metrics) and the org (its notification URL,
    /// through the deliverer) of a definition flagged or released.
    fn announce_runaway(&self, notice: Notice) {
        let throttled = notice.kind == "definition.throttled";
        if throttled {
            tracing::warn!(org = notice.org, definition = notice.definition, name = %notice.definition_name,
                reason = %notice.reason, "runaway definition flagged and throttled");
        } else {
            tracing::info!(org = notice.org, definition = notice.definition, name = %notice.definition_name,
                "runaway definition calmed down: released");
        }
        self.shared.metrics.set_runaway(OrgId(notice.org), DefinitionId(notice.definition), throttled);
        self.keep_runaway_flag(
            OrgId(notice.org),
            DefinitionId(notice.definition),
            throttled.then_some(&notice.flag),
        );
        // Nobody listening (no API server) is fine: the flag is on the dashboard.
        let _ = self.shared.notices_tx.send(notice);
    }

    /// Clears a definition's runaway flag by hand (the tenant or the operator): it is
    /// released, and its recent rate is accepted as its normal. Returns the flag it had
    /// (`None`: it was not flagged).
    ///
    /// With several nodes, the node holding the org does it (through the change log).
    pub fn release_runaway(&self, org: OrgId, definition: DefinitionId) -> Result<Option<RunawayFlag>> {
        let state = self.state();
        if state.definitions.get(&definition).is_none_or(|d| d.org != org) {
            return Err(super::Error::NotFound("definition"));
        }
        if !state.holds(org) {
            drop(state);
            return self.remote_release(org, definition);
        }
        drop(state);
        self.release_here(org, definition)
    }

    /// [`Self::release_runaway`] on the node holding the org.
    pub(super) fn release_here(&self, org: OrgId, definition: DefinitionId) -> Result<Option<RunawayFlag>> {
        let mut state = self.state();
        if state.definitions.get(&definition).is_none_or(|d| d.org != org) {
            return Err(super::Error::NotFound("definition"));
        }
        let flag = self.clear_runaway(&mut state, org, definition);
        if flag.is_some() {
            drop(state);
            self.keep_runaway_flag(org, definition, None);
            tracing::info!(org = org.0, definition = definition.0, "runaway flag cleared by hand");
            self.shared.work.notify_one();
        }
        Ok(flag)
    }

    /// Clears a definition's runaway flag, its throttle and its metric (by hand, or
    /// because it was deactivated or deleted). Returns the flag it had.
    pub(super) fn clear_runaway(
        &self,
        state: &mut State,
        org: OrgId,
        definition: DefinitionId,
    ) -> Option<RunawayFlag> {
        let flag = state.runaways.clear(definition)?;
        state.scheduler.set_throttled(definition, false);
        self.shared.metrics.set_runaway(org, definition, false);
        Some(flag)
    }

    /// Stores a definition's flag (or that it has none), so that a restart or the org's
    /// next holder throttles it still (`restore_runaways`). A store that refuses is
    /// logged: the flag holds on this node regardless.
    pub(super) fn keep_runaway_flag(&self, org: OrgId, definition: DefinitionId, flag: Option<&RunawayFlag>) {
        let text = flag.and_then(|flag| serde_json::to_string(flag).ok());
        match self.shared.store.set_runaway_flag(org, definition, text.as_deref()) {
            // Deleted meanwhile: nothing to keep.
            Ok(()) | Err(crate::store::Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(org = org.0, definition = definition.0, error = %e, "could not store a runaway flag")
            }
        }
    }

    /// Flags and throttles again the definitions the store has flagged, of `org` or of
    /// every org: at open (a restart keeps its flags), and as a node takes an org's
    /// lease (the flag moves with the org).
    pub(super) fn restore_runaways(&self, org: Option<OrgId>) -> Result<()> {
        let kept: Vec<(OrgId, DefinitionId, RunawayFlag)> = self
            .shared
            .store
            .runaway_flags()?
            .into_iter()
            .filter(|(o, ..)| org.is_none_or(|org| org == *o))
            .filter_map(|(o, d, text)| Some((o, d, serde_json::from_str(&text).ok()?)))
            .collect();
        let mut state = self.state();
        for (org, definition, flag) in kept {
            state.runaways.restore(definition, flag);
            state.scheduler.set_throttled(definition, true);
            self.shared.metrics.set_runaway(org, definition, true);
        }
        Ok(())
    }

    /// A definition's runaway flag, if it has one.
    pub fn runaway(&self, definition: DefinitionId) -> Option<RunawayFlag> {
        self.state().runaways.flag(definition).cloned()
    }

    /// [`Service::health`] as the API and the dashboard read it ([`Service::counts_read`]).
    pub async fn health_read(&self, only: Option<OrgId>) -> Result<Vec<OrgHealth>> {
        self.counts_read(only, move |service| service.health(only)).await
    }

    /// Runs `read`, which counts the jobs of `scope` (one org, or every org) with
    /// [`Service::job_counts`], off the runtime. Where this node holds the orgs, their
    /// counts are kept ones: a short read, never queued behind another org's listing.
    /// Otherwise their unfinished jobs are counted from the store, in the org's turn
    /// ([`Service::org_read`]).
    pub async fn counts_read<T: Send + 'static>(
        &self,
        scope: Option<OrgId>,
        read: impl FnOnce(&Service) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let counted = {
            let state = self.state();
            match scope {
                Some(org) => state.holds(org),
                None => state.holds_every_org(),
            }
        };
        match counted {
            true => self.off_runtime(read).await,
            false => self.org_read(scope, read).await,
        }
    }

    /// The health of one org, or of every org (the operator's view).
    pub fn health(&self, only: Option<OrgId>) -> Result<Vec<OrgHealth>> {
        let orgs: Vec<(OrgId, String)> =
            self.orgs()?.into_iter().filter(|(id, _)| only.is_none_or(|o| o == *id)).collect();
        let mut out = Vec::with_capacity(orgs.len());
        for (org, name) in orgs {
            let lanes = self.lane_health(org)?;
            let now = self.now();
            let state = self.state();
            let lanes = lanes
                .into_iter()
                .map(|health| {
                    let window = health.quotas.exception_window_minutes as Millis * MINUTE;
                    let exceptions = state
                        .counters
                        .exceptions
                        .get(&(org, health.lane))
                        .map_or(0, |t| t.iter().filter(|at| **at >= now - window).count() as u64);
                    LaneView {
                        exceptions_in_window: exceptions,
                        postponed: state.scheduler.postponed(org, health.lane),
                        suspended: health.jobs_by_status.get(&10).copied().unwrap_or(0),
                        health,
                    }
                })
                .collect();
            out.push(OrgHealth {
                org: org.0,
                name,
                lanes,
                series: series(&state, org),
                definitions: worst_definitions(&state, org, now),
            });
        }
        Ok(out)
    }
}

fn sample(state: &State, now: Millis) -> Sample {
    let mut sample = Sample { at: now, ..Sample::default() };
    let orgs: Vec<OrgId> = {
        let mut orgs: Vec<OrgId> = state.definitions.values().map(|d| d.org).collect();
        orgs.extend(state.counters.finished.keys());
        orgs.sort();
        orgs.dedup();
        orgs
    };
    for org in orgs {
        let mut queued = 0;
        for lane in Lane::ALL {
            queued += state.scheduler.ready(org, lane);
            for (definition, n) in state.scheduler.queued_by_definition(org, lane) {
                *sample.definitions.entry(definition).or_default() += n as u64;
            }
        }
        let finished = state.counters.finished.get(&org).copied().unwrap_or(0);
        sample.orgs.insert(org, (finished, queued));
    }
    sample
}

fn series(state: &State, org: OrgId) -> Series {
    let mut series = Series::default();
    let mut previous: Option<(Millis, u64)> = None;
    for sample in &state.counters.samples {
        let (finished, queued) = sample.orgs.get(&org).copied().unwrap_or((0, 0));
        if let Some((at, before)) = previous {
            let seconds = ((sample.at - at) as f64 / 1000.0).max(0.001);
            series.at.push(sample.at);
            series.throughput.push(finished.saturating_sub(before) as f64 / seconds);
            series.backlog.push(queued);
        }
        previous = Some((sample.at, finished));
    }
    series
}

fn worst_definitions(state: &State, org: OrgId, now: Millis) -> Vec<DefinitionHealth> {
    let samples = &state.counters.samples;
    let latest = samples.back();
    let minute_ago = samples.iter().find(|s| s.at >= now - MINUTE);
    let mut list: Vec<DefinitionHealth> = state
        .definitions
        .values()
        .filter(|d| d.org == org)
        .map(|d| {
            let backlog = latest.and_then(|s| s.definitions.get(&d.id)).copied().unwrap_or(0);
            let before = minute_ago.and_then(|s| s.definitions.get(&d.id)).copied().unwrap_or(0);
            let counters = state.counters.definitions.get(&d.id).copied().unwrap_or_default();
            let growth = backlog as i64 - before as i64;
            let runaway = state.runaways.flag(d.id).cloned();
            let flag = if let Some(runaway) = &runaway {
                Some(format!("runaway, throttled: {}", runaway.reason()))
            } else if backlog >= RUNAWAY_BACKLOG && growth > 0 && d.active {
                Some(format!("growing: {backlog} queued, +{growth} in the last minute"))
            } else if counters.failures >= 10 && counters.failures * 2 > counters.runs {
                Some(format!("failing: {} of {} runs failed", counters.failures, counters.runs))
            } else {
                None
            };
            DefinitionHealth {
                id: d.id.0,
                name: d.name.clone(),
                kind: d.kind.name(),
                active: d.active,
                backlog,
                growth,
                runs: counters.runs,
                failures: counters.failures,
                fuel_used: counters.fuel,
                flag,
                runaway,
            }
        })
        .collect();
    let rank = |d: &DefinitionHealth| {
        (d.runaway.is_some(), d.flag.is_some(), d.backlog, d.growth, d.failures, d.fuel_used)
    };
    list.sort_by_key(|d| std::cmp::Reverse(rank(d)));
    list.truncate(10);
    list
}
