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
    let settings = Arc::new(settings);
    let connector = Connector::new(&settings.redis)?;
    let keys = Keys::new(&settings.replica.key_prefix, &settings.queues.source);
    let metrics = Metrics::new();
    let health = Health::default();
    let allowance = match settings.schedule {
        Schedule::Continuous => None,
        Schedule::Every { .. } => Some(BatchAllowance::new()),
    };
    tracing::info!(
        message = "daemon started",
        redis = %connector.addr(),
        source = %settings.queues.source,
        processing = %settings.queues.processing,
        dead_letter = %settings.queues.dead_letter,
        batch_size = settings.batch.size.get(),
        processing_timeout_s = settings.batch.timeout.as_secs_f64(),
        consumer = %settings.replica.consumer_name,
        version = env!("CARGO_PKG_VERSION"),
    );

    // Bind first, so a taken port fails the start instead of a background task.
    let listener = match settings.http_addr {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };

    let tasks = TaskTracker::new();
    if let Some(listener) = listener {
        let (health, metrics, shutdown) = (health.clone(), metrics.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                if let Err(error) = http::serve(listener, health, metrics, shutdown).await {
                    tracing::error!(message = "http server stopped", %error);
                }
            }
            .instrument(tracing::info_span!("http")),
        );
    }
    let ctx = Context {
        settings: Arc::clone(&settings),
        connector,
        keys,
        metrics,
        health,
        allowance,
        started_at: chrono::Utc::now(),
    };
    tasks.spawn(
        jobs::daemon_scheduler(ctx.clone())
            .run(shutdown.clone())
            .instrument(tracing::info_span!("scheduler")),
    );
    let health = ctx.health.clone();
    let mover = Mover::new(ctx);
    let mut mover = tasks.spawn(
        mover
            .run(shutdown.clone())
            .instrument(tracing::info_span!("mover_task")),
    );
    tasks.close();

    // The mover returns only on shutdown; if it ends before, it panicked. Then the daemon
    // stops with an error instead of answering probes while nothing moves.
    let failed = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        // On shutdown the mover ends too, possibly first: that is no failure.
        ended = &mut mover => (!shutdown.is_cancelled()).then_some(ended),
    };
    if let Some(ended) = failed {
        health.set_mover_running(false);
        let error = match ended {
            Err(e) => e.to_string(),
            Ok(()) => "the mover stopped".to_string(),
        };
        tracing::error!(message = "mover stopped unexpectedly", error = %error);
        shutdown.cancel();
        // The other tasks stop with the shared shutdown; give them the usual grace.
        let _ = tokio::time::timeout(settings.shutdown_grace, tasks.wait()).await;
        return Err(DaemonError::MoverStopped(error));
    }
    tracing::info!(
        message = "shutting down",
        grace_ms = settings.shutdown_grace.as_millis() as u64
    );
    if tokio::time::timeout(settings.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            message = "shutdown grace period over",
            note = "tasks still busy with Redis are abandoned; nothing is lost",
        );
    }
    tracing::info!(message = "shutdown complete");
    Ok(())
}
