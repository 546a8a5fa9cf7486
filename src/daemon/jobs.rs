//! The daemon's periodic jobs, run by the [`Scheduler`]:
//!
//! - `probe` (every second): PING and the three list lengths on a connection of its own,
//!   bounded well under a second, feeding readiness and the `queue_length` gauges.
//! - `stats` (every `REDIS_STATS_INTERVAL`): one `stats` log line with totals, list lengths
//!   and the rate since the previous line.
//! - `heartbeat` (every third of the lease TTL): this replica's hash and its entry in the
//!   replica set, read by `batch-processor status`.
//! - `allowance` (scheduled mode only): grants the mover its batches for the next tick.
//!
//! The mover renews the lease itself; no job here touches it.

use std::time::Duration;

use chrono::Utc;
use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::time::Instant;

use crate::daemon::context::Context;
use crate::daemon::scheduler::{BoxFuture, Job, JobError, Scheduler};
use crate::mover::allowance::BatchAllowance;
use crate::redis::connection::{self, Connector};
use crate::redis::keys::Keys;
use crate::settings::{Queues, Schedule};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::{Metrics, QueueLabel};

/// Period of the readiness probe. With [`PROBE_TIMEOUT_CAP`] below it, `/readyz` follows
/// Redis going away or coming back within two seconds.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Longest one probe may take (connecting included), whatever the command timeout is, so a
/// probe never runs into the next one and never hangs on a silent server.
pub const PROBE_TIMEOUT_CAP: Duration = Duration::from_millis(750);

/// Heartbeat entries older than this are dropped from the replica set.
pub const REPLICA_RETENTION: Duration = Duration::from_secs(3600);

/// Why a job's run failed. Logged by the scheduler with the job's name.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No connection could be opened.
    #[error("cannot connect to Redis at {addr}: {source}")]
    Connect {
        /// Redis address (no credentials).
        addr: String,
        /// What redis-rs said.
        #[source]
        source: RedisError,
    },
    /// A command (or pipeline) failed.
    #[error("{what} failed on Redis at {addr}: {source}")]
    Command {
        /// Which step, e.g. `probe` or `heartbeat`.
        what: &'static str,
        /// Redis address (no credentials).
        addr: String,
        /// What redis-rs said.
        #[source]
        source: RedisError,
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
    pub fn kind(&self) -> &'static str {
        match self {
            JobsError::Connect { source, .. } | JobsError::Command { source, .. } => {
                connection::error_kind(source)
            }
            JobsError::Timeout { .. } => "timeout",
        }
    }
}

/// The scheduler the daemon runs: probe, stats, heartbeat, and the allowance refill in scheduled mode.
pub fn daemon_scheduler(ctx: Context) -> Scheduler {
    let mut scheduler = Scheduler::new();
    scheduler.add(Probe::new(&ctx));
    scheduler.add(Stats::new(&ctx));
    scheduler.add(Heartbeat::new(&ctx));
    match (ctx.settings.schedule, ctx.allowance) {
        (Schedule::Every { every, max_batches }, Some(permits)) => scheduler.add(AllowanceRefill {
            every,
            max_batches: max_batches.get(),
            permits,
        }),
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
    conn: Option<MultiplexedConnection>,
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

    /// Run `pipe` on the connection, opening it first if needed.
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, JobsError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self
                    .connector
                    .command_connection()
                    .await
                    .map_err(|source| JobsError::Connect {
                        addr: self.connector.addr(),
                        source,
                    })?;
                self.conn.insert(conn)
            }
        };
        match pipe.query_async(conn).await {
            Ok(v) => Ok(v),
            Err(source) => {
                // Cheap to reopen, and a connection that failed once (dropped, timed out
                // with a reply still in flight, refused AUTH) is not worth reusing.
                self.conn = None;
                Err(JobsError::Command {
                    what,
                    addr: self.connector.addr(),
                    source,
                })
            }
        }
    }
}

/// Readiness probe and list-length gauges.
#[derive(Debug)]
struct Probe {
    conn: OwnConnection,
    queues: Queues,
    metrics: Metrics,
    health: Health,
    bound: Duration,
}

