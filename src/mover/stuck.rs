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
    /// A commit failed since the last one that landed: a purposeful wait then proves nothing
    /// (a few messages wait for their deadline, then their commit fails again).
    commit_failed: bool,
}

impl StuckWatch {
    /// A watch that calls the mover stuck after `after` of failures with a backlog.
    pub(super) fn new(after: Duration) -> Self {
        StuckWatch {
            after,
            failing_since: None,
            stuck: false,
            commit_failed: false,
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

    /// A commit (not just a connection or a read) failed.
    pub(super) fn commit_failed(&mut self) {
        self.commit_failed = true;
    }

    /// A commit landed, or Redis answered with nothing to commit (an empty source, standing
    /// by). Returns whether the mover had been stuck.
    pub(super) fn progressed(&mut self) -> bool {
        self.failing_since = None;
        self.commit_failed = false;
        std::mem::take(&mut self.stuck)
    }

    /// The mover sent all it could and waits on purpose (for messages, a partial batch's
    /// deadline, a tick). Healthy, unless a commit failed since the last one landed. Returns
    /// whether the mover had been stuck.
    pub(super) fn waited(&mut self) -> bool {
        if self.commit_failed {
            return false;
        }
        self.progressed()
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

    #[test]
    fn a_purposeful_wait_clears_the_clock_only_when_no_commit_failed() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = StuckWatch::new(Duration::from_secs(5));
        // Blips while a partial batch waits: no commit failed, the waits are healthy.
        assert_eq!(w.failed(s(0), true), None);
        assert!(!w.waited());
        assert_eq!(w.failed(s(6), true), None);
        // A commit that keeps failing between waits for its deadline: stuck all the same.
        let mut w = StuckWatch::new(Duration::from_secs(5));
        w.commit_failed();
        assert_eq!(w.failed(s(0), true), None);
        assert!(!w.waited());
        w.commit_failed();
        assert_eq!(w.failed(s(6), true), Some(Duration::from_secs(6)));
        // Until a commit lands.
        assert!(w.progressed());
        assert!(!w.waited());
    }
}
