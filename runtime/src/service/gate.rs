//! Places for the work an org's requests make a node hold for them, counted per org and
//! per node. A caller over either bound is refused at once (HTTP 429): nothing is done
//! and nothing waits, so one org's flood of requests never holds what the others need.
//!
//! - **Synchronous executions** (sync steps, custom-API runs) execute inside the caller's
//!   request, on the engine's instance pool that jobs use too. The job lanes own
//!   `3 × slots` of the pool; the rest is for synchronous work, and no org may hold more
//!   than its share of it at once.
//! - **Relayed commands** (several nodes): a cancel, pause, resume or runaway release of
//!   an org another node holds waits, on a blocking thread and polling the change log, up
//!   to 10 s for that node's answer. Without a bound one org could hold every blocking
//!   thread and every read connection of the node with commands nobody answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jobs::OrgId;

/// What a gate counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Sync steps and custom-API runs.
    Synchronous,
    /// Commands waiting for the node that holds their org.
    Relayed,
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Work::Synchronous => "synchronous executions running",
            Work::Relayed => "commands waiting for the node that holds it",
        })
    }
}

/// Why work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("the organisation already has {limit} {work} (its limit); try again shortly")]
    OrgLimit { work: Work, limit: u32 },
    #[error("this node already has {limit} {work} (its capacity); try again shortly")]
    NodeCapacity { work: Work, limit: u32 },
}

/// Relayed commands one org may have waiting on a node at once; one more is refused
/// (HTTP 429 `relay-quota-exceeded`).
pub const RELAYED_PER_ORG: u32 = 8;
/// Relayed commands a node may have waiting at once, all orgs together (HTTP 429
/// `relay-capacity-exhausted` past it).
pub const RELAYED_PER_NODE: u32 = 64;

#[derive(Debug)]
pub(super) struct Gate {
    work: Work,
    per_org: u32,
    total: u32,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    total: u32,
    by_org: HashMap<OrgId, u32>,
}

/// One piece of work's place; given back when dropped.
#[derive(Debug)]
pub(super) struct Permit {
    gate: Arc<Gate>,
    org: OrgId,
}

impl Gate {
    pub fn new(work: Work, per_org: u32, total: u32) -> Self {
        Gate { work, per_org, total, running: Mutex::default() }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for one piece of `org`'s work, or says why not.
    pub fn enter(self: &Arc<Self>, org: OrgId) -> Result<Permit, Busy> {
        let mut running = self.running();
        let mine = running.by_org.get(&org).copied().unwrap_or(0);
        if mine >= self.per_org {
            return Err(Busy::OrgLimit { work: self.work, limit: self.per_org });
        }
        if running.total >= self.total {
            return Err(Busy::NodeCapacity { work: self.work, limit: self.total });
        }
        running.total += 1;
        running.by_org.insert(org, mine + 1);
        Ok(Permit { gate: self.clone(), org })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut running = self.gate.running();
        running.total -= 1;
        if let Some(n) = running.by_org.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                running.by_org.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_gets_its_share_and_no_more_and_places_come_back() {
        let gate = Arc::new(Gate::new(Work::Relayed, 2, 3));
        let (a, b) = (OrgId(1), OrgId(2));
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), Busy::OrgLimit { work: Work::Relayed, limit: 2 });
        let _b1 = gate.enter(b).unwrap();
        assert_eq!(gate.enter(b).unwrap_err(), Busy::NodeCapacity { work: Work::Relayed, limit: 3 });
        drop(first);
        assert!(gate.enter(b).is_ok(), "a place given back is free again");
    }
}
