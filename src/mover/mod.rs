//! The mover: the loop that owns a source's lease, peeks the source's tail, and commits
//! envelopes and dead letters.
//!
//! Nothing is ever removed from the source except by the commit transaction, so at every
//! instant a message is either in the source or in exactly one envelope or dead-letter record.
//! The messages the mover holds in memory are copies of the source's tail; on any error the
//! copies are dropped, the lease is re-taken with a new token (fencing off anything still in
//! flight on the old connection), and the tail is read again.
//!
//! The parts, in the order a turn of the loop uses them:
//! [`lease`] (who may move the sources), [`tails`] and [`window`] (which part of each
//! source's tail is held and which part requests in flight cover; which sources the next plan
//! may take from), [`plan`] (which messages the next commit takes),
//! [`commit`] (the one atomic transaction, plus the next read; `verdict` reads its `EXEC`
//! reply), [`pipeline`] (requests in
//! flight, on the mover's own request connection), `answer` (what the oldest request's answer
//! changes), [`inflight`] (the bound on message bytes held), `idle` (waiting when there is nothing to do), [`backoff`], [`allowance`]
//! (scheduled mode's batches per tick), [`rate`] (the output rate limit) and `replica_ack`
//! (`REDIS_MIN_REPLICAS_ACK`'s `WAIT` after each commit). The [`keeper`] task renews the lease beside the
//! loop, on a connection of its own.

pub mod allowance;
mod answer;
pub mod back_pressure;
pub mod backoff;
mod balancing;
pub mod commit;
mod idle;
pub mod inflight;
pub mod keeper;
pub mod lease;
mod ledger;
mod packing;
pub mod pipeline;
pub mod plan;
pub mod rate;
mod replica_ack;
mod step;
mod stuck;
pub mod tails;
mod value_limit;
mod verdict;
pub mod window;

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio_util::sync::CancellationToken;

use self::back_pressure::BackPressure;
use self::backoff::Backoff;
use self::commit::CommitError;
use self::idle::Idle;
use self::inflight::Inflight;
use self::keeper::KeeperConfig;
use self::lease::Lease;
use self::pipeline::Pipeline;
use self::rate::TokenBucket;
use self::replica_ack::AckWatch;
use self::stuck::StuckWatch;
use self::tails::Tails;
use self::value_limit::ValueLimit;
use crate::daemon::context::Context;
use crate::redis::connection;
use crate::redis::raw::RawConnection;
use crate::redis::{ErrorKind, RedisFailure};
use crate::telemetry::events::{self, EnvelopeLog};

/// Why one session with Redis ended. The mover logs it, backs off and starts a new session.
#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// A connection could not be opened, or a command failed.
    #[error("{failure} (as user {user})")]
    Redis {
        /// Where, which command and what Redis said.
        #[source]
        failure: RedisFailure,
        /// ACL user (`default` when none is configured).
        user: String,
    },
    /// A commit failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The sentinels named another primary since this session connected: the node it works
    /// on may be a demoted primary whose writes will be thrown away.
    #[error("the sentinels name another primary now ({addr}); leaving the old one")]
    PrimaryChanged {
        /// The address now, for the log line.
        addr: String,
    },
}

impl MoverError {
    /// Error class for metrics and the `error_kind` log field.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MoverError::Redis { failure, .. } => failure.kind(),
            MoverError::Commit(e) => e.kind(),
            MoverError::PrimaryChanged { .. } => ErrorKind::Io,
        }
    }
}

/// How a turn of the loop ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Redis answered and the mover moved on (a commit landed, a wait saw the source, or a
    /// standby check was answered): the backoff starts over.
    Progress,
    /// Go round again.
    Continue,
    /// Shutdown was requested.
    Stop,
}

