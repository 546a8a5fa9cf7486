//! Liveness and readiness state shared by the mover, the scheduler and the HTTP server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Readiness inputs. Cheap to clone; all clones share the same flags.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    redis_reachable: AtomicBool,
    mover_running: AtomicBool,
}

impl Health {
    /// Record whether the last check reached Redis.
    pub fn set_redis_reachable(&self, up: bool) {
        self.inner.redis_reachable.store(up, Ordering::Relaxed);
    }

    /// Record whether the mover loop is running (holding the lease or standing by).
    pub fn set_mover_running(&self, running: bool) {
        self.inner.mover_running.store(running, Ordering::Relaxed);
    }

    /// Whether Redis answered the last check.
    pub fn redis_reachable(&self) -> bool {
        self.inner.redis_reachable.load(Ordering::Relaxed)
    }

    /// Whether the mover loop is running.
    pub fn mover_running(&self) -> bool {
        self.inner.mover_running.load(Ordering::Relaxed)
    }

    /// Ready: Redis reachable and the mover running.
    pub fn ready(&self) -> bool {
        self.redis_reachable() && self.mover_running()
    }
}
