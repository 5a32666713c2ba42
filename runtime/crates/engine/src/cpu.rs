//! CPU turns shared fairly across tenants, by what each has used.
//!
//! Job slots and thread quotas bound *how many* executions an org runs; they do not bound
//! how much CPU those take. Here every poll of a running plug-in needs a turn: at most
//! `turns` plug-ins are polled at once (about one per core), and when more want one, the
//! org that has used the least CPU goes first (virtual time, as in start-time fair
//! queueing or Linux's CFS). A plug-in gives its turn back at each fuel yield (about a
//! tenth of a millisecond of work) and whenever it waits on a host call, so an org with a
//! dozen CPU-bound executions gets its share of the cores, while another org's short job
//! waits for at most one slice, whatever the first org runs.
//!
//! An org's virtual time is the CPU (wall time of its polls, ns) it has been charged. An
//! org that had nothing running comes back at the `floor` (the highest virtual time a
//! turn was taken at), so it gets no credit saved while idle: it shares with whoever is
//! running from then on, rather than holding the cores until it has caught up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The engine's CPU turns. Shared by every execution of the process.
pub struct FairCpu {
    turns: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Each org's place in `times`: an execution looks its org up once, at its start,
    /// and uses the place from then on (every poll of every plug-in passes here).
    places: HashMap<String, usize>,
    times: Vec<OrgTime>,
    /// The highest virtual time a turn was taken at.
    floor: u64,
    /// Executions waiting for a turn, in arrival order (few: at most the running ones).
    waiting: Vec<Waiter>,
    /// Tickets given a turn, not yet polled.
    granted: HashSet<u64>,
    next_ticket: u64,
}

#[derive(Default)]
struct OrgTime {
    used_ns: u64,
    /// Executions of the org holding a [`CpuTurn`].
    executions: usize,
}

struct Waiter {
    ticket: u64,
    /// The org's place in `State::times`.
    org: usize,
    waker: Waker,
}

impl FairCpu {
    /// `turns` plug-in polls at once (at least one).
    pub fn new(turns: usize) -> Arc<Self> {
        let turns = turns.max(1);
        Arc::new(FairCpu { turns, state: Mutex::new(State { free: turns, ..State::default() }) })
    }

    pub fn turns(&self) -> usize {
        self.turns
    }

    /// The handle one execution of `org` polls through.
    pub fn execution(self: &Arc<Self>, org: &str) -> CpuTurn {
        let mut state = self.lock();
        let state = &mut *state;
        let place = match state.places.get(org) {
            Some(&place) => place,
            None => {
                state.times.push(OrgTime::default());
                state.places.insert(org.to_owned(), state.times.len() - 1);
                state.times.len() - 1
            }
        };
        let time = &mut state.times[place];
        if time.executions == 0 {
            time.used_ns = time.used_ns.max(state.floor);
        }
        time.executions += 1;
        CpuTurn { cpu: self.clone(), org: place, ticket: None, held_since: None, owed_ns: 0 }
    }

    /// The CPU each org has been charged, in ns of virtual time (for tests and metrics).
    pub fn used_ns(&self, org: &str) -> u64 {
        let state = self.lock();
        state.places.get(org).map_or(0, |&place| state.times[place].used_ns)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Hands free turns to the waiters whose orgs have used the least; returns the
    /// wakers to wake once the lock is released.
    fn dispatch(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        while self.free > 0 && !self.waiting.is_empty() {
            let used = |w: &Waiter| self.times[w.org].used_ns;
            let best = (0..self.waiting.len())
                .min_by_key(|&i| (used(&self.waiting[i]), self.waiting[i].ticket))
                .expect("not empty");
            let waiter = self.waiting.swap_remove(best);
            self.floor = self.floor.max(self.times[waiter.org].used_ns);
            self.free -= 1;
            self.granted.insert(waiter.ticket);
            wake.push(waiter.waker);
        }
        wake
    }

    /// Charges `org` for a turn it held and frees the turn.
    /// Returns how long the turn was held.
    fn give_back(&mut self, org: usize, since: Instant, extra_ns: u64) -> Duration {
        let held = since.elapsed();
        let spent = (held.as_nanos() as u64).saturating_add(extra_ns);
        let time = &mut self.times[org];
        time.used_ns = time.used_ns.saturating_add(spent);
        self.free += 1;
        held
    }
}

/// Wakes whoever was handed a turn, once the state's lock is let go.
fn wake_all(wake: Vec<Waker>) {
    wake.into_iter().for_each(Waker::wake);
}

/// One execution's access to the CPU turns. Dropping it gives back whatever it holds.
pub struct CpuTurn {
    cpu: Arc<FairCpu>,
    /// The org's place in `State::times`.
    org: usize,
    /// Waiting (or granted) under this ticket.
    ticket: Option<u64>,
    /// Holding a turn since.
    held_since: Option<Instant>,
    /// Work done for it elsewhere, to charge when the held turn is given back at drop.
    owed_ns: u64,
}

impl CpuTurn {
    /// Ready once this execution holds a turn.
    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held_since.is_some() {
            return Poll::Ready(());
        }
        let mut state = self.cpu.lock();
        let ticket = match self.ticket {
            Some(ticket) => ticket,
            None if state.free > 0 && state.waiting.is_empty() => {
                state.free -= 1;
                state.floor = state.floor.max(state.times[self.org].used_ns);
                self.held_since = Some(Instant::now());
                return Poll::Ready(());
            }
            None => {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.waiting.push(Waiter { ticket, org: self.org, waker: cx.waker().clone() });
                self.ticket = Some(ticket);
                let wake = state.dispatch();
                drop(state);
                wake_all(wake);
                state = self.cpu.lock();
                ticket
            }
        };
        if state.granted.remove(&ticket) {
            self.ticket = None;
            self.held_since = Some(Instant::now());
            return Poll::Ready(());
        }
        if let Some(waiter) = state.waiting.iter_mut().find(|w| w.ticket == ticket) {
            waiter.waker.clone_from(cx.waker());
        }
        Poll::Pending
    }

