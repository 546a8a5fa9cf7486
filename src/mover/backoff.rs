//! Capped exponential backoff with "equal jitter" (each delay drawn from the upper half of its
//! step), for reconnecting to Redis.

use std::time::Duration;

use crate::settings::RetrySettings;

/// Delays between attempts: doubling from `initial` up to `max`, each drawn uniformly from
/// the upper half of the current step so replicas do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    settings: RetrySettings,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(settings: RetrySettings) -> Self {
        Backoff {
            settings,
            attempt: 0,
        }
    }

    /// Number of failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Record a failure and return the delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .settings
            .initial_delay
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.settings.max_delay);
        self.attempt = self.attempt.saturating_add(1);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Record a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(RetrySettings {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            stuck_after: Duration::from_secs(30),
        });
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(d[7] >= Duration::from_millis(500));
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert_eq!(b.attempts(), 0);
    }
}
