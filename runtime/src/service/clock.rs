//! The service's clock, injected so that time-based rules (postponement, throughput
//! windows, loop-detection hours) are tested by moving a clock, not by sleeping.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::jobs::Millis;

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> Millis;

    /// The database's clock read `database` at local time `local` (several nodes: see
    /// [`DatabaseClock`]). Other clocks ignore it.
    fn observe_database(&self, _database: Millis, _local: Millis) {}
}

/// The machine's clock corrected to the database's (several nodes share one time for
/// throughput windows and leases): the offset is measured at every heartbeat. It never
/// goes back, even when a new measurement lowers the offset: times a node stores (a
/// job's start, then its end; a lease's release after both) keep their order.
/// (Until the first measurement it is the machine's clock, and remembers nothing: a
/// machine ahead of the database must not hold the corrected clock back.)
#[derive(Default)]
pub struct DatabaseClock {
    offset: AtomicI64,
    observed: AtomicBool,
    latest: AtomicI64,
}

impl Clock for DatabaseClock {
    fn now(&self) -> Millis {
        let now = SystemClock.now() + self.offset.load(Ordering::Relaxed);
        if !self.observed.load(Ordering::Acquire) {
            return now;
        }
        let latest = self.latest.fetch_max(now, Ordering::Relaxed);
        now.max(latest)
    }

    fn observe_database(&self, database: Millis, local: Millis) {
        self.offset.store(database - local, Ordering::Relaxed);
        self.observed.store(true, Ordering::Release);
    }
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        ManualClock(AtomicI64::new(start))
    }

    pub fn advance(&self, by: Millis) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_clock_follows_the_database_and_never_goes_back() {
        let clock = DatabaseClock::default();
        let local = SystemClock.now();
        // A machine an hour ahead of the database, read before the first measurement.
        clock.observe_database(local + 3_600_000, local);
        assert!(clock.now() >= local + 3_600_000, "corrected forward");
        let before = clock.now();
        clock.observe_database(local, local);
        assert!(clock.now() >= before, "a lower offset does not take it back");

        let fresh = DatabaseClock::default();
        let _ = fresh.now();
        fresh.observe_database(local - 3_600_000, local);
        assert!(fresh.now() < local, "times read before the first measurement do not hold it");
    }
}
