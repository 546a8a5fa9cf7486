//! The fenced lease that makes one replica at a time the owner of a source list's tail.
//!
//! The lease is a Redis string `<consumer>/<token>.<seq>` with a TTL. Every acquisition draws
//! a new random token, and every commit carries the value it was built under; the commit
//! script refuses a commit whose value no longer matches. So a replica that stalled past its
//! TTL, or a commit still queued on a connection the daemon gave up on, can never trim what a
//! newer holder has read.
//!
//! Each successful commit also moves `<seq>` one step. Commits are pipelined, and each one
//! trims a count of items off the tail, so commit N+1 is only right after commit N: the chain
//! makes Redis refuse commit N+1 whenever commit N did not happen.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};

const ACQUIRE: &str = include_str!("../redis/scripts/lease_acquire.lua");
const RENEW: &str = include_str!("../redis/scripts/lease_renew.lua");
const RELEASE: &str = include_str!("../redis/scripts/lease_release.lua");

/// This replica's view of the lease.
#[derive(Debug)]
pub struct Lease {
    key: String,
    consumer: String,
    ttl: Duration,
    held: Option<Held>,
    acquire: Script,
    renew: Script,
    release: Script,
}

#[derive(Debug, Clone)]
struct Held {
    /// `<consumer>/<token>`.
    base: String,
    /// Commits sent under this token so far.
    seq: u64,
    renewed_at: Instant,
}

impl Held {
    fn value(&self) -> String {
        format!("{}.{}", self.base, self.seq)
    }
}

impl Lease {
    /// The lease at `key` for `consumer`, living `ttl` without renewal.
    pub fn new(key: String, consumer: String, ttl: Duration) -> Self {
        Lease {
            key,
            consumer,
            ttl,
            held: None,
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        }
    }

    /// The value the lease holds once every commit sent so far has run.
    pub fn value(&self) -> Option<String> {
        self.held.as_ref().map(Held::value)
    }

    /// For the next commit: the value it must find, and the value it leaves behind.
    pub fn advance(&mut self) -> Option<(String, String)> {
        let held = self.held.as_mut()?;
        let before = held.value();
        held.seq += 1;
        Some((before, held.value()))
    }

    /// Whether the lease is believed held.
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Time until the next renewal is due (a third of the TTL after the last one).
    pub fn renew_in(&self) -> Option<Duration> {
        self.held
            .as_ref()
            .map(|h| (h.renewed_at + self.ttl / 3).saturating_duration_since(Instant::now()))
    }

    /// How often a standby replica tries to take the lease.
    pub fn standby_interval(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Forget the lease locally (after an error); the next acquisition draws a new token.
    pub fn forget(&mut self) {
        self.held = None;
    }

    /// Try to take the lease with a fresh token. `Ok(true)` when this replica now holds it.
    pub async fn acquire(&mut self, conn: &mut MultiplexedConnection) -> Result<bool, RedisError> {
        let base = format!("{}/{:016x}", self.consumer, fastrand::u64(..));
        let value = format!("{base}.0");
        let sent_at = Instant::now();
        let won: i64 = self
            .acquire
            .key(&self.key)
            .arg(&self.consumer)
            .arg(&value)
            .arg(ttl_ms(self.ttl))
            .invoke_async(conn)
            .await?;
        self.held = (won == 1).then_some(Held {
            base,
            seq: 0,
            renewed_at: sent_at,
        });
        Ok(self.held.is_some())
    }

    /// Extend the lease. `Ok(false)` when it was lost (another replica holds it now). Call it
    /// only when no commit is in flight, so the value it checks is the one Redis holds.
    pub async fn renew(&mut self, conn: &mut MultiplexedConnection) -> Result<bool, RedisError> {
        let Some(held) = self.held.as_mut() else {
            return Ok(false);
        };
        let sent_at = Instant::now();
        let kept: i64 = self
            .renew
            .key(&self.key)
            .arg(held.value())
            .arg(ttl_ms(self.ttl))
            .invoke_async(conn)
            .await?;
        if kept == 1 {
            held.renewed_at = sent_at;
        } else {
            self.held = None;
        }
        Ok(kept == 1)
    }

    /// Give the lease up. Best effort: an error leaves it to expire.
    pub async fn release(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        if let Some(held) = self.held.take() {
            let _: i64 = self
                .release
                .key(&self.key)
                .arg(held.value())
                .invoke_async(conn)
                .await?;
        }
        Ok(())
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
