//! The batch ledger's recovery job (only with `REDIS_BATCH_LEDGER` on): loads the function
//! library at start-up, gives the batches of dead workers back to the processing queue (or
//! dead-letters them after `REDIS_MAX_DELIVERIES`), and mirrors the ledger's totals into the
//! metrics.
//!
//! Recovery runs on the replica holding the source lease, so one replica at a time does it;
//! each call is one atomic function, so even two at once could not deliver a batch twice.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{JobsError, OwnConnection};
use crate::daemon::context::Context;
use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::ledger::library::{self, RecoverArgs};
use crate::ledger::{LedgerError, LedgerKeys};
use crate::settings::Settings;
use crate::telemetry::ledger::{self as events, LedgerMetrics, BATCH_OUTCOMES, ITEM_OUTCOMES};
use crate::telemetry::metrics::Metrics;

/// Dead workers handled per function call, so one call stays short.
const WORKERS_PER_CALL: usize = 100;
/// Calls per run at most; a larger backlog of dead workers waits for the next run.
const CALLS_PER_RUN: usize = 10;

/// Why a recovery run failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecoveryError {
    /// No connection.
    #[error(transparent)]
    Jobs(#[from] JobsError),
    /// A ledger call failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The metrics read failed.
    #[error("reading the ledger's totals failed: {0}")]
    Totals(#[source] redis::RedisError),
}

/// The recovery job.
#[derive(Debug)]
pub(super) struct Recovery {
    conn: OwnConnection,
    keys: LedgerKeys,
    settings: std::sync::Arc<Settings>,
    metrics: Metrics,
    installed: bool,
}

impl Recovery {
    pub(super) fn new(ctx: &Context) -> Self {
        Recovery {
            conn: OwnConnection::new(&ctx.connector),
            keys: LedgerKeys::new(&ctx.settings.ledger.state_prefix),
            settings: ctx.settings.clone(),
            metrics: ctx.metrics.clone(),
            installed: false,
        }
    }

    async fn run_once(&mut self) -> Result<(), RecoveryError> {
        let addr = self.conn.addr();
        let conn = self.conn.open().await?;
        if !self.installed {
            library::install(conn).await?;
            events::library_loaded(&addr);
            self.installed = true;
        }
        if self.metrics.lease_held.get() == 1 {
            recover(conn, &self.keys, &self.settings).await?;
        }
        mirror_totals(conn, &self.keys, &self.metrics.ledger).await
    }
}

/// Requeue or dead-letter the batches of every dead worker (up to the per-run bound).
async fn recover(
    conn: &mut MultiplexedConnection,
    keys: &LedgerKeys,
    settings: &Settings,
) -> Result<(), RecoveryError> {
    let failed_at = crate::envelope::format_timestamp(chrono::Utc::now());
    let args = RecoverArgs {
        processing: &settings.queues.processing,
        dead_letter: &settings.queues.dead_letter,
        claim_timeout: settings.ledger.claim_timeout,
        max_deliveries: settings.ledger.max_deliveries.get(),
        failed_at: &failed_at,
        limit: WORKERS_PER_CALL,
    };
    for _ in 0..CALLS_PER_RUN {
        let done = library::recover(conn, keys, args).await?;
        if done.requeued + done.dead > 0 {
            events::batches_recovered(done.requeued, done.dead, done.workers);
        }
        if done.workers < WORKERS_PER_CALL as u64 {
            break;
        }
    }
    Ok(())
}

/// Bring the ledger's counters and the oldest-claim gauge up to date.
async fn mirror_totals(
    conn: &mut MultiplexedConnection,
    keys: &LedgerKeys,
    metrics: &LedgerMetrics,
) -> Result<(), RecoveryError> {
    type Reply = (HashMap<String, u64>, Vec<(String, f64)>, (u64, u64));
    let (totals, oldest, time): Reply = redis::pipe()
        .hgetall(keys.totals())
        .cmd("ZRANGE")
        .arg(keys.claims())
        .arg(0)
        .arg(0)
        .arg("WITHSCORES")
        .cmd("TIME")
        .query_async(conn)
        .await
        .map_err(RecoveryError::Totals)?;
    for outcome in BATCH_OUTCOMES {
        let total = totals.get(outcome).copied().unwrap_or(0);
        LedgerMetrics::mirror(&metrics.batches, outcome, total);
    }
    for (field, outcome) in ITEM_OUTCOMES {
        let total = totals.get(field).copied().unwrap_or(0);
        LedgerMetrics::mirror(&metrics.items, outcome, total);
    }
    let now_ms = (time.0 * 1000 + time.1 / 1000) as f64;
    let age = oldest.first().map_or(0.0, |(_, claimed_at)| {
        ((now_ms - claimed_at) / 1000.0).max(0.0)
    });
    metrics.oldest_inflight.set(age);
    Ok(())
}

impl Job for Recovery {
    fn name(&self) -> &'static str {
        "ledger_recovery"
    }

    fn period(&self) -> Duration {
        self.settings.ledger.recovery_interval
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let outcome = self.run_once().await;
            if outcome.is_err() {
                // Reopen next time, and load the library again: the failure may have been a
                // Redis restart that lost it.
                self.conn.reset();
                self.installed = false;
            }
            outcome.map_err(Into::into)
        })
    }
}
