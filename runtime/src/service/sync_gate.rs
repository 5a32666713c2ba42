//! Capacity for synchronous work: sync steps and custom-API runs execute inside the
//! caller's request, on the engine's instance pool that jobs use too. The job lanes own
//! `3 × slots` of the pool; the rest is for synchronous work, and no org may hold more
//! than its share of it at once. A caller over either bound is refused at once (HTTP
//! 429), so a flood of one org's requests never takes the pool from anyone's jobs or
//! from other orgs' requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jobs::OrgId;

/// Why synchronous work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncRefusal {
    #[error("the organisation already runs {limit} synchronous executions (its limit); try again shortly")]
    OrgLimit { limit: u32 },
    #[error("this node already runs {limit} synchronous executions (its capacity); try again shortly")]
    NodeCapacity { limit: u32 },
}

#[derive(Debug)]
pub(super) struct SyncGate {
    per_org: u32,
    total: u32,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    total: u32,
    by_org: HashMap<OrgId, u32>,
}

/// One synchronous execution's place; given back when dropped.
#[derive(Debug)]
pub(super) struct SyncPermit {
    gate: Arc<SyncGate>,
    org: OrgId,
}

impl SyncGate {
    pub fn new(per_org: u32, total: u32) -> Self {
        SyncGate { per_org, total, running: Mutex::default() }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for one synchronous execution of `org`, or says why not.
    pub fn enter(self: &Arc<Self>, org: OrgId) -> Result<SyncPermit, SyncRefusal> {
        let mut running = self.running();
        let mine = running.by_org.get(&org).copied().unwrap_or(0);
        if mine >= self.per_org {
            return Err(SyncRefusal::OrgLimit { limit: self.per_org });
        }
        if running.total >= self.total {
            return Err(SyncRefusal::NodeCapacity { limit: self.total });
        }
        running.total += 1;
        running.by_org.insert(org, mine + 1);
        Ok(SyncPermit { gate: self.clone(), org })
    }
}

impl Drop for SyncPermit {
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
        let gate = Arc::new(SyncGate::new(2, 3));
        let (a, b) = (OrgId(1), OrgId(2));
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), SyncRefusal::OrgLimit { limit: 2 });
        let _b1 = gate.enter(b).unwrap();
        assert_eq!(gate.enter(b).unwrap_err(), SyncRefusal::NodeCapacity { limit: 3 });
        drop(first);
        assert!(gate.enter(b).is_ok(), "a place given back is free again");
    }
}
