//! What the daemon tells about itself: [`events`] (one log line and its metric together),
//! [`metrics`] (and the batch [`ledger`]'s), [`health`] (readiness flags), the [`http`] probes and
//! [`logging`] set-up.

pub mod events;
pub mod health;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod metrics;

/// `d` in whole milliseconds, for log fields; saturates instead of truncating.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