    /// Gives the turn back (after a poll), charging the org for the time it was held and
    /// `extra_ns` of work done for it elsewhere (host calls on other threads).
    /// Returns how long the turn was held (zero if none was).
    pub fn give_back(&mut self, extra_ns: u64) -> Duration {
        let Some(since) = self.held_since.take() else { return Duration::ZERO };
        let mut state = self.cpu.lock();
        let held = state.give_back(self.org, since, extra_ns);
        let wake = state.dispatch();
        drop(state);
        wake_all(wake);
        held
    }

    /// Keeps the turn after a poll that ended the execution: it is given back, charged
    /// with `extra_ns` as [`give_back`](Self::give_back) would, when this handle is
    /// dropped (one hold of the lock for both).
    pub fn keep_until_drop(&mut self, extra_ns: u64) {
        self.owed_ns = self.owed_ns.saturating_add(extra_ns);
    }
}

impl Drop for CpuTurn {
    fn drop(&mut self) {
        let mut state = self.cpu.lock();
        if let Some(since) = self.held_since.take() {
            state.give_back(self.org, since, self.owed_ns);
        }
        if let Some(ticket) = self.ticket.take() {
            if state.granted.remove(&ticket) {
                state.free += 1;
            } else {
                state.waiting.retain(|w| w.ticket != ticket);
            }
        }
        state.times[self.org].executions -= 1;
        let wake = state.dispatch();
        drop(state);
        wake_all(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    /// Holds a turn for `ns` of charged time.
    fn charge(cpu: &Arc<FairCpu>, org: &str, ns: u64) {
        let mut state = cpu.lock();
        let place = state.places[org];
        state.times[place].used_ns += ns;
    }

    #[test]
    fn the_org_that_used_least_goes_first() {
        let cpu = FairCpu::new(1);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut hog = cpu.execution("hog");
        let mut hog2 = cpu.execution("hog");
        let mut victim = cpu.execution("victim");
        assert!(hog.poll_take(&mut cx).is_ready());
        // The hog's second execution queues first, then the victim's.
        assert!(hog2.poll_take(&mut cx).is_pending());
        assert!(victim.poll_take(&mut cx).is_pending());
        charge(&cpu, "hog", 1_000_000);
        hog.give_back(0);
        // The victim, who has used nothing, gets the turn although it came later.
        assert!(victim.poll_take(&mut cx).is_ready());
        assert!(hog2.poll_take(&mut cx).is_pending());
        victim.give_back(0);
        assert!(hog2.poll_take(&mut cx).is_ready());
    }

    #[test]
    fn an_idle_org_comes_back_at_the_floor_not_with_saved_credit() {
        let cpu = FairCpu::new(1);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut a = cpu.execution("a");
        assert!(a.poll_take(&mut cx).is_ready());
        charge(&cpu, "a", 5_000_000);
        a.give_back(0);
        assert!(a.poll_take(&mut cx).is_ready());
        // "late" never ran: it starts where the running org is, not at 0 (which would
        // hand it every turn until it had used 5 ms).
        let mut late = cpu.execution("late");
        assert!(cpu.used_ns("late") >= 5_000_000);
        assert_eq!(cpu.used_ns("late"), cpu.used_ns("a"));
        assert!(late.poll_take(&mut cx).is_pending());
        charge(&cpu, "a", 1);
        a.give_back(0);
        assert!(late.poll_take(&mut cx).is_ready());
        drop(late);
        drop(a);
    }

    #[test]
    fn a_waiter_dropped_or_granted_and_dropped_loses_no_turn() {
        let cpu = FairCpu::new(1);
        let (woken, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut a = cpu.execution("a");
        let mut b = cpu.execution("b");
        let mut c = cpu.execution("c");
        assert!(a.poll_take(&mut cx).is_ready());
        assert!(b.poll_take(&mut cx).is_pending());
        assert!(c.poll_take(&mut cx).is_pending());
        drop(a); // the turn goes to b (granted, woken) ...
        assert!(woken.0.load(Ordering::Relaxed) >= 1);
        drop(b); // ... which is dropped before it polls: the turn passes on to c.
        assert!(c.poll_take(&mut cx).is_ready());
        drop(c);
        let mut d = cpu.execution("d");
        assert!(d.poll_take(&mut cx).is_ready(), "every turn is back");
        assert_eq!(cpu.lock().free, 0);
        drop(d);
        assert_eq!(cpu.lock().free, 1);
    }
}
