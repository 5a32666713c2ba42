//! Prometheus metrics (OpenMetrics text, served at `/metrics` to the operator): jobs by
//! org, lane and status (read from the store at each scrape), pickup latency and run
//! time histograms, pickups refused by a quota, fuel used, and store commit latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::jobs::{Lane, OrgId, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrgLane {
    pub org: String,
    pub lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub org: String,
    pub lane: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub org: String,
    pub lane: String,
    pub quota: String,
}

pub fn org_lane(org: OrgId, lane: Lane) -> OrgLane {
    OrgLane { org: org.0.to_string(), lane: lane.name().to_owned() }
}

/// Every metric Sluice keeps; one per service.
pub struct Metrics {
    registry: Registry,
    pub jobs: Family<JobLabels, Gauge>,
    pub pickup_latency: Family<OrgLane, Histogram>,
    pub run_time: Family<OrgLane, Histogram>,
    pub throttled: Family<QuotaLabels, Counter>,
    pub fuel: Family<OrgLane, Counter>,
    pub commit_latency: Histogram,
    /// Starts that waited for their job to be read back from the store.
    pub starts_read_back: Counter,
    /// Rounds of finished executions the driver handed to the writer (jobs finished ÷
    /// rounds: how many a round gathers, see `ROUND_GAP`).
    pub driver_rounds: Counter,
    /// Jobs whose success is committed (this node's, all orgs).
    pub jobs_succeeded: Counter,
    /// 1 while a definition is flagged as a runaway and throttled, else 0.
    pub runaway: Family<DefinitionLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DefinitionLabels {
    pub org: String,
    pub definition: String,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to ~3.3 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let jobs = Family::<JobLabels, Gauge>::default();
        let pickup_latency =
            Family::<OrgLane, Histogram>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let run_time =
            Family::<OrgLane, Histogram>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let throttled = Family::<QuotaLabels, Counter>::default();
        let fuel = Family::<OrgLane, Counter>::default();
        let commit_latency = seconds_histogram();
        let starts_read_back = Counter::default();
        let driver_rounds = Counter::default();
        let jobs_succeeded = Counter::default();
        let runaway = Family::<DefinitionLabels, Gauge>::default();
        registry.register(
            "runaway_throttled",
            "1 while a definition is flagged as a runaway and throttled (see the runaway rule), else 0",
            runaway.clone(),
        );
        registry.register("jobs", "Stored jobs by organisation, lane and status", jobs.clone());
        registry.register(
            "pickup_latency_seconds",
            "From a job's creation to its first start",
            pickup_latency.clone(),
        );
        registry.register("run_seconds", "Wall time of each execution of a job", run_time.clone());
        registry.register(
            "throttled_pickups",
            "Pickups that found a ready job held back by a quota (max-threads or max-throughput)",
            throttled.clone(),
        );
        registry.register("fuel_used", "Fuel units used by finished executions", fuel.clone());
        registry.register(
            "store_commit_seconds",
            "Duration of each store transaction of the driver and of events",
            commit_latency.clone(),
        );
        registry.register(
            "starts_read_back",
            "Job starts that waited for their job to be read back from the store (a retry, a \
             job from before a restart or another node, or a payload past the node's memory)",
            starts_read_back.clone(),
        );
        registry.register(
            "driver_rounds",
            "Rounds of finished executions the driver handed to the store's writer (each \
             committed with whatever else the writer had waiting)",
            driver_rounds.clone(),
        );
        registry.register(
            "jobs_succeeded",
            "Jobs whose success this node has committed (all organisations)",
            jobs_succeeded.clone(),
        );
        Metrics {
            registry,
            jobs,
            pickup_latency,
            run_time,
            throttled,
            fuel,
            commit_latency,
            starts_read_back,
            driver_rounds,
            jobs_succeeded,
            runaway,
        }
    }
}

impl Metrics {
    /// Sets the job gauges of one org from the store's counts (every lane and status,
    /// zeros included, so a drained status reads 0 rather than vanishing).
    pub fn set_job_counts(&self, org: OrgId, counts: &[(Lane, Status, u64)]) {
        for lane in Lane::ALL {
            for status in Status::ALL {
                let n = counts.iter().find(|(l, s, _)| *l == lane && *s == status).map_or(0, |c| c.2);
                let labels = JobLabels {
                    org: org.0.to_string(),
                    lane: lane.name().to_owned(),
                    status: status.name().to_owned(),
                };
                self.jobs.get_or_create(&labels).set(n as i64);
            }
        }
    }

    pub fn throttled(&self, org: OrgId, lane: Lane, quota: &str) {
        let labels =
            QuotaLabels { org: org.0.to_string(), lane: lane.name().to_owned(), quota: quota.to_owned() };
        self.throttled.get_or_create(&labels).inc();
    }

    pub fn set_runaway(&self, org: OrgId, definition: crate::jobs::DefinitionId, throttled: bool) {
        let labels = DefinitionLabels { org: org.0.to_string(), definition: definition.0.to_string() };
        self.runaway.get_or_create(&labels).set(i64::from(throttled));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String never fails");
        text
    }
}
