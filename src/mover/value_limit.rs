//! The largest value the server accepts (`proto-max-bulk-len`), which no envelope or
//! dead-letter record may pass: Redis refuses such a command and closes the connection, and a
//! commit retried forever would wedge the source.
//!
//! Read with `CONFIG GET` when the ACL allows it; otherwise `REDIS_PROTO_MAX_BULK_LEN` says.
//! If that setting is too high (a managed service with a lower limit), a request carrying a
//! large value fails every time, its connection closed by Redis: after two such failures in a
//! row the limit is lowered below that value, so the next plan sends the offending message by
//! reference instead. A broken connection can have other causes (a Redis restart at the wrong
//! moment), so a learned limit lapses after [`LEARNED_FOR`] and is learned again if it was
//! right.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// Redis's smallest `proto-max-bulk-len`: a value this small is never refused for its size.
const SMALLEST_SERVER_LIMIT: usize = 1024 * 1024;

/// Consecutive failures of requests carrying a large value before the limit is lowered.
const FAILURES_TO_LEARN: u32 = 2;

/// How long a learned limit holds before the setting applies again.
pub(super) const LEARNED_FOR: Duration = Duration::from_secs(600);

/// Where the current limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// `CONFIG GET proto-max-bulk-len`.
    Server,
    /// `REDIS_PROTO_MAX_BULK_LEN`.
    Setting,
    /// Lowered after requests carrying a value that large kept failing, at this instant.
    Learned(Instant),
}

/// The value limit and the evidence about it.
#[derive(Debug)]
pub(super) struct ValueLimit {
    bytes: usize,
    /// The setting, to fall back on when a learned limit lapses.
    setting: usize,
    origin: Origin,
    /// Consecutive failures of requests that carried a value above the smallest limit.
    large_failures: u32,
    /// The largest value of the last such failure: a refusal for size fails the same commit
    /// (the same values) again, while a Redis restart or a killed connection hits whatever
    /// commit is in flight.
    last_failed: usize,
}

impl ValueLimit {
    pub(super) fn new(setting: usize) -> Self {
        ValueLimit {
            bytes: setting,
            setting,
            origin: Origin::Setting,
            large_failures: 0,
            last_failed: 0,
        }
    }

    /// The limit in bytes at `now`.
    pub(super) fn bytes(&mut self, now: Instant) -> usize {
        if let Origin::Learned(at) = self.origin {
            if now.saturating_duration_since(at) >= LEARNED_FOR {
                self.bytes = self.setting;
                self.origin = Origin::Setting;
            }
        }
        self.bytes
    }

    /// Read the server's limit. Best effort: without permission (or on any error) the
    /// setting, or what was learned, stays.
    pub(super) async fn read(&mut self, conn: &mut MultiplexedConnection) {
        let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("proto-max-bulk-len")
            .query_async(conn)
            .await;
        match reply
            .ok()
            .and_then(|r| r.get(1).and_then(|v| v.parse::<usize>().ok()))
        {
            Some(bytes) => {
                self.bytes = bytes;
                self.origin = Origin::Server;
            }
            None => tracing::debug!(
                message = "cannot read proto-max-bulk-len; using the setting",
                limit = self.bytes,
                origin = ?self.origin,
            ),
        }
    }

    /// A commit landed (a plain read proves nothing about values).
    pub(super) fn request_succeeded(&mut self) {
        self.large_failures = 0;
        self.last_failed = 0;
    }

    /// A request whose largest value was `largest` bytes failed with a broken connection.
    /// Returns the new limit when this failure lowers it.
    pub(super) fn request_failed(&mut self, largest: usize) -> Option<usize> {
        if largest <= SMALLEST_SERVER_LIMIT || largest > self.bytes {
            self.large_failures = 0;
            return None;
        }
        if largest != self.last_failed {
            self.large_failures = 0;
            self.last_failed = largest;
        }
        self.large_failures += 1;
        if self.large_failures < FAILURES_TO_LEARN {
            return None;
        }
        self.large_failures = 0;
        self.bytes = (largest - 1).max(SMALLEST_SERVER_LIMIT);
        self.origin = Origin::Learned(Instant::now());
        Some(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_with_a_large_value_lower_the_limit_below_it() {
        let mut l = ValueLimit::new(512 << 20);
        // Small values are never refused for size: their failures teach nothing.
        assert_eq!(l.request_failed(1000), None);
        assert_eq!(l.request_failed(1000), None);
        assert_eq!(l.request_failed(3 << 20), None);
        assert_eq!(l.request_failed(3 << 20), Some((3 << 20) - 1));
        let now = Instant::now();
        assert_eq!(l.bytes(now), (3 << 20) - 1);
        assert!(matches!(l.origin, Origin::Learned(_)));
        // A learned limit lapses.
        assert_eq!(l.bytes(now + LEARNED_FOR), 512 << 20);
        assert_eq!(l.origin, Origin::Setting);
        l.request_failed(3 << 20);
        l.request_failed(3 << 20);
        // A success in between starts the count again.
        assert_eq!(l.request_failed(2 << 20), None);
        l.request_succeeded();
        assert_eq!(l.request_failed(2 << 20), None);
        assert_eq!(l.request_failed(2 << 20), Some((2 << 20) - 1));
        // Failures of requests with different values (a restart, a killed connection) do not
        // add up.
        let mut l = ValueLimit::new(512 << 20);
        assert_eq!(l.request_failed(5 << 20), None);
        assert_eq!(l.request_failed(6 << 20), None);
        assert_eq!(l.request_failed(7 << 20), None);
        assert_eq!(l.request_failed(7 << 20), Some((7 << 20) - 1));
        // Never below the smallest limit a server can have.
        let mut l = ValueLimit::new(512 << 20);
        l.request_failed(SMALLEST_SERVER_LIMIT + 1);
        assert_eq!(
            l.request_failed(SMALLEST_SERVER_LIMIT + 1),
            Some(SMALLEST_SERVER_LIMIT)
        );
    }
}
