//! Several nodes on one database (see ARCHITECTURE.md, "Several nodes"): each org is
//! held by one node through a lease with an epoch, and only its holder starts its jobs,
//! so every quota of the org is enforced by one scheduler and holds cluster-wide.
//!
//! A node's part, whenever another node's commit sends news (`Store::wait_for_news`:
//! PostgreSQL's `LISTEN`/`NOTIFY`) and every `poll` (50 ms) anyway: it adopts jobs other
//! nodes created for the orgs it holds, and follows the change log (definitions and
//! quotas changed elsewhere, commands for its orgs). Every third of the lease's TTL it beats its heartbeat, renews
//! its leases (a lease it lost: the org is dropped, its running executions stopped),
//! and balances: it takes free or expired orgs up to its fair share (ceil(orgs ÷ live
//! nodes)) and hands back orgs beyond it, each once its running jobs are committed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::clock::{Clock, SystemClock};
use super::{Error, Result, Service};
use crate::jobs::{JobId, Lane, Millis, OrgId, Status};
use crate::store::{Change, ChangeKind, Fence};

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's name, unique among live nodes.
    pub node: String,
    /// How long a lease lasts unrenewed: a dead node's orgs are taken over within it
    /// (default 30 s). Renewed every third of it.
    pub lease_ttl: Millis,
    /// How often, at the longest, the node adopts jobs created elsewhere and reads the
    /// change log: it does at once when another node's commit sends news of them, so this
    /// bounds the extra pickup latency of an event that reached another node only if the
    /// news is lost. Default 50 ms.
    pub poll: Duration,
}