impl Probe {
    fn new(ctx: &Context) -> Self {
        Probe {
            conn: OwnConnection::new(&ctx.connector),
            queues: ctx.settings.queues.clone(),
            metrics: ctx.metrics.clone(),
            health: ctx.health.clone(),
            bound: ctx.settings.redis.command_timeout.min(PROBE_TIMEOUT_CAP),
        }
    }

    async fn probe(&mut self) -> Result<(), JobsError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING")
            .ignore()
            .cmd("LLEN")
            .arg(&self.queues.source)
            .cmd("LLEN")
            .arg(&self.queues.processing)
            .cmd("LLEN")
            .arg(&self.queues.dead_letter);
        let bound = self.bound;
        let outcome = tokio::time::timeout(bound, self.conn.query("probe", &pipe)).await;
        let (source, processing, dead_letter): (i64, i64, i64) = match outcome {
            Ok(result) => result?,
            Err(_) => {
                // The connection may still get the late reply; start afresh next time.
                self.conn.conn = None;
                return Err(JobsError::Timeout {
                    what: "probe",
                    addr: self.conn.addr(),
                    timeout: bound,
                });
            }
        };
        self.metrics.set_queue_length("source", source);
        self.metrics.set_queue_length("processing", processing);
        self.metrics.set_queue_length("dead_letter", dead_letter);
        Ok(())
    }
}

impl Job for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn period(&self) -> Duration {
        PROBE_PERIOD
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let result = self.probe().await;
            if let Err(e) = &result {
                self.metrics.redis_error(e.kind());
            }
            self.health.set_redis_reachable(result.is_ok());
            Ok(result?)
        })
    }
}

/// The periodic `stats` log line.
#[derive(Debug)]
struct Stats {
    period: Duration,
    metrics: Metrics,
    health: Health,
    last: Snapshot,
}

/// A message total and when it was read, for rates.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    messages: u64,
}

impl Snapshot {
    fn now(metrics: &Metrics) -> Self {
        Snapshot {
            at: Instant::now(),
            messages: metrics.messages.get(),
        }
    }

    /// Messages per second from `self` to `later`, rounded to hundredths; 0 over no time.
    fn rate_to(&self, later: &Snapshot) -> f64 {
        let secs = later.at.saturating_duration_since(self.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let moved = later.messages.saturating_sub(self.messages) as f64;
        (moved / secs * 100.0).round() / 100.0
    }
}

impl Stats {
    fn new(ctx: &Context) -> Self {
        Stats {
            period: ctx.settings.stats_interval,
            metrics: ctx.metrics.clone(),
            health: ctx.health.clone(),
            last: Snapshot::now(&ctx.metrics),
        }
    }

    fn queue_length(&self, queue: &'static str) -> i64 {
        self.metrics
            .queue_length
            .get_or_create(&QueueLabel { queue })
            .get()
    }
}

impl Job for Stats {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn period(&self) -> Duration {
        self.period
    }

    /// A line at start-up would only say zero.
    fn run_at_start(&self) -> bool {
        false
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let now = Snapshot::now(&self.metrics);
            // List lengths come from the probe's gauges (at most a second old), so this
            // line costs Redis nothing and never waits on it.
            tracing::info!(
                messages = now.messages,
                batches = self.metrics.batches.get(),
                dead_letters = self.metrics.dead_letters.get(),
                source_len = self.queue_length("source"),
                processing_len = self.queue_length("processing"),
                dead_letter_len = self.queue_length("dead_letter"),
                rate_per_s = self.last.rate_to(&now),
                redis_reachable = self.health.redis_reachable(),
                "stats"
            );
            self.last = now;
            Ok(())
        })
    }
}

/// This replica's heartbeat: its hash and its score in the replica set.
#[derive(Debug)]
struct Heartbeat {
    conn: OwnConnection,
    keys: Keys,
    consumer: String,
    host: String,
    pid: u32,
    started_at: String,
    lease_ttl: Duration,
    metrics: Metrics,
    last: Snapshot,
}

impl Heartbeat {
    fn new(ctx: &Context) -> Self {
        Heartbeat {
            conn: OwnConnection::new(&ctx.connector),
            keys: ctx.keys.clone(),
            consumer: ctx.settings.replica.consumer_name.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started_at: crate::envelope::format_timestamp(ctx.started_at),
            lease_ttl: ctx.settings.replica.lease_ttl,
            metrics: ctx.metrics.clone(),
            last: Snapshot::now(&ctx.metrics),
        }
    }

