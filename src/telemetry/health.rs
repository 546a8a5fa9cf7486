//! Liveness and readiness state shared by the movers, the scheduler and the HTTP server.
//!
//! Each mover has its own flags (running, stuck); a daemon with many pipelines is ready only
//! while every one of its movers runs and none is stuck.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Readiness inputs. Cheap to clone; all clones share the same flags.
#[derive(Debug, Clone)]
pub struct Health {
    shared: Arc<Shared>,
    /// The flags this handle's mover sets.
    mover: Arc<MoverFlags>,
}

#[derive(Debug, Default)]
struct Shared {
    redis_reachable: AtomicBool,
    /// Every mover's flags; readiness needs all of them.
    movers: Mutex<Vec<Arc<MoverFlags>>>,
}

#[derive(Debug, Default)]
struct MoverFlags {
    /// The pipeline's name in a stuck cause; empty for a single-pipeline daemon.
    pipeline: String,
    running: AtomicBool,
    /// Why the mover is stuck, while it is.
    stuck: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        let mover = Arc::new(MoverFlags::default());
        let shared = Shared {
            redis_reachable: AtomicBool::new(false),
            movers: Mutex::new(vec![Arc::clone(&mover)]),
        };
        Health {
            shared: Arc::new(shared),
            mover,
        }
    }
}

/// A plain value behind a lock; a poisoned lock still holds a valid one.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Health {
    /// One handle per pipeline, in the order given; from now on readiness needs every one of
    /// their movers (and no longer this handle's own).
    pub fn pipelines<S: AsRef<str>>(&self, names: &[S]) -> Vec<Health> {
        let movers: Vec<Arc<MoverFlags>> = names
            .iter()
            .map(|name| {
                Arc::new(MoverFlags {
                    pipeline: name.as_ref().to_owned(),
                    ..MoverFlags::default()
                })
            })
            .collect();
        *lock(&self.shared.movers) = movers.clone();
        movers
            .into_iter()
            .map(|mover| Health {
                shared: Arc::clone(&self.shared),
                mover,
            })
            .collect()
    }

    /// Record whether the last check reached Redis.
    pub fn set_redis_reachable(&self, up: bool) {
        self.shared.redis_reachable.store(up, Ordering::Relaxed);
    }

    /// Record whether this handle's mover loop is running (holding the lease or standing by).
    pub fn set_mover_running(&self, running: bool) {
        self.mover.running.store(running, Ordering::Relaxed);
    }

    /// Whether Redis answered the last check.
    pub fn redis_reachable(&self) -> bool {
        self.shared.redis_reachable.load(Ordering::Relaxed)
    }

    /// Whether every mover loop is running.
    pub fn mover_running(&self) -> bool {
        lock(&self.shared.movers)
            .iter()
            .all(|m| m.running.load(Ordering::Relaxed))
    }

    /// Record that this handle's mover is stuck, and why (`None`: it moves again).
    pub fn set_mover_stuck(&self, cause: Option<String>) {
        *lock(&self.mover.stuck) = cause;
    }

    /// Why a mover is stuck, if one is (the first one's cause, named after its pipeline when
    /// there are several).
    pub fn mover_stuck(&self) -> Option<String> {
        lock(&self.shared.movers).iter().find_map(|m| {
            let cause = lock(&m.stuck).clone()?;
            Some(if m.pipeline.is_empty() {
                cause
            } else {
                format!("pipeline {}: {cause}", m.pipeline)
            })
        })
    }

    /// Ready: Redis reachable, every mover running and none stuck.
    pub fn ready(&self) -> bool {
        self.redis_reachable() && self.mover_running() && self.mover_stuck().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_pipeline_running_and_none_stuck() {
        let health = Health::default();
        health.set_redis_reachable(true);
        let movers = health.pipelines(&["a", "b"]);
        movers[0].set_mover_running(true);
        assert!(!health.ready());
        movers[1].set_mover_running(true);
        assert!(health.ready());
        movers[1].set_mover_stuck(Some("oom".into()));
        assert_eq!(health.mover_stuck().as_deref(), Some("pipeline b: oom"));
        assert!(!movers[0].ready());
        movers[1].set_mover_stuck(None);
        assert!(health.ready());
    }
}
