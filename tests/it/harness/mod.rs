//! Test harness shared by the integration tests: a real `redis-server` on a free port that
//! stops on drop, a random key prefix per test, the daemon binary run with a clean
//! environment, the exactly-once audit of what it produced, and a TCP proxy that adds
//! latency or faults between the daemon and Redis, a private network namespace where
//! `iptables` makes packet loss, partitions and resets, the Python reference transformer as
//! a consumer process for the batch ledger, and a Sentinel deployment (primary, replica,
//! three sentinels).

mod audit;
mod chaos;
mod daemon;
mod http;
mod netns;
mod proxy;
mod queues;
mod redis_server;
mod sentinel;
mod tls;
mod transformer;

pub(crate) use audit::*;
pub(crate) use chaos::*;
pub(crate) use daemon::*;
pub(crate) use http::*;
pub(crate) use netns::*;
pub(crate) use proxy::*;
pub(crate) use queues::*;
pub(crate) use redis_server::*;
pub(crate) use sentinel::*;
pub(crate) use tls::*;
pub(crate) use transformer::*;

use std::process::Command;
use std::time::{Duration, Instant};

/// Send a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, `INT`).
pub(crate) fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Poll `f` every 10 ms until it is true or `limit` passes.
pub(crate) fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A random duration between `lo` and `hi` milliseconds.
pub(crate) fn random_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(fastrand::u64(lo..=hi))
}
