//! What several nodes on one database share (see ARCHITECTURE.md, "Several nodes"):
//! leases on organisations (a node's shards) with epochs that fence its commits, the
//! nodes' heartbeats, the log of changes other nodes must hear of, and singletons.

use crate::JobRow;
use sluice_core::jobs::{Millis, OrgId};

/// A node's hold on an org at one epoch. A batch carrying it commits only while the
/// org's lease is still at that epoch: a node that lost the lease cannot write for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    pub org: OrgId,
    pub epoch: u64,
}

/// An org's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub org: OrgId,
    pub node: String,
    pub epoch: u64,
    /// In the database's clock; a lease at or past it may be taken.
    pub expires_at: Millis,
}

/// A lease just taken, with the org's unfinished jobs (now adopted by the taker).
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub fence: Fence,
    pub jobs: Vec<JobRow>,
    /// The last time stored for the org, in its holder's clock, when a holder last gave
    /// the lease back (0 if none ever did; a holder whose lease expired gives none). Nodes' clocks differ by a few milliseconds
    /// at most; a taker whose clock is behind starts the org's jobs only after it, so
    /// no stored start of the new holder precedes a stored end of the old one.
    pub released_at: Millis,
}

/// What changed, for nodes that cache it or must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A definition was saved, (de)activated or deleted (`key`: its id).
    Definition,
    /// The org's quotas changed.
    Quotas,
    /// A new org (nodes rebalance their leases).
    Org,
    /// A cancel, pause or resume of job `key`, for the node holding its org: that node
    /// carries it out and writes its answer on the change.
    Cancel,
    Pause,
    Resume,
    /// A runaway flag of definition `key` cleared by hand, for the node holding its org.
    Release,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 7] = [
        ChangeKind::Definition,
        ChangeKind::Quotas,
        ChangeKind::Org,
        ChangeKind::Cancel,
        ChangeKind::Pause,
        ChangeKind::Resume,
        ChangeKind::Release,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Definition => "definition",
            ChangeKind::Quotas => "quotas",
            ChangeKind::Org => "org",
            ChangeKind::Cancel => "cancel",
            ChangeKind::Pause => "pause",
            ChangeKind::Resume => "resume",
            ChangeKind::Release => "release",
        }
    }

    pub fn of_name(name: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One entry of the change log. Ids grow in commit order (a reader that has seen id
/// `n` has seen every change committed before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: u64,
    pub org: OrgId,
    pub kind: ChangeKind,
    pub key: u64,
    /// A command's answer, once the node holding the org carried it out.
    pub answer: Option<String>,
}
