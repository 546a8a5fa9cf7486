//! The fenced lease that makes one replica at a time the owner of its source lists' tails.
//!
//! The lease is a Redis string `<consumer>/<token>.<seq>` with a TTL, at a key named after
//! each source list alone (see [`crate::redis::keys::Keys::leases`]); the holder also holds
//! the legacy key of earlier releases, so that a rolling upgrade never lets an old and a new
//! replica move one source. All of them are taken together or not at all, so two deployments
//! whose source lists overlap never both move the shared list. Every acquisition draws a new random token, and every commit
//! carries the value it was built under; the commit script refuses a commit whose value no
//! longer matches. So a replica that stalled past its TTL, or a commit still queued on a
//! connection the daemon gave up on, can never trim what a newer holder has read.
//!
//! Each successful commit also moves `<seq>` one step, in the first source's lease (the
//! others keep the acquisition's value, which the commit checks by its prefix). Commits are pipelined, and each one
//! trims a count of items off the tail, so commit N+1 is only right after commit N: the chain
//! makes Redis refuse commit N+1 whenever commit N did not happen.
//!
//! Renewal runs apart from the mover, in the [`keeper`](super::keeper) task on a connection of
//! its own, so slow requests never hold it up; this type takes in the keeper's news.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};

use super::keeper::{Grant, KeeperHandle, News};
use crate::redis::keys::Keys;

const ACQUIRE: &str = include_str!("../redis/scripts/lease_acquire.lua");
const RELEASE: &str = include_str!("../redis/scripts/lease_release.lua");

/// This replica's view of the lease.
#[derive(Debug)]
pub struct Lease {
    /// Every lease key, the chain's first.
    keys: Vec<String>,
    consumer: String,
    ttl: Duration,
    held: Option<Held>,
    keeper: KeeperHandle,
    acquire: Script,
    release: Script,
}

#[derive(Debug, Clone)]
struct Held {
    /// `<consumer>/<token>.`: what every value of this acquisition starts with.
    prefix: String,
    /// Commits sent under this token so far.
    seq: u64,
    /// Until when the lease surely lives: the TTL counted from when the last successful
    /// acquisition or renewal was sent.
    valid_until: Instant,
}

impl Held {
    fn value(&self) -> String {
        format!("{}{}", self.prefix, self.seq)
    }
}

/// Where the lease stands after taking in the keeper's news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still held.
    Held,
    /// Another holder has it now (or nobody held it when the keeper looked).
    Lost,
    /// It ran out before a renewal was confirmed: the keeper cannot reach Redis, or its round
    /// trip takes too long for the TTL. A failure, not a takeover.
    Expired,
}

/// The outcome of an attempt to take the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This replica holds the lease now.
    Won,
    /// Another holder stands in the way: its lease value.
    HeldBy(String),
}

impl Lease {
    /// The lease on `keys`' source for `consumer`, living `ttl` without renewal, renewed by
    /// `keeper`.
    pub fn new(keys: &Keys, consumer: String, ttl: Duration, keeper: KeeperHandle) -> Self {
        Lease {
            keys: keys.leases().to_vec(),
            consumer,
            ttl,
            held: None,
            keeper,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
        }
    }

    /// The first source lease's key, for error messages.
    pub fn key(&self) -> &str {
        self.keys.first().map_or("", String::as_str)
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

    /// How long the lease surely lives on; zero when it is not held.
    pub fn remaining(&self) -> Duration {
        self.held.as_ref().map_or(Duration::ZERO, |h| {
            h.valid_until.saturating_duration_since(Instant::now())
        })
    }

    /// Take in the keeper's latest news.
    pub fn refresh(&mut self) -> Standing {
        let Some(held) = self.held.as_mut() else {
            return Standing::Lost;
        };
        match self.keeper.news() {
            News::Renewed { prefix, sent_at } if prefix == held.prefix => {
                held.valid_until = held.valid_until.max(sent_at + self.ttl);
            }
            News::Lost { prefix } if prefix == held.prefix => {
                self.forget();
                return Standing::Lost;
            }
            _ => {}
        }
        if self.remaining().is_zero() {
            self.forget();
            return Standing::Expired;
        }
        Standing::Held
    }

    /// How often a standby replica tries to take the lease.
    pub fn standby_interval(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Load the lease scripts on a new connection, so that taking and releasing the lease
    /// cost one round trip each (on a slow link the NOSCRIPT dance alone can outlast a short
    /// TTL). Best effort: without it each script loads itself on first use.
    pub async fn prepare(&self, conn: &mut MultiplexedConnection) {
        let mut pipe = redis::pipe();
        for script in [ACQUIRE, RELEASE] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script).ignore();
        }
        let _: Result<(), RedisError> = pipe.query_async(conn).await;
    }

    /// Forget the lease locally (after an error); the next acquisition draws a new token.
    pub fn forget(&mut self) {
        self.held = None;
        self.keeper.keep(None);
    }

    /// Try to take the lease with a fresh token.
    pub async fn acquire(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Acquired, RedisError> {
        let prefix = format!("{}/{:016x}.", self.consumer, fastrand::u64(..));
        let sent_at = Instant::now();
        let outcome: String = self
            .acquire
            .key(&self.keys)
            .arg(&self.consumer)
            .arg(format!("{prefix}0"))
            .arg(ttl_ms(self.ttl))
            .invoke_async(conn)
            .await?;
        if outcome != "ok" {
            self.forget();
            return Ok(Acquired::HeldBy(outcome));
        }
        self.keeper.keep(Some(Grant {
            prefix: prefix.clone(),
            acquired_at: sent_at,
        }));
        self.held = Some(Held {
            prefix,
            seq: 0,
            valid_until: sent_at + self.ttl,
        });
        Ok(Acquired::Won)
    }

    /// Give the lease up. Best effort: an error leaves it to expire.
    pub async fn release(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let held = self.held.take();
        self.keeper.keep(None);
        if let Some(held) = held {
            let _: i64 = self
                .release
                .key(&self.keys)
                .arg(&held.prefix)
                .invoke_async(conn)
                .await?;
        }
        Ok(())
    }
}

/// The consumer name in a lease value `<consumer>/<token>.<seq>`: everything before the last
/// `/` (the token never contains one). A value without `/` is shown whole.
pub fn lease_holder(value: &str) -> &str {
    value
        .rsplit_once('/')
        .map_or(value, |(consumer, _)| consumer)
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses 0).
pub(super) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