impl ClusterOptions {
    /// Options for a node with a name of its own: the process's id and its start time (a restarted node is a new node; its old leases simply expire).
    pub fn new() -> Self {
        let started = SystemClock.now();
        ClusterOptions {
            node: format!("node-{}-{started}", std::process::id()),
            lease_ttl: 30_000,
            poll: Duration::from_millis(50),
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a command waits for the node holding the job's org.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one wait for news lasts (`Store::wait_for_news`) before the cluster loop
/// looks at its shutdown again.
const NEWS_WAIT: Duration = Duration::from_millis(250);

/// The longest an org taken over waits for this node's clock to pass the last holder's
/// (see `take`): clocks further apart than that are an operator's problem, logged, not
/// a reason to leave the org unserved.
const HANDOVER_WAIT_LIMIT: Millis = 1_000;

/// Changes read per poll.
const CHANGES_PER_POLL: u32 = 1_000;

impl Service {
    /// The node's part in the cluster, until `shutdown` completes: [`Service::follow`]
    /// every poll, [`Service::balance`] every third of the lease's TTL (and at once when
    /// an org is created). A store failure is logged and tried again; it never ends the
    /// loop. Past a whole TTL without renewing, the node lets every org go (it cannot
    /// know whether another node took them). Hand the orgs back after the driver ended
    /// with [`Service::release_all`].
    pub async fn run_cluster(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let Some(cluster) = self.shared.options.cluster.clone() else { return Ok(()) };
        let ttl = Duration::from_millis(cluster.lease_ttl.max(3) as u64);
        let mut next_balance = Instant::now();
        let mut renewed = Instant::now();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut listening = true;
        'turns: loop {
            let service = self.clone();
            let balance_now = Instant::now() >= next_balance;
            // Measured before the renewal is sent: the lease expires at least a TTL
            // after this instant, so letting go a TTL after it is never too late.
            let renewal_sent = Instant::now();
            let (balanced, followed) = tokio::task::spawn_blocking(move || {
                let balanced = balance_now.then(|| service.balance());
                (balanced, service.follow())
            })
            .await
            .map_err(|e| Error::Invalid(format!("the cluster task failed: {e}")))?;
            match balanced {
                Some(Ok(())) => {
                    renewed = renewal_sent;
                    next_balance = renewed + ttl / 3;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    next_balance = Instant::now() + ttl / 10;
                }
                None => {}
            }
            // Checked on every turn, so that a node waking from a long pause lets its
            // orgs go before it runs on.
            if renewed.elapsed() >= ttl && !self.fences().is_empty() {
                tracing::error!("leases not renewed for a whole TTL: letting every org go");
                for fence in self.fences() {
                    self.drop_org(fence.org);
                }
            }
            match followed {
                Ok(true) => next_balance = Instant::now(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "following the cluster failed"),
            }
            // Until another node's commit brings news (jobs to adopt, a change), at most
            // a poll, waited in slices: a wait under way when the node shuts down holds a
            // blocking thread until its slice ends.
            let next_turn = Instant::now() + cluster.poll;
            if !listening {
                tokio::select! {
                    _ = &mut shutdown => break 'turns,
                    _ = tokio::time::sleep_until(next_turn.into()) => continue 'turns,
                }
            }
            loop {
                let slice = next_turn.saturating_duration_since(Instant::now()).min(NEWS_WAIT);
                let store = self.shared.store.clone();
                let news = tokio::task::spawn_blocking(move || store.wait_for_news(slice));
                tokio::select! {
                    _ = &mut shutdown => break 'turns,
                    heard = news => match heard {
                        Ok(Ok(false)) if Instant::now() < next_turn => {}
                        Ok(Err(e)) => {
                            // The listening connection is not opened again: poll from now on.
                            tracing::error!(error = %e, "cannot hear other nodes' news: following them every poll");
                            listening = false;
                            tokio::time::sleep_until(next_turn.into()).await;
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands every org this node holds back (a clean shutdown, after the driver ended):
    /// other nodes take them at once instead of after the TTL.
    pub fn release_all(&self) -> Result<()> {
        let Some(cluster) = &self.shared.options.cluster else { return Ok(()) };
        self.flush()?;
        let held: Vec<Fence> = {
            let mut state = self.state();
            let fences = state.held.as_mut().map(std::mem::take).unwrap_or_default();
            for org in fences.keys() {
                state.scheduler.drop_org(*org);
            }
            fences.into_values().collect()
        };
        // After every time stored for these orgs: the flush above committed the last.
        let released_at = self.now();
        for fence in held {
            self.shared.store.release_lease(&cluster.node, fence, released_at)?;
        }
        Ok(())
    }

    /// Adopts the jobs other nodes created for the orgs this node holds and applies the
    /// change log; returns whether orgs were created (balance now). Blocks the thread.
    pub fn follow(&self) -> Result<bool> {
        if self.shared.options.cluster.is_none() {
            return Ok(false);
        }
        let rebalance = self.follow_changes()?;
        self.adopt()?;
        Ok(rebalance)
    }

    /// Beats the heartbeat, renews the leases (a lost one: the org is dropped), and
    /// balances the orgs across the live nodes. Blocks the thread.
    pub fn balance(&self) -> Result<()> {
        let Some(options) = self.shared.options.cluster.clone() else { return Ok(()) };
        self.renew_and_balance(&options)
    }

    /// The orgs this node holds now, at their epochs (several nodes).
    pub fn held_orgs(&self) -> Vec<Fence> {
        let mut fences = self.fences();
        fences.sort_by_key(|f| f.org);
        fences
    }

    /// The fences of the orgs this node holds.
    fn fences(&self) -> Vec<Fence> {
        self.state().held.as_ref().map(|h| h.values().copied().collect()).unwrap_or_default()
    }

    fn renew_and_balance(&self, options: &ClusterOptions) -> Result<()> {
        let store = &self.shared.store;
        let live = store.heartbeat(&options.node, options.lease_ttl)?;
        let before = SystemClock.now();
        let database = store.database_now()?;
        let after = SystemClock.now();
        self.shared.clock.observe_database(database, (before + after) / 2);

        let held = self.fences();
        let renewed = store.renew_leases(&options.node, &held, options.lease_ttl)?;
        for fence in held.iter().filter(|f| !renewed.contains(&f.org)) {
            tracing::warn!(org = fence.org.0, "lost the org's lease: another node holds it now");
            self.drop_org(fence.org);
        }

        let orgs = store.orgs()?;
        let share = orgs.len().div_ceil(live.len().max(1));
        let mut holding = self.fences().len();
        if holding < share {
            let leases: HashMap<OrgId, crate::store::Lease> =
                store.leases()?.into_iter().map(|l| (l.org, l)).collect();
            let database = store.database_now()?;
            let held_now = self.fences();
            for (org, _) in &orgs {
                if holding >= share {
                    break;
                }
                let free = leases.get(org).is_none_or(|l| l.expires_at <= database || l.node == options.node);
                if free && !held_now.iter().any(|f| f.org == *org) && self.take(options, *org)? {
                    holding += 1;
                }
            }
        }
        self.hand_back_beyond(options, share)
    }

    /// Takes an org's lease if it is still free; returns whether it did.
    fn take(&self, options: &ClusterOptions, org: OrgId) -> Result<bool> {
        let store = &self.shared.store;
        let Some(taken) = store.take_lease(&options.node, org, options.lease_ttl)? else { return Ok(false) };
        let now = self.now();
        // The throughput window goes on counting where the last holder left it.
        let mut windows = Vec::new();
        for lane in [Lane::Priority, Lane::Regular] {
            let window = self.quotas(org, lane).throughput_window();
            let since = now.div_euclid(window) * window;
            windows.push((lane, store.starts_since(org, lane, since)?));
        }
        // Read before the org's next job is planned here (a job committed elsewhere
        // between the take and this read is counted again when adopted: one start too
        // many, in a window of milliseconds). The lease is taken, so a failed read must
        // not leave the org unserved until it expires: the counts start from zero.
        let workflow_starts = self.workflow_starts(org).unwrap_or_else(|e| {
            tracing::warn!(org = org.0, error = %e, "could not read the org's workflow starts back");
            Vec::new()
        });
        let undelivered: Vec<(OrgId, JobId)> =
            store.undelivered_callbacks()?.into_iter().filter(|(o, _)| *o == org).collect();
        let jobs = taken.jobs.len();
        {
            let mut state = self.state();
            for (lane, starts) in windows {
                state.scheduler.restore_window(org, lane, now, starts);
            }
            super::events::restore_loop_counts(&mut state, org, &workflow_starts);
            // Nodes' clocks, each corrected to the database's, differ by the error of
            // that correction. Where this one is behind the last holder's, the org's
            // first start waits for it to pass the release: then no start stored here
            // precedes an end stored there, and the thread cap holds in stored times too.
            // (A start in the millisecond of an end is in order: the end freed the thread.)
            let behind = taken.released_at - now;
            if behind > 0 {
                if behind > HANDOVER_WAIT_LIMIT {
                    tracing::warn!(
                        org = org.0,
                        behind_ms = behind,
                        "this node's clock is far behind the last holder's"
                    );
                }
                state.scheduler.start_from(org, now + behind.min(HANDOVER_WAIT_LIMIT));
            }
            let settled = state.restore(taken.jobs, now);
            state.pending.extend(settled);
            if let Some(held) = state.held.as_mut() {
                held.insert(org, taken.fence);
            }
        }
        // A runaway flag raised by the last holder stays raised here.
        self.restore_runaways(Some(org))?;
        tracing::info!(org = org.0, epoch = taken.fence.epoch, jobs, "took the org's lease");
        // Callbacks of operations that ended under the last holder and never went out.
        self.announce_ended(undelivered);
        self.shared.work.notify_one();
        Ok(true)
    }

    /// Hands back orgs beyond the node's share: each stops starting jobs, and once its
    /// running ones are decided and committed, its lease is released.
    fn hand_back_beyond(&self, options: &ClusterOptions, share: usize) -> Result<()> {
        let mut held = self.fences();
        held.sort_by_key(|f| std::cmp::Reverse(f.org));
        let beyond: Vec<Fence> = held.iter().copied().take(held.len().saturating_sub(share)).collect();
        {
            let mut state = self.state();
            for fence in &held {
                state.scheduler.set_draining(fence.org, beyond.contains(fence));
            }
        }
        let idle: Vec<Fence> =
            beyond.into_iter().filter(|f| self.state().scheduler.running_in_org(f.org) == 0).collect();
        if idle.is_empty() {
            return Ok(());
        }
        // Whatever was decided for them (their last completions) commits first.
        self.flush()?;
        let released_at = self.now();
        for fence in idle {
            self.drop_org(fence.org);
            self.shared.store.release_lease(&options.node, fence, released_at)?;
            tracing::info!(org = fence.org.0, "handed the org back");
        }
        Ok(())
    }

    /// Forgets an org this node no longer holds: its scheduler state goes, its running
    /// executions are stopped (their ends are not recorded: the new holder runs them).
    pub(super) fn drop_org(&self, org: OrgId) {
        let mut state = self.state();
        if let Some(held) = state.held.as_mut() {
            held.remove(&org);
        }
        for id in state.scheduler.drop_org(org) {
            if let Some(stop) = state.stops.get(&id) {
                stop.stop();
            }
            state.postponements.remove(&id);
            state.queued.remove(&id);
            state.background.remove(&id);
        }
        state.pending.retain(|update| update.org() != org);
        // Its definitions' runaway flags are the next holder's now (kept in the store):
        // this node neither throttles nor releases them any more.
        let definitions: Vec<_> = state.definitions.values().filter(|d| d.org == org).map(|d| d.id).collect();
        for definition in definitions {
            self.clear_runaway(&mut state, org, definition);
            state.runaways.forget(definition);
        }
    }

    /// Takes the jobs other nodes created for the orgs this node holds.
    fn adopt(&self) -> Result<()> {
        let held = self.fences();
        if held.is_empty() {
            return Ok(());
        }
        let jobs = self.shared.store.adopt_jobs(&held)?;
        if jobs.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut state = self.state();
        // An org lost since the adoption (a fenced commit, a renewal) is not restored.
        let jobs: Vec<_> = jobs.into_iter().filter(|job| state.holds(job.org)).collect();
        // Created on another node just now: the runaway rule counts them here, where
        // their definitions' jobs run, and so does loop detection (the node that made
        // a workflow job for an org it does not hold left its start uncounted): one
        // start too many on a record is canceled, as if it had been made here.
        let mut looping = Vec::new();
        let mut adopted = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.status == Status::WaitingForResources {
                if state.starts_workflow_loop(&job, now) {
                    looping.push(crate::store::JobUpdate::Status {
                        id: job.id,
                        org: job.org,
                        lane: job.lane,
                        at: now,
                        status: Status::Canceled,
                        error: Some((
                            super::WORKFLOW_LOOP_CODE.to_owned(),
                            super::WORKFLOW_LOOP_MESSAGE.to_owned(),
                        )),
                    });
                    continue;
                }
                state.runaways.created(job.definition, 1);
            }
            adopted.push(job);
        }
        let settled = state.restore(adopted, now);
        state.pending.extend(settled);
        state.pending.extend(looping);
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Applies what other nodes changed; returns whether the orgs changed (balance now).
    fn follow_changes(&self) -> Result<bool> {
        let mut last = self.shared.last_change.lock().unwrap_or_else(|e| e.into_inner());
        let changes = self.shared.store.changes_after(*last, CHANGES_PER_POLL)?;
        let mut rebalance = false;
        for change in changes {
            *last = change.id;
            match change.kind {
                ChangeKind::Definition => self.reload_definitions(change.org)?,
                ChangeKind::Quotas => {
                    for (org, lane, quotas) in self.shared.store.all_quotas()? {
                        if org == change.org {
                            self.state().scheduler.set_quotas(org, lane, quotas);
                        }
                    }
                    self.shared.work.notify_one();
                }
                ChangeKind::Org => rebalance = true,
                ChangeKind::Cancel | ChangeKind::Pause | ChangeKind::Resume => {
                    self.answer_command(&change)?
                }
                ChangeKind::Release => self.answer_release(&change)?,
            }
        }
        Ok(rebalance)
    }

    /// Reads an org's definitions again (changed on another node).
    fn reload_definitions(&self, org: OrgId) -> Result<()> {
        let fresh: Vec<_> = self.shared.store.definitions()?.into_iter().filter(|d| d.org == org).collect();
        let mut state = self.state();
        let gone: Vec<_> = state.definitions.values().filter(|d| d.org == org).map(|d| d.id).collect();
        for id in gone {
            state.definitions.remove(&id);
            state.scheduler.deactivate(id);
        }
        for definition in fresh {
            if definition.active {
                state.scheduler.activate(definition.id);
            } else {
                state.scheduler.deactivate(definition.id);
            }
            state.definitions.insert(definition.id, std::sync::Arc::new(definition));
        }
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Carries out a command asked on another node, if this node holds the job's org.
    fn answer_command(&self, change: &Change) -> Result<()> {
        if change.answer.is_some() || !self.state().held.as_ref().is_some_and(|h| h.contains_key(&change.org))
        {
            return Ok(());
        }
        let answer = match self.command_here(change.org, JobId(change.key), change.kind) {
            Ok(status) => {
                if change.kind == ChangeKind::Resume {
                    self.shared.work.notify_one();
                }
                format!("ok {}", status.code())
            }
            Err(Error::NotAllowed(status)) => format!("not-allowed {}", status.code()),
            Err(Error::NotFound(_)) => "not-found".to_owned(),
            Err(e) => return Err(e),
        };
        self.shared.store.answer_change(change.id, &answer)?;
        Ok(())
    }

    /// Clears a runaway flag asked on another node, if this node holds the org: the
    /// answer is the flag it had (JSON), `none`, or `not-found`.
    fn answer_release(&self, change: &Change) -> Result<()> {
        if change.answer.is_some() || !self.state().held.as_ref().is_some_and(|h| h.contains_key(&change.org))
        {
            return Ok(());
        }
        let answer = match self.release_here(change.org, crate::jobs::DefinitionId(change.key)) {
            Ok(Some(flag)) => serde_json::to_string(&flag).expect("a flag serialises"),
            Ok(None) => "none".to_owned(),
            Err(Error::NotFound(_)) => "not-found".to_owned(),
            Err(e) => return Err(e),
        };
        self.shared.store.answer_change(change.id, &answer)?;
        Ok(())
    }

    /// Asks the node holding the org to clear a definition's runaway flag and waits.
    pub(super) fn remote_release(
        &self,
        org: OrgId,
        definition: crate::jobs::DefinitionId,
    ) -> Result<Option<super::RunawayFlag>> {
        let answer = self.relay(org, ChangeKind::Release, definition.0)?;
        match answer.as_str() {
            "none" => Ok(None),
            "not-found" => Err(Error::NotFound("definition")),
            json => serde_json::from_str(json).map(Some).map_err(|_| {
                Error::Store(crate::store::Error::Corrupt(format!("a release's answer '{answer}'")))
            }),
        }
    }

    /// Logs a command for the node holding `org` and waits for its answer (polling the
    /// log), in one of the org's places for relayed commands (see `gate.rs`).
    fn relay(&self, org: OrgId, kind: ChangeKind, key: u64) -> Result<String> {
        let _place = self.shared.relay_gate.enter(org)?;
        let change = self.shared.store.log_change(org, kind, key)?;
        self.await_answer(org, change, kind)
    }

    /// Waits for the node holding `org` to answer change `change` (polling the log).
    fn await_answer(&self, org: OrgId, change: u64, kind: ChangeKind) -> Result<String> {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            if let Some(answer) = self.shared.store.change(change)?.and_then(|c| c.answer) {
                return Ok(answer);
            }
        }
        Err(Error::Unavailable(format!(
            "the node holding org {} did not answer the {} within {} s; try again",
            org.0,
            kind.name(),
            COMMAND_TIMEOUT.as_secs()
        )))
    }

    /// Asks the node holding the org to carry out a command and waits for its answer.
    pub(super) fn remote_command(&self, org: OrgId, id: JobId, kind: ChangeKind) -> Result<Status> {
        let answer = self.relay(org, kind, id.0)?;
        let corrupt = || Error::Store(crate::store::Error::Corrupt(format!("a command's answer '{answer}'")));
        let status = |code: &str| code.parse::<u32>().ok().and_then(Status::from_code).ok_or_else(corrupt);
        match answer.split_once(' ') {
            Some(("ok", code)) => status(code),
            Some(("not-allowed", code)) => Err(Error::NotAllowed(status(code)?)),
            _ if answer == "not-found" => Err(Error::NotFound("job")),
            _ => Err(corrupt()),
        }
    }
}
