//! Liveness and readiness state shared by the mover, the scheduler and the HTTP server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Readiness inputs. Cheap to clone; all clones share the same flags.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    redis_reachable: AtomicBool,
    mover_running: AtomicBool,
    /// Why the mover is stuck, while it is.
    stuck: Mutex<Option<String>>,
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

    /// Record that the mover is stuck, and why (`None`: it moves again).
    pub fn set_mover_stuck(&self, cause: Option<String>) {
        *self.stuck_cause() = cause;
    }

    /// Why the mover is stuck, if it is.
    pub fn mover_stuck(&self) -> Option<String> {
        self.stuck_cause().clone()
    }

    fn stuck_cause(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain value; a poisoned lock still holds a valid one.
        self.inner
            .stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Ready: Redis reachable, the mover running and not stuck.
    pub fn ready(&self) -> bool {
        self.redis_reachable() && self.mover_running() && self.mover_stuck().is_none()
    }
}
