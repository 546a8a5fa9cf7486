//! The daemon: the mover, the scheduler and the HTTP server as tasks under one shutdown.
//!
//! `run` takes its shutdown trigger from the caller, so tests stop it without signals. On
//! shutdown every task gets `shutdown_grace` to finish; past that the daemon returns anyway.
//! Stopping early is always safe: the mover keeps nothing only in memory.

pub mod context;
pub mod jobs;
pub mod scheduler;
pub mod signal;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::daemon::context::Context;
use crate::mover::allowance::BatchAllowance;
use crate::redis::connection::{self, Connector};
use crate::telemetry::health::Health;
use crate::telemetry::http;

use crate::mover::Mover;
use crate::redis::keys::Keys;
use crate::settings::{Schedule, Settings};
use crate::telemetry::metrics::Metrics;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The Redis client could not be configured.
    #[error(transparent)]
    Connection(#[from] connection::ConfigError),
    /// The HTTP listener could not be bound.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// The mover ended before shutdown (a panic): nothing would move any more.
    #[error("the mover stopped unexpectedly: {0}")]
    MoverStopped(String),
}

/// Run until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let ctx = context(settings)?;
    let settings = Arc::clone(&ctx.settings);
    log_start(&ctx);
    // Bind first, so a taken port fails the start instead of a background task.
    let listener = match settings.http_addr {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let tasks = TaskTracker::new();
    if let Some(listener) = listener {
        let (health, metrics, shutdown) =
            (ctx.health.clone(), ctx.metrics.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                if let Err(error) = http::serve(listener, health, metrics, shutdown).await {
                    tracing::error!(message = "http server stopped", %error);
                }
            }
            .instrument(tracing::info_span!("http")),
        );
    }
    tasks.spawn(
        jobs::daemon_scheduler(ctx.clone())
            .run(shutdown.clone())
            .instrument(tracing::info_span!("scheduler")),
    );
    let health = ctx.health.clone();
    let mover = tasks.spawn(
        Mover::new(ctx)
            .run(shutdown.clone())
            .instrument(tracing::info_span!("mover_task")),
    );
    tasks.close();

    if let Some(error) = mover_failure(mover, &shutdown).await {
        health.set_mover_running(false);
        tracing::error!(message = "mover stopped unexpectedly", error = %error);
        shutdown.cancel();
        // The other tasks stop with the shared shutdown; give them the usual grace.
        let _ = tokio::time::timeout(settings.shutdown_grace, tasks.wait()).await;
        return Err(DaemonError::MoverStopped(error));
    }
    drain(&tasks, settings.shutdown_grace).await;
    Ok(())
}

/// The handles the daemon's tasks share.
fn context(settings: Settings) -> Result<Context, DaemonError> {
    let connector = Connector::new(&settings.redis)?;
    let keys = Keys::new(&settings.replica.key_prefix, &settings.queues.sources);
    let allowance = match settings.schedule {
        Schedule::Continuous => None,
        Schedule::Every { .. } => Some(BatchAllowance::new()),
    };
    Ok(Context {
        settings: Arc::new(settings),
        connector,
        keys,
        metrics: Metrics::new(),
        health: Health::default(),
        allowance,
        started_at: chrono::Utc::now(),
    })
}

fn log_start(ctx: &Context) {
    let settings = &ctx.settings;
    tracing::info!(
        message = "daemon started",
        redis = %ctx.connector.addr(),
        source = %settings.queues.sources_label(),
        processing = %settings.queues.processing,
        dead_letter = %settings.queues.dead_letter,
        batch_size = settings.batch.size.get(),
        processing_timeout_s = settings.batch.timeout.as_secs_f64(),
        consumer = %settings.replica.consumer_name,
        version = env!("CARGO_PKG_VERSION"),
    );
}

/// Wait for shutdown. The mover returns only on shutdown; if it ends before, it panicked:
/// then this returns why, and the daemon stops instead of answering probes while nothing
/// moves.
async fn mover_failure(mut mover: JoinHandle<()>, shutdown: &CancellationToken) -> Option<String> {
    let ended = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        ended = &mut mover => ended,
    };
    // On shutdown the mover ends too, possibly first: that is no failure.
    if shutdown.is_cancelled() {
        return None;
    }
    Some(match ended {
        Err(e) => e.to_string(),
        Ok(()) => "the mover stopped".to_string(),
    })
}

/// Give every task `grace` to finish after shutdown; past that, return anyway. Nothing is
/// lost: the mover keeps nothing only in memory.
async fn drain(tasks: &TaskTracker, grace: std::time::Duration) {
    tracing::info!(
        message = "shutting down",
        grace_ms = crate::telemetry::millis(grace)
    );
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            message = "shutdown grace period over",
            note = "tasks still busy with Redis are abandoned; nothing is lost",
        );
    }
    tracing::info!(message = "shutdown complete");
}
