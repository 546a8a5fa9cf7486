//! The daemon's periodic jobs, run by the [`Scheduler`]:
//!
//! - [`probe`] (every second): PING and the three list lengths on a connection of its own,
//!   each round trip bounded to 750 ms (opening the connection apart), feeding readiness and
//!   the `queue_length` gauges.
//! - [`stats`] (every `REDIS_STATS_INTERVAL`): one `stats` log line with totals, list lengths
//!   and the rate since the previous line.
//! - [`heartbeat`] (every third of the lease TTL): this replica's hash and its entry in the
//!   replica set, read by `batch-processor status`.
//! - [`allowance`] (scheduled mode only): grants the mover its batches for the next tick.
//! - [`recovery`] (batch ledger on only): loads the ledger's function library, redelivers the
//!   batches of dead workers, and mirrors the ledger's totals into the metrics.
//! - [`sentinel`] (with Sentinel only, every second): asks the sentinels for the primary, so
//!   every connection leaves a demoted one within a second.
//!
//! The mover renews the lease itself; no job here touches it.

mod allowance;
mod heartbeat;
mod probe;
mod recovery;
mod sentinel;
mod stats;

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::daemon::context::Context;
use crate::daemon::scheduler::Scheduler;
use crate::redis::connection::{Connector, CONNECT};
use crate::redis::{ErrorKind, RedisFailure};
use crate::settings::Schedule;

pub use heartbeat::REPLICA_RETENTION;
pub use probe::{PROBE_PERIOD, PROBE_TIMEOUT_CAP};

/// Why a job's run failed. Logged by the scheduler with the job's name.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No connection could be opened.
    #[error("cannot connect to Redis at {}: {}", .0.addr, .0.source)]
    Connect(#[source] RedisFailure),
    /// A command (or pipeline) failed.
    #[error("{what} failed on Redis at {}: {}", .failure.addr, .failure.source)]
    Command {
        /// Which step, e.g. `probe` or `heartbeat`.
        what: &'static str,
        /// The commands sent and what Redis said.
        #[source]
        failure: RedisFailure,
    },
    /// The step took longer than its bound.
    #[error("{what} got no answer from Redis at {addr} within {timeout:?}")]
    Timeout {
        /// Which step.
        what: &'static str,
        /// Redis address (no credentials).
        addr: String,
        /// The bound that ran out.
        timeout: Duration,
    },
}

impl JobsError {
    /// The `kind` label for the Redis error counter.
    pub fn kind(&self) -> ErrorKind {
        match self {
            JobsError::Connect(failure) | JobsError::Command { failure, .. } => failure.kind(),
            JobsError::Timeout { .. } => ErrorKind::Timeout,
        }
    }
}

/// The scheduler the daemon runs: probe, stats, heartbeat, and the allowance refill in
/// scheduled mode.
pub fn daemon_scheduler(ctx: Context) -> Scheduler {
    let mut scheduler = Scheduler::new();
    scheduler.add(probe::Probe::new(&ctx));
    scheduler.add(stats::Stats::new(&ctx));
    scheduler.add(heartbeat::Heartbeat::new(&ctx));
    if ctx.settings.ledger.enabled {
        scheduler.add(recovery::Recovery::new(&ctx));
    }
    if ctx.settings.redis.sentinel.is_some() {
        let timeout = ctx.settings.redis.command_timeout;
        scheduler.add(sentinel::SentinelWatch::new(&ctx.connector, timeout));
    }
    match (ctx.settings.schedule, ctx.allowance) {
        (Schedule::Every { every, max_batches }, Some(permits)) => {
            scheduler.add(allowance::AllowanceRefill {
                every,
                max_batches: max_batches.get(),
                permits,
            })
        }
        (Schedule::Every { .. }, None) => {
            tracing::error!(
                "scheduled mode is configured but the daemon passed no batch allowance"
            );
        }
        (Schedule::Continuous, _) => {}
    }
    scheduler
}

