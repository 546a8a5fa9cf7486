//! The mover: the loop that owns the source lease, peeks the source's tail, and commits
//! envelopes and dead letters.
//!
//! Nothing is ever removed from the source except by the commit transaction, so at every
//! instant a message is either in the source or in exactly one envelope or dead-letter record.
//! The messages the mover holds in memory are copies of the source's tail; on any error the
//! copies are dropped, the lease is re-taken with a new token (fencing off anything still in
//! flight on the old connection), and the tail is read again.

pub mod allowance;
pub mod backoff;
pub mod commit;
pub mod lease;
pub mod plan;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio_util::sync::CancellationToken;

use crate::mover::backoff::Backoff;
use self::plan::{Limits, Peeked, Plan};
use self::commit::{CommitError, Read};
use crate::redis::connection;
use crate::daemon::context::Context;
use crate::envelope::format_timestamp;
use crate::telemetry::events::{self, EnvelopeLog};
use crate::mover::lease::Lease;

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
    #[error("{command} on {key} as user {user} failed: {source}")]
    Command {
        /// The command.
        command: &'static str,
        /// The key it worked on.
        key: String,
        /// ACL user (`default` when none is configured).
        user: String,
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

/// Shortest pause between checks for new messages while a partial batch waits.
const MIN_POLL_DELAY: Duration = Duration::from_millis(1);

/// Requests in flight at once. Two keep Redis busy while the mover builds the next one.
const PIPELINE_DEPTH: usize = 2;

type Reply = Pin<Box<dyn Future<Output = Result<Vec<Vec<u8>>, CommitError>> + Send>>;

/// A request sent and not yet answered.
struct InFlight {
    reply: Option<Reply>,
    /// Set when the first poll already produced the answer.
    ready: Option<Result<Vec<Vec<u8>>, CommitError>>,
    /// What it commits (envelope bytes already released).
    plan: Plan,
    /// Tail position of its first read item, and how many it asked for.
    read: Option<(u64, usize)>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("trim", &self.plan.trim)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

/// The mover's state.
///
/// Positions are counted from the source's tail as it was when the lease was taken, so they
/// do not move when commits trim the tail: `pending[0]` sits at `front`.
#[derive(Debug)]
pub struct Mover {
    ctx: Context,
    lease: Lease,
    /// Copies of the source's tail, oldest first; all still in Redis.
    pending: Vec<Peeked>,
    /// Position of `pending[0]`.
    front: u64,
    /// Position up to which requests in flight commit.
    planned: u64,
    /// Position of the next item to ask for.
    next_read: u64,
    /// The last read returned fewer items than asked: the source was drained then.
    drained: bool,
    /// Next pause between checks while a partial batch waits: short right after new
    /// messages arrived, doubling up to `poll_interval` while none do.
    poll_delay: Duration,
    inflight: VecDeque<InFlight>,
    log: EnvelopeLog,
    /// A commit (or an idle wait) succeeded since the last error: reset the backoff.
    healthy: bool,
}

/// How a step or a wait ended when it did not fail.
enum Flow {
    Continue,
    Stop,
}

impl Mover {
    /// A mover that has not touched Redis yet.
    pub fn new(ctx: Context) -> Self {
        let lease = Lease::new(
            ctx.keys.lease(),
            ctx.settings.replica.consumer_name.clone(),
            ctx.settings.replica.lease_ttl,
        );
        let log = EnvelopeLog::new(ctx.settings.log_envelopes_per_second);
        Mover {
            ctx,
            lease,
            pending: Vec::new(),
            front: 0,
            planned: 0,
            next_read: 0,
            drained: false,
            poll_delay: MIN_POLL_DELAY,
            inflight: VecDeque::new(),
            log,
            healthy: false,
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

    /// Drop every copy and every request in flight, and forget the lease: the next
    /// acquisition draws a new token, which fences off whatever is still queued in Redis.
    fn reset(&mut self) {
        self.healthy = false;
        self.forget_tail();
        self.lease.forget();
    }

    fn forget_tail(&mut self) {
        self.pending.clear();
        self.inflight.clear();
        self.front = 0;
        self.planned = 0;
        self.next_read = 0;
        self.drained = false;
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
                .turn(&mut conn, &mut blocking, shutdown, backoff)
                .await?;
            if let Flow::Stop = flow {
                self.release(&mut conn).await;
                return Ok(());
            }
        }
    }

    /// One turn of the loop: take or renew the lease, then move or wait.
    async fn turn(
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
            if won {
                events::lease_acquired(&self.ctx.metrics, source, consumer);
                self.forget_tail();
                return Ok(Flow::Continue);
            }
            // Standing by is healthy: Redis answered and another replica holds the lease.
            backoff.reset();
            self.ctx.metrics.lease_held.set(0);
            return Ok(sleep(shutdown, self.lease.standby_interval()).await);
        }
        if self.lease.renew_in() == Some(Duration::ZERO) && self.inflight.is_empty() {
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
        let healthy_before = self.healthy;
        let flow = self.step(conn, blocking, shutdown).await;
        if self.healthy && !healthy_before {
            backoff.reset();
        }
        flow
    }

    /// Send what is ready (up to [`PIPELINE_DEPTH`] requests in flight), then handle the
    /// oldest reply; or, with nothing in flight and nothing to send, wait.
    async fn step(
        &mut self,
        conn: &mut MultiplexedConnection,
        blocking: &mut Option<MultiplexedConnection>,
        shutdown: &CancellationToken,
    ) -> Result<Flow, MoverError> {
        // A renewal waits for the pipeline to empty, so it checks the value Redis holds.
        let renew_due = self.lease.renew_in() == Some(Duration::ZERO);
        while !renew_due && self.inflight.len() < PIPELINE_DEPTH {
            if !self.send_next(conn).await {
                break;
            }
        }
        let Some(mut oldest) = self.inflight.pop_front() else {
            let deadline = self.deadline();
            self.log.roll(Instant::now());
            return self.wait(blocking, shutdown, deadline).await;
        };
        let reply = match (oldest.ready.take(), oldest.reply.as_mut()) {
            (Some(ready), _) => ready,
            (None, Some(reply)) => match until(shutdown, reply).await {
                Some(r) => r,
                None => return Ok(Flow::Stop),
            },
            (None, None) => Err(CommitError::Protocol("request without reply".into())),
        };
        match reply {
            Ok(items) => {
                self.completed(oldest, items);
                Ok(Flow::Continue)
            }
            Err(CommitError::Fenced { .. }) => {
                let settings = &self.ctx.settings;
                events::lease_lost(
                    &self.ctx.metrics,
                    &settings.queues.source,
                    &settings.replica.consumer_name,
                );
                self.reset();
                Ok(Flow::Continue)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// When the partial batch waiting now must leave.
    fn deadline(&self) -> Option<Instant> {
        let unplanned = (self.planned - self.front) as usize;
        plan::oldest_waiting(&self.pending[unplanned..])
            .map(|seen| seen + self.ctx.settings.batch.timeout)
    }

    /// Plan and send the next request, if there is anything to commit or to read.
    async fn send_next(&mut self, conn: &MultiplexedConnection) -> bool {
        let settings = Arc::clone(&self.ctx.settings);
        let batch_size = settings.batch.size.get();
        let prefetch = settings.batch.prefetch;
        let unplanned = (self.planned - self.front) as usize;
        // A partial batch whose first message was seen this long ago has reached its deadline.
        // (`None` when the clock started less than a timeout ago: then nothing is that old.)
        let flush_seen_by = Instant::now().checked_sub(settings.batch.timeout);
        let max_envelopes = match &self.ctx.allowance {
            Some(permits) => permits.available(),
            None => (prefetch / batch_size).max(1),
        };
        let timestamp = format_timestamp(chrono::Utc::now());
        let plan = plan::plan(
            &self.pending[unplanned..],
            Limits {
                batch_size,
                max_envelopes,
                flush_seen_by,
                max_envelope_bytes: plan::MAX_ENVELOPE_BYTES,
                max_commit_bytes: plan::MAX_COMMIT_BYTES,
            },
            &settings.queues.source,
            &timestamp,
        );
        // Where the tail will be once this request's commit has run.
        let tail_after = self.planned + plan.trim as u64;
        let want = (tail_after + 2 * prefetch as u64).saturating_sub(self.next_read) as usize;
        let read = (want > 0 && (!self.drained || !plan.is_empty())).then(|| Read {
            skip: (self.next_read - tail_after) as usize,
            count: want,
        });
        if plan.is_empty() && read.is_none() {
            return false;
        }
        let (lease_before, lease_after) = if plan.is_empty() {
            let value = self.lease.value().unwrap_or_default();
            (value.clone(), value)
        } else {
            match self.lease.advance() {
                Some(values) => values,
                None => return false,
            }
        };
        let request = commit::Request::new(
            &self.ctx.keys,
            &settings.queues,
            commit::Commit {
                plan: &plan,
                pending: &self.pending[unplanned..],
                lease_before: &lease_before,
                lease_after: &lease_after,
                now_ms: chrono::Utc::now().timestamp_millis(),
            },
            read,
        );
        if let Some(permits) = &self.ctx.allowance {
            permits.spend(plan.envelopes.len());
        }
        let read_at = read.map(|r| (self.next_read, r.count));
        self.planned = tail_after;
        self.next_read += read.map_or(0, |r| r.count as u64);
        let conn = conn.clone();
        // Unconstrained: tokio's cooperative budget must not turn the first poll into a no-op.
        let mut reply: Reply = Box::pin(tokio::task::unconstrained(async move {
            request.send(conn, &settings.queues).await
        }));
        // Poll once so the request is handed to the connection now: requests reach Redis in
        // the order they were made, which the positions above rely on. Redis checks it too:
        // a commit must find the lease value its predecessor leaves, and a plain read checks
        // the same value with a GET.
        let ready = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
        let (reply, ready) = match ready {
            Poll::Ready(out) => (None, Some(out)),
            Poll::Pending => (Some(reply), None),
        };
        self.inflight.push_back(InFlight {
            reply,
            ready,
            plan,
            read: read_at,
        });
        true
    }

    /// A request succeeded: drop what it committed, keep what it read.
    fn completed(&mut self, done: InFlight, items: Vec<Vec<u8>>) {
        let settings = Arc::clone(&self.ctx.settings);
        let now = Instant::now();
        let plan = done.plan;
        if !plan.is_empty() {
            self.healthy = true;
            self.pending.drain(..plan.trim);
            self.front += plan.trim as u64;
            self.log.envelopes_sent(
                &self.ctx.metrics,
                &plan.envelopes,
                &settings.queues.source,
                &settings.queues.processing,
                now,
            );
            self.log.dead_letters_written(
                &self.ctx.metrics,
                plan.dead_letters.len(),
                &settings.queues.source,
                &settings.queues.dead_letter,
                now,
            );
        }
        let Some((start, count)) = done.read else {
            return;
        };
        let known_end = self.front + self.pending.len() as u64;
        if start != known_end {
            // An earlier read came back short, so this one may have skipped items: drop it.
            return;
        }
        let got = items.len();
        if got > 0 {
            self.poll_delay = MIN_POLL_DELAY;
        }
        let max = settings.batch.max_message_bytes;
        self.pending
            .extend(items.into_iter().map(|bytes| Peeked::new(bytes, max, now)));
        if got < count {
            self.drained = true;
            self.next_read = start + got as u64;
        } else {
            self.drained = false;
        }
    }

    /// Nothing to do right now: wait for new messages, a deadline, a scheduled tick or a renewal.
    async fn wait(
        &mut self,
        blocking: &mut Option<MultiplexedConnection>,
        shutdown: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<Flow, MoverError> {
        let settings = Arc::clone(&self.ctx.settings);
        // Wake for a lease renewal, and for the summary of held-back log lines.
        let renew_in = self.lease.renew_in().unwrap_or(Duration::ZERO);
        let wake_in = match self.log.summary_due_in(Instant::now()) {
            Some(due) => renew_in.min(due),
            None => renew_in,
        };
        self.drained = false;
        if self.pending.is_empty() {
            // Block on the server until the source is non-empty. BLMOVE from the tail back to
            // the tail moves nothing, so a reply lost to a timeout or a crash loses nothing.
            let block = settings
                .redis
                .block_timeout
                .min(wake_in)
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
                Some(Ok(_)) => {
                    self.healthy = true;
                    Ok(Flow::Continue)
                }
                Some(Err(source)) => {
                    *blocking = None;
                    Err(self.command_error("BLMOVE", settings.queues.source.clone(), source))
                }
            };
        }
        let now = Instant::now();
        let mut wake = now
            + self
                .poll_delay
                .min(settings.batch.poll_interval)
                .min(wake_in);
        self.poll_delay = (self.poll_delay * 2).min(settings.batch.poll_interval);
        if let Some(d) = deadline {
            wake = wake.min(d.max(now));
        }
        if let Some(permits) = &self.ctx.allowance {
            if permits.available() == 0 {
                // Scheduled mode: nothing may leave before the next tick; keep renewing meanwhile.
                let renew = tokio::time::sleep(wake_in);
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
        MoverError::Connect {
            addr: self.ctx.connector.addr(),
            user: self.user().to_string(),
            source,
        }
    }

    fn command_error(&self, command: &'static str, key: String, source: RedisError) -> MoverError {
        MoverError::Command {
            command,
            key,
            user: self.user().to_string(),
            source,
        }
    }

    fn user(&self) -> &str {
        self.ctx
            .settings
            .redis
            .connection
            .redis_settings()
            .username()
            .unwrap_or("default")
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
