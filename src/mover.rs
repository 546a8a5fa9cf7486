//! The mover: the loop that owns the source lease, peeks the source's tail, and commits
//! envelopes and dead letters.
//!
//! Nothing is ever removed from the source except by the commit transaction, so at every
//! instant a message is either in the source or in exactly one envelope or dead-letter record.
//! The messages the mover holds in memory are copies of the source's tail; on any error the
//! copies are dropped, the lease is re-taken with a new token (fencing off anything still in
//! flight on the old connection), and the tail is read again.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::batch::{self, Limits, Peeked};
use crate::beat::BeatPermits;
use crate::commit::{self, CommitError, Read};
use crate::connection::{self, Connector};
use crate::envelope::format_timestamp;
use crate::events::{self, EnvelopeLog};
use crate::health::Health;
use crate::keys::Keys;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// Why one session with Redis ended. The mover logs it, backs off and starts a new session.
#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// Could not connect or authenticate.
    #[error("cannot connect to Redis at {addr} as user {user}: {source}")]
    Connect {
        /// Address.
        addr: String,
        /// ACL user (`default` when none is configured).
        user: String,
        /// What Redis or the network said.
        #[source]
        source: RedisError,
    },
    /// A command failed.
    #[error("{command} on {key} failed: {source}")]
    Command {
        /// The command.
        command: &'static str,
        /// The key it worked on.
        key: String,
        /// What Redis said.
        #[source]
        source: RedisError,
    },
    /// A commit failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

impl MoverError {
    /// Error class for metrics and the `error_kind` log field.
    pub fn kind(&self) -> &'static str {
        match self {
            MoverError::Connect { source, .. } | MoverError::Command { source, .. } => {
                connection::error_kind(source)
            }
            MoverError::Commit(e) => e.kind(),
        }
    }
}

/// Everything the mover needs, handed over by the daemon.
#[derive(Debug, Clone)]
pub struct MoverContext {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Opens connections.
    pub connector: Connector,
    /// The daemon's key names.
    pub keys: Keys,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness flags.
    pub health: Health,
    /// Beat-mode permits; `None` when running continuously.
    pub beat: Option<BeatPermits>,
}

/// The mover's state.
#[derive(Debug)]
pub struct Mover {
    ctx: MoverContext,
    lease: Lease,
    /// Copies of the source's tail, oldest first; all still in Redis.
    pending: VecDeque<Peeked>,
    /// The last read returned fewer items than asked: the source was drained then.
    drained: bool,
    log: EnvelopeLog,
}

/// How a step or a wait ended when it did not fail.
enum Flow {
    Continue,
    Stop,
}

impl Mover {
    /// A mover that has not touched Redis yet.
    pub fn new(ctx: MoverContext) -> Self {
        let lease = Lease::new(
            ctx.keys.lease(),
            ctx.settings.replica.consumer_name.clone(),
            ctx.settings.replica.lease_ttl,
        );
        let log = EnvelopeLog::new(ctx.settings.log_envelopes_per_second);
        Mover {
            ctx,
            lease,
            pending: VecDeque::new(),
            drained: false,
            log,
        }
    }

    /// Run until `shutdown` is cancelled. Errors never end the loop: each is logged once per
    /// attempt and retried after a capped, jittered backoff.
    #[tracing::instrument(name = "mover", skip_all, fields(source = %self.ctx.settings.queues.source, consumer = %self.ctx.settings.replica.consumer_name))]
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.ctx.health.set_mover_running(true);
        let mut backoff = Backoff::new(self.ctx.settings.retry);
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    self.reset();
                    let delay = backoff.next_delay();
                    events::redis_failed(
                        &self.ctx.metrics,
                        error.kind(),
                        &error,
                        backoff.attempts(),
                        delay,
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.ctx.metrics.lease_held.set(0);
        self.ctx.health.set_mover_running(false);
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.drained = false;
        self.lease.forget();
    }

