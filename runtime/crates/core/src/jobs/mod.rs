//! System jobs: their identity, lanes, state and status codes (numbered as Dataverse's
//! AsyncOperation), and the quotas that govern them. Shared by the scheduler, the store
//! and the service.

mod quotas;

use serde::{Deserialize, Serialize};

pub use quotas::Quotas;

mod id_hash;

pub use id_hash::{HashMapExt, HashSetExt, IdHash};

/// A map keyed by ids the service assigns (jobs, orgs, definitions), never by text a
/// tenant chooses. Such keys need no resistance to chosen keys (the standard library's
/// SipHash costs several times more), and jobs are taken mostly in the order of their
/// ids: [`IdHash`] keeps neighbouring ids in neighbouring slots, so a backlog of a
/// million waiting jobs is walked through memory in order rather than at random. The
/// job path looks ids up many times per job, on the store's one writer among others.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHash>;
/// A set of ids the service assigns (see [`IdMap`]).
pub type IdSet<K> = std::collections::HashSet<K, IdHash>;

/// An organisation (tenant), by its number in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrgId(pub u32);

/// A system job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// What a job runs: a step registration or a workflow (all its versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DefinitionId(pub u64);

/// A queue with its own quotas in every organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// Async plug-in steps and SLA work.
    Priority,
    /// Workflows, rollups, bulk delete, import, background operations.
    Regular,
    /// E-mail: not subject to quotas.
    Exempt,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Priority, Lane::Regular, Lane::Exempt];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The lane's name, as in JSON and configuration (`priority`, `regular`, `exempt`).
    pub fn name(self) -> &'static str {
        match self {
            Lane::Priority => "priority",
            Lane::Regular => "regular",
            Lane::Exempt => "exempt",
        }
    }

    pub fn from_name(name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// A job's status; its state follows from it. Numbers as Dataverse's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Ready (0): waiting for a thread or for the throughput window.
    WaitingForResources = 0,
    /// Suspended (1): postponed until `postpone_until`, or forever, or paused.
    Waiting = 10,
    /// Locked (2): running.
    InProgress = 20,
    Pausing = 21,
    Canceling = 22,
    /// Completed (3).
    Succeeded = 30,
    Failed = 31,
    Canceled = 32,
}

/// The state part of a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Ready = 0,
    Suspended = 1,
    Locked = 2,
    Completed = 3,
}

impl Status {
    pub fn state(self) -> State {
        match self {
            Status::WaitingForResources => State::Ready,
            Status::Waiting => State::Suspended,
            Status::InProgress | Status::Pausing | Status::Canceling => State::Locked,
            Status::Succeeded | Status::Failed | Status::Canceled => State::Completed,
        }
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    pub const ALL: [Status; 8] = [
        Status::WaitingForResources,
        Status::Waiting,
        Status::InProgress,
        Status::Pausing,
        Status::Canceling,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
    ];

    /// The status's name, as in JSON (`waiting-for-resources`, `in-progress`, …).
    pub fn name(self) -> &'static str {
        match self {
            Status::WaitingForResources => "waiting-for-resources",
            Status::Waiting => "waiting",
            Status::InProgress => "in-progress",
            Status::Pausing => "pausing",
            Status::Canceling => "canceling",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    pub fn from_code(code: u32) -> Option<Status> {
        Some(match code {
            0 => Status::WaitingForResources,
            10 => Status::Waiting,
            20 => Status::InProgress,
            21 => Status::Pausing,
            22 => Status::Canceling,
            30 => Status::Succeeded,
            31 => Status::Failed,
            32 => Status::Canceled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        self.state() == State::Completed
    }
}

/// Milliseconds on the service's clock. Everything time-based takes the time as an
/// argument, so tests drive a clock of their own.
pub type Millis = i64;

pub const MINUTE: Millis = 60_000;