/// A lazily opened connection of a job's own, dropped after any error so the next run
/// starts from a fresh one.
#[derive(Debug)]
struct OwnConnection {
    connector: Connector,
    /// The connection, and the connector's generation when it was made.
    conn: Option<(MultiplexedConnection, u64)>,
}

impl OwnConnection {
    fn new(connector: &Connector) -> Self {
        OwnConnection {
            connector: connector.clone(),
            conn: None,
        }
    }

    fn addr(&self) -> String {
        self.connector.addr()
    }

    /// Forget the connection, e.g. when a reply may still be in flight on it.
    fn reset(&mut self) {
        self.conn = None;
    }

    /// The connection, opened first if needed. Opening costs a round trip of its own (the
    /// client's handshake), so a step with a tight bound opens apart from its query.
    /// With Sentinel, a connection made before the sentinels named another primary is
    /// dropped first.
    async fn open(&mut self) -> Result<&mut MultiplexedConnection, JobsError> {
        let generation = self.connector.generation();
        let conn = match self.conn.take() {
            Some((conn, made)) if made == generation => conn,
            _ => self
                .connector
                .command_connection()
                .await
                .map_err(|source| JobsError::Connect(self.connector.failure(CONNECT, source)))?,
        };
        Ok(&mut self.conn.insert((conn, generation)).0)
    }

    /// Run `pipe` (the step `what`, sending `commands`), opening the connection first if
    /// needed.
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        what: &'static str,
        commands: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, JobsError> {
        let conn = self.open().await?;
        match pipe.query_async(conn).await {
            Ok(v) => Ok(v),
            Err(source) => {
                // Cheap to reopen, and a connection that failed once (dropped, timed out
                // with a reply still in flight, refused AUTH) is not worth reusing.
                self.reset();
                Err(JobsError::Command {
                    what,
                    failure: self.connector.failure(commands, source),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::allowance::BatchAllowance;
    use crate::redis::keys::Keys;
    use crate::settings;
    use crate::telemetry::health::Health;
    use crate::telemetry::metrics::Metrics;
    use chrono::Utc;
    use std::sync::Arc;

    /// A daemon context from the environment `vars`, for the jobs' tests.
    pub(super) fn context(vars: &[(&str, &str)]) -> Context {
        let settings = settings::load(&vars.to_vec(), None).unwrap();
        Context {
            connector: Connector::new(&settings.redis).unwrap(),
            keys: Keys::new(&settings.replica.key_prefix, &settings.queues.sources),
            settings: Arc::new(settings),
            metrics: Metrics::new(),
            health: Health::default(),
            allowance: Some(BatchAllowance::new()),
            started_at: Utc::now(),
        }
    }

    #[test]
    fn continuous_mode_has_no_allowance_refill() {
        let s = daemon_scheduler(context(&[]));
        assert_eq!(s.job_names(), vec!["probe", "stats", "heartbeat"]);
    }

    #[test]
    fn the_ledger_adds_its_recovery_job() {
        let s = daemon_scheduler(context(&[("REDIS_BATCH_LEDGER", "true")]));
        assert_eq!(
            s.job_names(),
            vec!["probe", "stats", "heartbeat", "ledger_recovery"]
        );
    }

    #[test]
    fn scheduled_mode_adds_the_allowance_refill() {
        let s = daemon_scheduler(context(&[("REDIS_SCHEDULE", "2")]));
        assert_eq!(
            s.job_names(),
            vec!["probe", "stats", "heartbeat", "allowance"]
        );
    }

    #[test]
    fn errors_keep_their_text_and_kind() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = JobsError::Command {
            what: "probe",
            failure: RedisFailure::new("h:1", "PING, LLEN", refused),
        };
        assert!(
            e.to_string().starts_with("probe failed on Redis at h:1: "),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        let e = JobsError::Timeout {
            what: "probe",
            addr: "h:1".into(),
            timeout: Duration::from_millis(750),
        };
        assert_eq!(
            e.to_string(),
            "probe got no answer from Redis at h:1 within 750ms"
        );
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }
}
