//! Scheduled mode's tick: the mover's batch allowance, refilled each period.

use std::time::Duration;

use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::mover::allowance::BatchAllowance;

/// Scheduled mode's tick: the mover may take up to `max_batches` batches until the next one.
#[derive(Debug)]
pub(super) struct AllowanceRefill {
    pub(super) every: Duration,
    pub(super) max_batches: usize,
    pub(super) permits: BatchAllowance,
}

impl Job for AllowanceRefill {
    fn name(&self) -> &'static str {
        "allowance"
    }

    fn period(&self) -> Duration {
        self.every
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.permits.refill(self.max_batches);
            tracing::debug!(max_batches = self.max_batches, "allowance refilled");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn beat_refills_permits_each_tick() {
        let permits = BatchAllowance::new();
        let mut refill = AllowanceRefill {
            every: Duration::from_secs(2),
            max_batches: 3,
            permits: permits.clone(),
        };
        assert_eq!(permits.available(), 0);
        refill.run().await.unwrap();
        assert_eq!(permits.available(), 3);
        permits.spend(2);
        refill.run().await.unwrap();
        assert_eq!(permits.available(), 3, "a tick resets the allowance");
    }
}