    async fn write(&mut self) -> Result<(), JobsError> {
        let now = Snapshot::now(&self.metrics);
        let now_ms = Utc::now().timestamp_millis();
        let hash = self.keys.replica(&self.consumer);
        let replicas = self.keys.replicas();
        let holds_lease = if self.metrics.lease_held.get() == 1 {
            "1"
        } else {
            "0"
        };
        let expire_ms = self.lease_ttl.saturating_mul(3).as_millis();
        let cutoff = now_ms.saturating_sub(REPLICA_RETENTION.as_millis() as i64);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&hash)
            .arg("consumer")
            .arg(&self.consumer)
            .arg("host")
            .arg(&self.host)
            .arg("pid")
            .arg(self.pid)
            .arg("started_at")
            .arg(&self.started_at)
            .arg("heartbeat_at_ms")
            .arg(now_ms)
            .arg("holds_lease")
            .arg(holds_lease)
            .arg("messages")
            .arg(now.messages)
            .arg("batches")
            .arg(self.metrics.batches.get())
            .arg("dead_letters")
            .arg(self.metrics.dead_letters.get())
            .arg("rate")
            .arg(self.last.rate_to(&now).to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&hash)
            .arg(expire_ms.to_string())
            .ignore()
            .cmd("ZADD")
            .arg(&replicas)
            .arg(now_ms)
            .arg(&self.consumer)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&replicas)
            .arg("-inf")
            .arg(format!("({cutoff}"))
            .ignore();
        self.conn.query::<()>("heartbeat", &pipe).await?;
        // The next rate is measured from the last heartbeat that was written.
        self.last = now;
        Ok(())
    }
}

impl Job for Heartbeat {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    fn period(&self) -> Duration {
        self.lease_ttl / 3
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let result = self.write().await;
            if let Err(e) = &result {
                self.metrics.redis_error(e.kind());
            }
            Ok(result?)
        })
    }
}

/// Scheduled mode's tick: the mover may take up to `max_batches` batches until the next one.
#[derive(Debug)]
struct AllowanceRefill {
    every: Duration,
    max_batches: usize,
    permits: BatchAllowance,
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
    use crate::settings;
    use std::sync::Arc;

    fn context(vars: &[(&str, &str)]) -> Context {
        let settings = settings::load(&vars.to_vec(), None).unwrap();
        Context {
            connector: Connector::new(&settings.redis).unwrap(),
            keys: Keys::new(&settings.replica.key_prefix, &settings.queues.source),
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
    fn scheduled_mode_adds_the_allowance_refill() {
        let s = daemon_scheduler(context(&[("REDIS_SCHEDULE", "2")]));
        assert_eq!(
            s.job_names(),
            vec!["probe", "stats", "heartbeat", "allowance"]
        );
    }

    #[test]
    fn periods_follow_the_settings() {
        let ctx = context(&[
            ("REDIS_STATS_INTERVAL", "7"),
            ("REDIS_LEASE_TTL", "3"),
            ("REDIS_COMMAND_TIMEOUT", "0.2"),
        ]);
        assert_eq!(Stats::new(&ctx).period(), Duration::from_secs(7));
        assert!(!Stats::new(&ctx).run_at_start());
        assert_eq!(Heartbeat::new(&ctx).period(), Duration::from_secs(1));
        let probe = Probe::new(&ctx);
        assert_eq!(probe.period(), PROBE_PERIOD);
        assert_eq!(probe.bound, Duration::from_millis(200));
        assert_eq!(Probe::new(&context(&[])).bound, PROBE_TIMEOUT_CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_is_messages_per_second_between_snapshots() {
        let metrics = Metrics::new();
        let first = Snapshot::now(&metrics);
        assert_eq!(first.rate_to(&Snapshot::now(&metrics)), 0.0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        metrics.messages.inc_by(10);
        assert_eq!(first.rate_to(&Snapshot::now(&metrics)), 3.33);
    }

    #[tokio::test(start_paused = true)]
    async fn beat_refills_permits_each_tick() {
        let ctx = context(&[("REDIS_SCHEDULE", "2"), ("REDIS_MAX_BATCHES_PER_TICK", "3")]);
        let permits = ctx.allowance.clone().unwrap();
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