    /// One connection's worth of work. `Ok` only on shutdown.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), MoverError> {
        let Some(conn) = until(shutdown, self.ctx.connector.command_connection()).await else {
            return Ok(());
        };
        let mut conn = conn.map_err(|source| self.connect_error(source))?;
        let mut blocking = None;
        loop {
            let flow = self
                .tick(&mut conn, &mut blocking, shutdown, backoff)
                .await?;
            if let Flow::Stop = flow {
                self.release(&mut conn).await;
                return Ok(());
            }
        }
    }

    async fn tick(
        &mut self,
        conn: &mut MultiplexedConnection,
        blocking: &mut Option<MultiplexedConnection>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<Flow, MoverError> {
        if shutdown.is_cancelled() {
            return Ok(Flow::Stop);
        }
        let source = &self.ctx.settings.queues.source;
        let consumer = &self.ctx.settings.replica.consumer_name;
        if !self.lease.is_held() {
            let Some(won) = until(shutdown, self.lease.acquire(conn)).await else {
                return Ok(Flow::Stop);
            };
            let won = won.map_err(|source| {
                self.command_error("EVAL lease_acquire", self.ctx.keys.lease(), source)
            })?;
            backoff.reset();
            if won {
                events::lease_acquired(&self.ctx.metrics, source, consumer);
                self.pending.clear();
                self.drained = false;
                return Ok(Flow::Continue);
            }
            self.ctx.metrics.lease_held.set(0);
            return Ok(sleep(shutdown, self.lease.standby_interval()).await);
        }
        if self.lease.renew_in() == Some(Duration::ZERO) {
            let Some(kept) = until(shutdown, self.lease.renew(conn)).await else {
                return Ok(Flow::Stop);
            };
            let kept = kept.map_err(|source| {
                self.command_error("EVAL lease_renew", self.ctx.keys.lease(), source)
            })?;
            if !kept {
                events::lease_lost(&self.ctx.metrics, source, consumer);
                self.reset();
                return Ok(Flow::Continue);
            }
        }
        self.step(conn, blocking, shutdown).await
    }

    /// Commit what is ready and read ahead in one round trip, or wait for something to do.
    async fn step(
        &mut self,
        conn: &mut MultiplexedConnection,
        blocking: &mut Option<MultiplexedConnection>,
        shutdown: &CancellationToken,
    ) -> Result<Flow, MoverError> {
        let settings = Arc::clone(&self.ctx.settings);
        let batch_size = settings.batch.size.get();
        let prefetch = settings.batch.prefetch;
        let now = Instant::now();
        let deadline =
            batch::oldest_waiting(&self.pending).map(|seen| seen + settings.batch.timeout);
        let flush_partial = deadline.is_some_and(|d| now >= d);
        let max_envelopes = match &self.ctx.beat {
            Some(permits) => permits.available(),
            None => (prefetch / batch_size).max(1),
        };
        let timestamp = format_timestamp(chrono::Utc::now());
        let plan = batch::plan(
            &self.pending,
            Limits {
                batch_size,
                max_envelopes,
                flush_partial,
            },
            &settings.queues.source,
            &timestamp,
        );
        let remaining = self.pending.len() - plan.trim;
        let remaining_good = self
            .pending
            .iter()
            .skip(plan.trim)
            .filter(|p| p.is_good())
            .count();
        // Read until `prefetch` good messages are held, and never hold more than four times
        // that (a long run of bad messages behind a partial batch).
        let want = prefetch
            .saturating_sub(remaining_good)
            .min((4 * prefetch).saturating_sub(remaining));
        let read = (want > 0 && (!self.drained || !plan.is_empty())).then_some(Read {
            skip: remaining,
            count: want,
        });
        if !plan.is_empty() || read.is_some() {
            let Some(lease_value) = self.lease.value().map(str::to_owned) else {
                return Ok(Flow::Continue);
            };
            let outcome = until(
                shutdown,
                commit::commit_and_read(
                    conn,
                    &self.ctx.keys,
                    &settings.queues,
                    &lease_value,
                    &plan,
                    read,
                    chrono::Utc::now().timestamp_millis(),
                ),
            )
            .await;
            let items = match outcome {
                None => return Ok(Flow::Stop),
                Some(Err(CommitError::Fenced { .. })) => {
                    events::lease_lost(
                        &self.ctx.metrics,
                        &settings.queues.source,
                        &settings.replica.consumer_name,
                    );
                    self.reset();
                    return Ok(Flow::Continue);
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(items)) => items,
            };
            let done = Instant::now();
            if !plan.is_empty() {
                self.pending.drain(..plan.trim);
                self.log.envelopes_sent(
                    &self.ctx.metrics,
                    &plan.envelopes,
                    &settings.queues.source,
                    &settings.queues.destination,
                    done,
                );
                events::dead_letters_written(
                    &self.ctx.metrics,
                    plan.dead_letters.len(),
                    &settings.queues.source,
                    &settings.queues.dead_letter,
                );
                if let Some(permits) = &self.ctx.beat {
                    permits.spend(plan.envelopes.len());
                }
            }
            if let Some(r) = read {
                self.drained = items.len() < r.count;
                let max = settings.batch.max_message_bytes;
                self.pending
                    .extend(items.into_iter().map(|bytes| Peeked::new(bytes, max, done)));
            }
            return Ok(Flow::Continue);
        }
        self.log.roll(now);
        self.wait(blocking, shutdown, deadline).await
    }

    /// Nothing to do right now: wait for new messages, a deadline, a beat or a renewal.
    async fn wait(
        &mut self,
        blocking: &mut Option<MultiplexedConnection>,
        shutdown: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<Flow, MoverError> {
        let settings = Arc::clone(&self.ctx.settings);
        let renew_in = self.lease.renew_in().unwrap_or(Duration::ZERO);
        self.drained = false;
        if self.pending.is_empty() {
            // Block on the server until the source is non-empty. BLMOVE from the tail back to
            // the tail moves nothing, so a reply lost to a timeout or a crash loses nothing.
            let block = settings
                .redis
                .block_timeout
                .min(renew_in)
                .max(Duration::from_millis(10));
            if blocking.is_none() {
                let Some(conn) = until(
                    shutdown,
                    self.ctx
                        .connector
                        .blocking_connection(settings.redis.block_timeout),
                )
                .await
                else {
                    return Ok(Flow::Stop);
                };
                *blocking = Some(conn.map_err(|source| self.connect_error(source))?);
            }
            let Some(conn) = blocking.as_mut() else {
                return Ok(Flow::Continue);
            };
            let source = &settings.queues.source;
            let mut blmove = redis::cmd("BLMOVE");
            blmove
                .arg(source)
                .arg(source)
                .arg("RIGHT")
                .arg("RIGHT")
                .arg(block.as_secs_f64());
            let wait = blmove.query_async::<redis::Value>(conn);
            return match until(shutdown, wait).await {
                None => Ok(Flow::Stop),
                Some(Ok(_)) => Ok(Flow::Continue),
                Some(Err(source)) => {
                    *blocking = None;
                    Err(self.command_error("BLMOVE", settings.queues.source.clone(), source))
                }
            };
        }
        let now = Instant::now();
        let mut wake = now + settings.batch.poll_interval.min(renew_in);
        if let Some(d) = deadline {
            wake = wake.min(d.max(now));
        }
        if let Some(permits) = &self.ctx.beat {
            if permits.available() == 0 {
                // Beat mode: nothing may leave before the next tick; keep renewing meanwhile.
                let renew = tokio::time::sleep(renew_in);
                return Ok(tokio::select! {
                    granted = permits.wait(shutdown) => if granted { Flow::Continue } else { Flow::Stop },
                    _ = renew => Flow::Continue,
                });
            }
        }
        Ok(sleep(shutdown, wake.saturating_duration_since(now)).await)
    }

    async fn release(&mut self, conn: &mut MultiplexedConnection) {
        if !self.lease.is_held() {
            return;
        }
        let limit = Duration::from_secs(1).min(self.ctx.settings.redis.command_timeout);
        match tokio::time::timeout(limit, self.lease.release(conn)).await {
            Ok(Ok(())) => {
                tracing::info!(message = "lease released", source = %self.ctx.settings.queues.source)
            }
            Ok(Err(error)) => tracing::warn!(message = "lease not released", %error),
            Err(_) => tracing::warn!(message = "lease not released", error = "timed out"),
        }
        self.ctx.metrics.lease_held.set(0);
    }

    fn connect_error(&self, source: RedisError) -> MoverError {
        let info = self.ctx.settings.redis.connection.redis_settings();
        MoverError::Connect {
            addr: self.ctx.connector.addr(),
            user: info.username().unwrap_or("default").to_string(),
            source,
        }
    }

    fn command_error(&self, command: &'static str, key: String, source: RedisError) -> MoverError {
        MoverError::Command {
            command,
            key,
            source,
        }
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

async fn sleep(shutdown: &CancellationToken, d: Duration) -> Flow {
    match until(shutdown, tokio::time::sleep(d)).await {
        Some(()) => Flow::Continue,
        None => Flow::Stop,
    }
}
