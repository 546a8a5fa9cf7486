//! Back-pressure on the processing list (`REDIS_MAX_PROCESSING_QUEUE_LENGTH`).
//!
//! Redis itself enforces the limit: the commit script refuses a commit whose envelopes would
//! take the list past it, which holds even with several deployments feeding one list. The
//! mover avoids those refusals by keeping count of the room left: it learns the list's length
//! with an `LLEN` when it runs out of room (at once the first time, then every
//! [`CHECK_EVERY`] while the list stays full), and sends no more envelopes than fit. Waiting
//! messages stay in the source; nothing is held in memory.

use std::time::{Duration, Instant};

/// How often a paused mover looks at the processing list's length: no busy polling, and flow
/// resumes well within a second of the transformer catching up.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What the mover knows about the room on the processing list.
#[derive(Debug)]
pub struct BackPressure {
    limit: usize,
    /// Envelopes that still fit, by the mover's count; `None` until first measured (the
    /// script guards meanwhile).
    room: Option<usize>,
    /// Since when the list has been found full (the observable paused state).
    paused_since: Option<Instant>,
    /// When the next length check may run, while the list stays full.
    next_check: Option<Instant>,
}

/// A change of the paused state, to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The list is full: the mover pauses.
    Paused,
    /// Room again, after this long paused.
    Resumed(Duration),
}

impl BackPressure {
    /// No room measured yet.
    pub fn new(limit: usize) -> Self {
        BackPressure {
            limit,
            room: None,
            paused_since: None,
            next_check: None,
        }
    }

    /// The limit, for the commit script.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Most envelopes the next commit may carry (`None`: not known, the script guards).
    pub fn cap(&self) -> Option<usize> {
        self.room
    }

    /// Whether the list has been found full.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// `n` envelopes were sent.
    pub fn sent(&mut self, n: usize) {
        self.room = self.room.map(|r| r.saturating_sub(n));
    }

    /// Whether the mover should measure the list now: it ran out of room, and the last check
    /// (if the list was full then) is [`CHECK_EVERY`] ago.
    pub fn check_due(&self, now: Instant) -> bool {
        self.room == Some(0) && self.next_check.is_none_or(|at| now >= at)
    }

    /// When the next check is due, if the mover waits for one.
    pub fn check_in(&self, now: Instant) -> Option<Duration> {
        (self.room == Some(0)).then(|| {
            self.next_check
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
        })
    }

    /// The commit script refused a commit: the list is full.
    pub fn refused(&mut self, now: Instant) -> Option<Change> {
        self.room = Some(0);
        self.next_check = Some(now + CHECK_EVERY);
        self.pause(now)
    }

    /// The list holds `len` envelopes now.
    pub fn measured(&mut self, len: usize, now: Instant) -> Option<Change> {
        let room = self.limit.saturating_sub(len);
        self.room = Some(room);
        if room == 0 {
            self.next_check = Some(now + CHECK_EVERY);
            return self.pause(now);
        }
        self.next_check = None;
        self.paused_since
            .take()
            .map(|since| Change::Resumed(now.saturating_duration_since(since)))
    }

    /// The lease is gone (lost, or the session failed): whoever holds it next measures the
    /// list itself. Ends a pause, as this replica no longer waits on the list.
    pub fn forget(&mut self, now: Instant) -> Option<Change> {
        self.room = None;
        self.next_check = None;
        self.paused_since
            .take()
            .map(|since| Change::Resumed(now.saturating_duration_since(since)))
    }

    /// Measure at once (a lease was just taken), so the first fill is counted down rather
    /// than refused.
    pub fn measure_now(&mut self) {
        if self.room.is_none() {
            self.room = Some(0);
            self.next_check = None;
        }
    }

    fn pause(&mut self, now: Instant) -> Option<Change> {
        if self.paused_since.is_some() {
            return None;
        }
        self.paused_since = Some(now);
        Some(Change::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_counted_down_then_measured() {
        let t0 = Instant::now();
        let mut b = BackPressure::new(10);
        assert_eq!(b.cap(), None);
        assert!(!b.check_due(t0));
        assert_eq!(b.measured(4, t0), None);
        assert_eq!(b.cap(), Some(6));
        b.sent(6);
        // Out of room: measure at once, not after a pause.
        assert!(b.check_due(t0));
        assert_eq!(b.measured(10, t0), Some(Change::Paused));
        assert!(b.is_paused());
        // Full: the next look is a while later, and pausing is reported once.
        assert!(!b.check_due(t0 + Duration::from_millis(100)));
        assert_eq!(b.check_in(t0), Some(CHECK_EVERY));
        assert!(b.check_due(t0 + CHECK_EVERY));
        assert_eq!(b.measured(10, t0 + CHECK_EVERY), None);
        let later = t0 + 4 * CHECK_EVERY;
        assert_eq!(b.measured(3, later), Some(Change::Resumed(4 * CHECK_EVERY)));
        assert_eq!(b.cap(), Some(7));
        assert!(!b.is_paused());
    }

    #[test]
    fn a_refusal_pauses_until_a_measure_finds_room() {
        let t0 = Instant::now();
        let mut b = BackPressure::new(5);
        assert_eq!(b.refused(t0), Some(Change::Paused));
        assert_eq!(b.refused(t0), None);
        assert_eq!(b.cap(), Some(0));
        assert!(!b.check_due(t0));
        assert_eq!(
            b.measured(0, t0 + CHECK_EVERY),
            Some(Change::Resumed(CHECK_EVERY))
        );
        assert_eq!(b.cap(), Some(5));
    }

    #[test]
    fn a_new_lease_measures_at_once_and_a_lost_one_ends_the_pause() {
        let t0 = Instant::now();
        let mut b = BackPressure::new(5);
        // Taken: measure before the first commit, so the first fill is counted, not refused.
        b.measure_now();
        assert!(b.check_due(t0));
        assert_eq!(b.cap(), Some(0));
        assert_eq!(b.measured(5, t0), Some(Change::Paused));
        // Lost while paused: the pause ends, and nothing is known any more.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            b.forget(later),
            Some(Change::Resumed(Duration::from_secs(3)))
        );
        assert!(!b.is_paused());
        assert_eq!(b.cap(), None);
        assert_eq!(b.forget(later), None);
    }
}
