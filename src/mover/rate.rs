//! The output rate limit (`REDIS_MAX_BATCHES_PER_SECOND`): a token bucket of envelopes.
//!
//! Each envelope takes a token; tokens come back at the configured rate, up to the burst.
//! Waiting messages stay in Redis (they are only peeked), so a limited daemon holds nothing
//! back in memory, and a partial batch whose deadline passed leaves as soon as a token does.

use std::time::{Duration, Instant};

use crate::settings::RateLimit;

/// Envelopes allowed now and later.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket for `limit`, as of `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let burst = limit.burst.get() as f64;
        TokenBucket {
            per_second: limit.per_second,
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
    }

    /// Whole envelopes that may leave now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        // A count of at most `burst` tokens, which settings cap at a million.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = self.tokens.floor().max(0.0) as usize;
        whole
    }

    /// `n` envelopes were refused by Redis after all: their tokens come back.
    pub fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.burst);
    }

    /// `n` envelopes were sent.
    pub fn spend(&mut self, n: usize, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// How long until the next whole token.
    pub fn next_in(&mut self, now: Instant) -> Duration {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::try_from_secs_f64(missing / self.per_second).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn limit(per_second: f64, burst: usize) -> RateLimit {
        RateLimit {
            per_second,
            burst: NonZeroUsize::new(burst).unwrap(),
        }
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(2.0, 3), t0);
        assert_eq!(b.available(t0), 3);
        b.spend(3, t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.next_in(t0), Duration::from_millis(500));
        assert_eq!(b.available(t0 + Duration::from_millis(499)), 0);
        assert_eq!(b.available(t0 + Duration::from_millis(500)), 1);
        // Never more than the burst, however long it waits.
        assert_eq!(b.available(t0 + Duration::from_secs(100)), 3);
    }

    #[test]
    fn fractional_rates_wait_whole_seconds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(0.5, 1), t0);
        b.spend(1, t0);
        assert_eq!(b.next_in(t0), Duration::from_secs(2));
        assert_eq!(b.available(t0 + Duration::from_secs(1)), 0);
        assert_eq!(b.available(t0 + Duration::from_secs(2)), 1);
    }

    /// Review 3: `REDIS_MAX_BATCHES_PER_SECOND=1e-20` passes validation (finite, above 0),
    /// but once the bucket is empty `next_in` asks `Duration::from_secs_f64(1e20)`, which
    /// overflows a Duration and panics: the mover task dies after its first envelope.
    #[test]
    fn a_tiny_accepted_rate_does_not_panic_once_the_bucket_is_empty() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(1e-20, 1), t0);
        assert_eq!(b.available(t0), 1);
        b.spend(1, t0);
        let next = std::panic::catch_unwind(move || b.next_in(t0));
        assert!(
            next.is_ok(),
            "next_in panicked for an accepted rate of 1e-20/s"
        );
    }

    #[test]
    fn refused_envelopes_give_their_tokens_back_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(1.0, 2), t0);
        b.spend(2, t0);
        assert_eq!(b.available(t0), 0);
        b.refund(2);
        assert_eq!(b.available(t0), 2);
        b.refund(5);
        assert_eq!(b.available(t0), 2);
    }
}
