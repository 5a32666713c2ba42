//! When the writer waits for more work before its next group.
//!
//! A commit's cost is mostly fixed: the log frames of the pages it changed, its sync, the
//! page cache's end-of-transaction work. Under a steady stream a commit holds what
//! arrived during the last one, a round or two, and the writer's CPU goes to commits
//! rather than to jobs. So while one org writes a stream of more than
//! [`STREAM_ROWS_PER_S`], groups begin at most every [`LINGER`]: after a short commit
//! during which more work arrived, the writer waits out the rest of the period.
//! `sluice bench throughput` ran about a third faster (BENCHMARKS.md, "Fewer, larger
//! commits under a steady stream").
//!
//! Never while several orgs write: then the writer is shared for the light orgs' sake
//! (`sharing`), and a light org's event would wait for company it does not need; the
//! first write of another org ends a wait under way (the writer receives while it
//! waits). Never for a write that arrives to an idle writer, or behind a commit that
//! took the whole period: those already commit at once.

use std::time::{Duration, Instant};

/// Under a steady stream, groups begin at most this often. A job's end becomes durable
/// up to this much later; 1 ms gave about 45,000 jobs/s, 2 ms about 50,000 (36,000
/// without), measured alternately on the 2-core machine.
pub(super) const LINGER: Duration = Duration::from_millis(2);

/// Rows a second (new jobs, transitions, record changes) above which the writes are a
/// stream worth lingering for: at this rate a period gathers about ten.
pub(super) const STREAM_ROWS_PER_S: f64 = 5_000.0;

/// The window the stream's rate is measured over.
const WINDOW: Duration = Duration::from_millis(100);

pub(super) struct Linger {
    /// When the last group began.
    last_began: Instant,
    window_began: Instant,
    window_rows: usize,
    /// Rows a second over the last whole window.
    rate: f64,
}

impl Linger {
    pub(super) fn new(now: Instant) -> Linger {
        Linger { last_began: now, window_began: now, window_rows: 0, rate: 0.0 }
    }

    /// A group of `rows` rows begins at `now`.
    pub(super) fn began(&mut self, rows: usize, now: Instant) {
        self.last_began = now;
        let elapsed = now.saturating_duration_since(self.window_began);
        if elapsed >= WINDOW {
            self.rate = self.window_rows as f64 / elapsed.as_secs_f64();
            self.window_began = now;
            self.window_rows = 0;
        }
        self.window_rows += rows;
    }

    /// How long to wait before the next group: the rest of the period, if work arrived
    /// while the last group was written (`arrived`), one org writes (`!shared`) and it
    /// writes a stream; otherwise nothing.
    pub(super) fn wait(&self, arrived: bool, shared: bool, now: Instant) -> Option<Duration> {
        let until = self.last_began + LINGER;
        (arrived && !shared && self.rate >= STREAM_ROWS_PER_S && until > now).then(|| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linger that saw `rows` rows a second over a whole window, its last group begun at
    /// the window's end.
    fn streaming(rows_per_s: usize) -> (Linger, Instant) {
        let start = Instant::now();
        let mut linger = Linger::new(start);
        let rows = rows_per_s / 10;
        linger.began(rows, start);
        let end = start + WINDOW;
        linger.began(0, end);
        (linger, end)
    }

    #[test]
    fn a_steady_stream_of_one_org_waits_out_the_rest_of_the_period() {
        let (linger, began) = streaming(40_000);
        let soon = began + Duration::from_micros(300);
        assert_eq!(linger.wait(true, false, soon), Some(LINGER - Duration::from_micros(300)));
        // A commit that took the whole period already carried a large group.
        assert_eq!(linger.wait(true, false, began + LINGER), None);
        assert_eq!(linger.wait(true, false, began + LINGER * 3), None);
    }

    #[test]
    fn a_lone_write_a_slow_stream_or_a_shared_writer_commits_at_once() {
        let (linger, began) = streaming(40_000);
        let soon = began + Duration::from_micros(300);
        // Nothing arrived during the last commit: the next write is alone.
        assert_eq!(linger.wait(false, false, soon), None);
        // Several orgs write: a light org's event never waits for company.
        assert_eq!(linger.wait(true, true, soon), None);
        // A few hundred rows a second (a tenant's steady events) are no stream.
        let (slow, began) = streaming(400);
        assert_eq!(slow.wait(true, false, began + Duration::from_micros(300)), None);
    }

    #[test]
    fn the_rate_falls_when_the_stream_stops() {
        let (mut linger, began) = streaming(40_000);
        // One lone group ten seconds later: the window's rate is its rows over ten seconds.
        let later = began + Duration::from_secs(10);
        linger.began(1, later);
        linger.began(1, later + WINDOW);
        assert_eq!(linger.wait(true, false, later + WINDOW + Duration::from_micros(10)), None);
    }
}