/// The mover's state: one per daemon, owned by its task.
#[derive(Debug)]
pub struct Mover {
    ctx: Context,
    lease: Lease,
    tails: Tails,
    pipeline: Pipeline,
    idle: Idle,
    log: EnvelopeLog,
    backoff: Backoff,
    /// The other holder last seen in the way while standing by, so it is logged once.
    standing_by_for: Option<String>,
    stuck: StuckWatch,
    value_limit: ValueLimit,
    /// `REDIS_MAX_BATCHES_PER_SECOND`, when set.
    rate: Option<TokenBucket>,
    /// `REDIS_MAX_PROCESSING_QUEUE_LENGTH`, when set.
    back_pressure: Option<BackPressure>,
    /// The replica's shares of a sharded deployment's pipelines, when they are shared.
    balance: Option<crate::scale::balance::Balance>,
    /// This mover's place in the share, while it holds or tries the leases.
    claim: Option<crate::scale::balance::Claim>,
    /// Standing by because the share is full (logged once per episode).
    waiting_for_share: bool,
    /// `REDIS_MAX_INFLIGHT_BYTES`.
    inflight: Inflight,
    /// The connector's generation when this session connected (see
    /// [`connection::Connector::generation`]).
    generation: u64,
    /// Reports commits too few replicas acknowledged (`REDIS_MIN_REPLICAS_ACK`).
    ack_watch: AckWatch,
}

impl Mover {
    /// A mover that has not touched Redis yet.
    pub fn new(ctx: Context) -> Self {
        let settings = &ctx.settings;
        let keeper = keeper::spawn(KeeperConfig {
            connector: ctx.connector.clone(),
            keys: ctx.keys.leases().to_vec(),
            ttl: settings.replica.lease_ttl,
            command_timeout: settings.redis.command_timeout,
        });
        let lease = Lease::new(
            &ctx.keys,
            settings.replica.consumer_name.clone(),
            settings.replica.lease_ttl,
            keeper,
        );
        let log = EnvelopeLog::new(settings.log_envelopes_per_second);
        let backoff = Backoff::new(settings.retry);
        let stuck = StuckWatch::new(settings.retry.stuck_after);
        let value_limit = ValueLimit::new(settings.redis.proto_max_bulk_len);
        let back_pressure = settings
            .flow
            .max_processing_len
            .map(|limit| BackPressure::new(limit.get()));
        let sources = settings.queues.sources.len();
        let inflight = Inflight::new(
            settings.batch.max_inflight_bytes,
            inflight::largest_held(settings.batch.message.max_bytes),
        );
        let rate = settings
            .flow
            .rate
            .map(|limit| TokenBucket::new(limit, Instant::now()));
        Mover {
            ctx,
            lease,
            tails: Tails::new(sources),
            pipeline: Pipeline::default(),
            idle: Idle::new(sources),
            log,
            backoff,
            standing_by_for: None,
            stuck,
            value_limit,
            rate,
            back_pressure,
            balance: None,
            claim: None,
            waiting_for_share: false,
            inflight,
            generation: 0,
            ack_watch: AckWatch::default(),
        }
    }

