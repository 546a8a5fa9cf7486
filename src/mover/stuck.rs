//! Telling a stuck mover from a waiting one.
//!
//! A mover whose commits keep failing while a backlog waits is stuck: retrying will not help
//! until an operator acts (a value Redis refuses, a broken ACL, a foreign writer that never
//! stops). Waiting on purpose (standing by, an empty source, scheduled mode) never counts.

use std::time::{Duration, Instant};

/// Watches failures and progress; pure, so its timing is unit-tested.
#[derive(Debug)]
pub(super) struct StuckWatch {
    after: Duration,
    failing_since: Option<Instant>,
    stuck: bool,
}

impl StuckWatch {
    /// A watch that calls the mover stuck after `after` of failures with a backlog.
    pub(super) fn new(after: Duration) -> Self {
        StuckWatch {
            after,
            failing_since: None,
            stuck: false,
        }
    }

    /// A commit or a session failed at `now`. Returns how long the mover has been failing
    /// when this failure makes it stuck (once per episode).
    pub(super) fn failed(&mut self, now: Instant, backlog: bool) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert(now);
        let failing_for = now.saturating_duration_since(since);
        if self.stuck || !backlog || failing_for < self.after {
            return None;
        }
        self.stuck = true;
        Some(failing_for)
    }

    /// Redis answered and the mover moved on. Returns whether it had been stuck.
    pub(super) fn progressed(&mut self) -> bool {
        self.failing_since = None;
        std::mem::take(&mut self.stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_only_after_failing_that_long_with_a_backlog() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = StuckWatch::new(Duration::from_secs(10));
        assert_eq!(w.failed(s(0), true), None);
        assert_eq!(w.failed(s(9), true), None);
        // Nothing waiting: failing, but nothing is held up.
        assert_eq!(w.failed(s(11), false), None);
        assert_eq!(w.failed(s(12), true), Some(Duration::from_secs(12)));
        // Reported once per episode.
        assert_eq!(w.failed(s(20), true), None);
        assert!(w.progressed());
        assert!(!w.progressed());
        // A new episode starts its own clock.
        assert_eq!(w.failed(s(30), true), None);
        assert_eq!(w.failed(s(39), true), None);
        assert_eq!(w.failed(s(40), true), Some(Duration::from_secs(10)));
    }

    #[test]
    fn progress_between_failures_resets_the_clock() {
        let t0 = Instant::now();
        let mut w = StuckWatch::new(Duration::from_secs(5));
        assert_eq!(w.failed(t0, true), None);
        assert!(!w.progressed());
        assert_eq!(w.failed(t0 + Duration::from_secs(6), true), None);
    }
}
