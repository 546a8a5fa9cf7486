//! The scheduler tick: the in-process stand-in for Celery beat that drives every periodic
//! job of the daemon (probes, stats line, heartbeats, beat permits).
//!
//! Each job gets a task of its own with its own [`tokio::time::Interval`], so a slow job never
//! delays another one, and a job runs to completion before its next tick is even looked at,
//! so it never overlaps itself. Ticks missed while a job ran long (or while the process was
//! stalled) are coalesced into one run ([`MissedTickBehavior::Delay`]): after a stall the job
//! runs once, then resumes its period from that run. An error from a job is logged with the
//! job's name and the job stays scheduled. Cancelling the shutdown token stops everything
//! promptly: a run in progress is raced against cancellation and dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A boxed, sendable future: what [`Job::run`] returns, so jobs stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a failed run reports. Each job module keeps its own `thiserror` enum and converts it
/// into this with `?`; the scheduler only displays it.
pub type JobError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shortest period a job can have; a zero period would make a busy loop (and tokio's
/// `interval` rejects it).
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// One periodic job.
pub trait Job: Send {
    /// Name used in the job's span and in log lines.
    fn name(&self) -> &'static str;

    /// Time between the starts of two runs (when runs are shorter than the period).
    fn period(&self) -> Duration;

    /// Whether the first run happens as soon as the scheduler starts (the default) or one
    /// period later.
    fn run_at_start(&self) -> bool {
        true
    }

    /// One run. Errors are logged by the scheduler and do not unschedule the job.
    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>>;
}

/// A set of periodic jobs, started together by [`Scheduler::run`].
#[derive(Default)]
pub struct Scheduler {
    jobs: Vec<Box<dyn Job>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.job_names())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with no jobs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a job; it starts when [`run`](Self::run) is called.
    pub fn add(&mut self, job: impl Job + 'static) {
        self.jobs.push(Box::new(job));
    }

    /// Names of the jobs added so far, in order.
    pub fn job_names(&self) -> Vec<&'static str> {
        self.jobs.iter().map(|j| j.name()).collect()
    }

    /// Run every job on its period until `shutdown` is cancelled. Returns once every job's
    /// task has stopped (a run in progress is dropped at cancellation). With no jobs it
    /// simply waits for the cancellation.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.jobs.is_empty() {
            shutdown.cancelled().await;
            return;
        }
        let mut tasks = JoinSet::new();
        for job in self.jobs {
            let name = job.name();
            let span = tracing::info_span!("job", job = name);
            tasks.spawn(drive(job, shutdown.clone()).instrument(span));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                if e.is_panic() {
                    // The job's state may be broken; it is not restarted, but the others go on.
                    tracing::error!(error = %e, "job panicked and is no longer scheduled");
                }
            }
        }
    }
}

/// The loop of one job: wait for the tick, run, log the outcome, until cancelled.
async fn drive(mut job: Box<dyn Job>, shutdown: CancellationToken) {
    let name = job.name();
    let period = job.period().max(MIN_PERIOD);
    let first = if job.run_at_start() {
        Instant::now()
    } else {
        Instant::now() + period
    };
    let mut interval = tokio::time::interval_at(first, period);
    // Coalesce: a late tick fires once, and the next one comes a full period after it.
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures: u64 = 0;
    loop {
        if shutdown
            .run_until_cancelled(interval.tick())
            .await
            .is_none()
        {
            break;
        }
        let Some(outcome) = shutdown.run_until_cancelled(job.run()).await else {
            break;
        };
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(job = name, failures, "job recovered");
                }
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                // A job that keeps failing (Redis down for an hour) would otherwise log on
                // every tick; log the 1st, 2nd, 4th, 8th... consecutive failure at warn.
                if failures.is_power_of_two() {
                    tracing::warn!(job = name, error = %error, consecutive_failures = failures, "job failed");
                } else {
                    tracing::debug!(job = name, error = %error, consecutive_failures = failures, "job failed");
                }
            }
        }
    }
    tracing::debug!(job = name, "job stopped");
}

#[cfg(test)]
mod tests;