    /// Run until `shutdown` is cancelled. Errors never end the loop: each is logged once per
    /// attempt and retried after a capped, jittered backoff.
    #[tracing::instrument(name = "mover", skip_all, fields(source = %self.ctx.settings.queues.sources_label(), consumer = %self.ctx.settings.replica.consumer_name))]
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.ctx.health.set_mover_running(true);
        while !shutdown.is_cancelled() {
            let Err(error) = self.session(&shutdown).await else {
                break;
            };
            self.failed(&error.to_string());
            self.forget_room();
            self.reset();
            let delay = self.backoff.next_delay();
            let attempts = self.backoff.attempts();
            events::redis_failed(&self.ctx.metrics, error.kind(), &error, attempts, delay);
            if sleep(&shutdown, delay).await == Outcome::Stop {
                break;
            }
        }
        self.ctx.metrics.lease_held.set(0);
        self.ctx.health.set_mover_running(false);
    }

    /// One connection's worth of work. `Ok` only on shutdown.
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<(), MoverError> {
        self.idle.close();
        // Nothing is in flight on the connections this session opens.
        self.pipeline.abandon();
        let Some(conn) = until(shutdown, self.ctx.connector.commit_connection()).await else {
            return Ok(());
        };
        let mut conn = conn.map_err(|source| self.connect_error(source))?;
        self.generation = self.ctx.connector.generation();
        let Some(raw) = until(shutdown, self.request_connection()).await else {
            return Ok(());
        };
        let mut raw = raw.map_err(|source| self.connect_error(source))?;
        let prepared = until(shutdown, async {
            self.value_limit.read(&mut conn).await;
            self.lease.prepare(&mut conn).await;
        });
        if prepared.await.is_none() {
            return Ok(());
        }
        loop {
            match self.turn(&mut conn, &mut raw, shutdown).await? {
                Outcome::Stop => {
                    self.release(&mut conn).await;
                    return Ok(());
                }
                Outcome::Progress => {
                    self.backoff.reset();
                    self.progressed();
                }
                Outcome::Continue => {}
            }
        }
    }

    /// The connection requests go on (see [`crate::redis::raw`]).
    async fn request_connection(&self) -> Result<RawConnection, RedisError> {
        let target = self.ctx.connector.stream_target().await?;
        let timeout = self.ctx.connector.commit_timeout();
        Ok(RawConnection::connect(&target, timeout).await?)
    }

    /// Drop every copy and every request in flight, and forget the lease: the next
    /// acquisition draws a new token, which fences off whatever is still queued in Redis.
    fn reset(&mut self) {
        self.tails.reset();
        self.pipeline.clear();
        self.lease.forget();
        self.claim = None;
    }

    /// A commit or a session failed: the mover may now be stuck.
    fn failed(&mut self, cause: &str) {
        let metrics = &self.ctx.metrics;
        let sources = &self.ctx.settings.queues.sources;
        let waiting: i64 = sources
            .iter()
            .map(|s| metrics.queue_length_of("source", s))
            .sum();
        let backlog = waiting > 0 || !self.tails.is_empty();
        if let Some(failing_for) = self.stuck.failed(Instant::now(), backlog) {
            let source = &self.ctx.settings.queues.sources_label();
            events::mover_stuck(metrics, &self.ctx.health, source, cause, failing_for);
        }
    }

    /// A commit landed, or Redis answered with nothing to commit.
    fn progressed(&mut self) {
        if self.stuck.progressed() {
            let source = &self.ctx.settings.queues.sources_label();
            events::mover_recovered(&self.ctx.metrics, &self.ctx.health, source);
        }
    }

    /// The mover waits on purpose, having sent all it could.
    fn waited(&mut self) {
        if self.stuck.waited() {
            let source = &self.ctx.settings.queues.sources_label();
            events::mover_recovered(&self.ctx.metrics, &self.ctx.health, source);
        }
    }

    async fn release(&mut self, conn: &mut MultiplexedConnection) {
        if !self.lease.is_held() {
            return;
        }
        let limit = Duration::from_secs(1).min(self.ctx.settings.redis.command_timeout);
        let source = &self.ctx.settings.queues.sources_label();
        match tokio::time::timeout(limit, self.lease.release(conn)).await {
            Ok(Ok(())) => tracing::info!(message = "lease released", source = %source),
            Ok(Err(error)) => tracing::warn!(message = "lease not released", %error),
            Err(_) => tracing::warn!(message = "lease not released", error = "timed out"),
        }
        self.claim = None;
        self.ctx.metrics.lease_held.set(0);
    }

    fn connect_error(&self, source: RedisError) -> MoverError {
        let failure = self.ctx.connector.failure(connection::CONNECT, source);
        self.redis_error(failure)
    }

    fn command_error(&self, command: &'static str, key: String, source: RedisError) -> MoverError {
        let failure = self.ctx.connector.failure(command, source).with_key(key);
        self.redis_error(failure)
    }

    fn redis_error(&self, failure: RedisFailure) -> MoverError {
        MoverError::Redis {
            failure,
            user: self.user().to_string(),
        }
    }

    fn user(&self) -> &str {
        let redis = self.ctx.settings.redis.connection.redis_settings();
        redis.username().unwrap_or("default")
    }
}

/// Run `f` unless `shutdown` comes first (`None`).
async fn until<F: Future>(shutdown: &CancellationToken, f: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        out = f => Some(out),
    }
}

/// Sleep for `d` unless `shutdown` comes first.
async fn sleep(shutdown: &CancellationToken, d: Duration) -> Outcome {
    match until(shutdown, tokio::time::sleep(d)).await {
        Some(()) => Outcome::Continue,
        None => Outcome::Stop,
    }
}
