//! Waiting when there is nothing to send: block on the server while every source is empty,
//! poll while a partial batch waits for more messages or its deadline, or wait for the next
//! scheduled tick. Every wait also wakes in time to notice a lost lease (a third of its TTL)
//! and for the log summary.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{sleep, until, Mover, MoverError, Outcome};

/// Shortest pause between checks for new messages while a partial batch waits.
const MIN_POLL_DELAY: Duration = Duration::from_millis(1);

/// How soon to look at the lease again while it is too short to commit under.
const LEASE_RECHECK: Duration = Duration::from_millis(20);

/// What a blocking wait on one source returns: the source, its connection (for the next
/// wait) and the reply.
type Woken = (usize, MultiplexedConnection, Result<Value, RedisError>);

/// The mover's waiting state.
#[derive(Debug)]
pub(super) struct Idle {
    /// Per source, a connection of its own for blocking waits (a blocked multiplexed
    /// connection would stall every request on it), while no wait runs on it.
    blocking: Vec<Option<MultiplexedConnection>>,
    /// Per source, whether a wait runs on it.
    waiting: Vec<bool>,
    /// The waits that run, one per source at most. A wait that another source's news cut
    /// short keeps running here and serves the next wait, so no wait queues behind another
    /// on one connection.
    waits: JoinSet<Woken>,
    /// Next pause between checks while a partial batch waits: short right after new
    /// messages arrived, doubling up to `poll_interval` while none do.
    poll_delay: Duration,
}

impl Idle {
    pub(super) fn new(sources: usize) -> Self {
        Idle {
            blocking: (0..sources).map(|_| None).collect(),
            waiting: vec![false; sources],
            waits: JoinSet::new(),
            poll_delay: MIN_POLL_DELAY,
        }
    }

    /// New messages arrived: check again soon.
    pub(super) fn messages_arrived(&mut self) {
        self.poll_delay = MIN_POLL_DELAY;
    }

    /// Drop the blocking connections and their waits; the next blocking wait opens new
    /// ones.
    pub(super) fn close(&mut self) {
        // Dropping a JoinSet aborts what runs in it.
        self.waits = JoinSet::new();
        self.blocking.iter_mut().for_each(|c| *c = None);
        self.waiting.iter_mut().for_each(|w| *w = false);
    }

    /// The next poll pause, capped at `max`; the one after it is twice as long.
    fn next_poll_delay(&mut self, max: Duration) -> Duration {
        let delay = self.poll_delay.min(max);
        self.poll_delay = (self.poll_delay * 2).min(max);
        delay
    }
}

impl Mover {
    /// Nothing to do right now: wait for new messages, a deadline, a scheduled tick, or the
    /// lease keeper's news.
    pub(super) async fn wait(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, MoverError> {
        if !self.may_commit() {
            // The lease is too short to commit under: wait for the keeper's news. Neither
            // progress nor a failure (an expiry that follows counts as one).
            return Ok(sleep(shutdown, LEASE_RECHECK).await);
        }
        // Everything that could be sent was sent and answered: the mover is healthy, and waits
        // on purpose from here (for messages, a deadline or a tick).
        self.waited();
        // Wake to take in the keeper's news, and for the summary of held-back log lines.
        let lease_check = self.ctx.settings.replica.lease_ttl / 3;
        let wake_in = match self.log.summary_due_in(Instant::now()) {
            Some(due) => lease_check.min(due),
            None => lease_check,
        };
        self.tails.expect_more();
        if self.tails.is_empty() {
            return self
                .block_until_source_has_messages(shutdown, wake_in)
                .await;
        }
        let settings = &self.ctx.settings;
        let now = Instant::now();
        let poll = self.idle.next_poll_delay(settings.batch.poll_interval);
        let mut wake = now + poll.min(wake_in);
        if let Some(oldest) = self.tails.oldest_unplanned() {
            let deadline = oldest + settings.batch.timeout;
            wake = wake.min(deadline.max(now));
        }
        if let Some(check_in) = self.back_pressure.as_ref().and_then(|b| b.check_in(now)) {
            // Paused: the processing list is full; look again soon, without busy polling.
            return Ok(sleep(shutdown, check_in.min(wake_in)).await);
        }
        if let Some(bucket) = &mut self.rate {
            if bucket.available(now) == 0 {
                // Rate-limited: nothing may leave before the next token.
                let next = bucket.next_in(now).min(wake_in);
                return Ok(sleep(shutdown, next).await);
            }
        }
        if let Some(allowance) = &self.ctx.allowance {
            if allowance.available() == 0 {
                // Scheduled mode: nothing may leave before the next tick.
                let recheck = tokio::time::sleep(wake_in);
                return Ok(tokio::select! {
                    granted = allowance.wait(shutdown) => if granted { Outcome::Continue } else { Outcome::Stop },
                    _ = recheck => Outcome::Continue,
                });
            }
        }
        Ok(sleep(shutdown, wake.saturating_duration_since(now)).await)
    }

    /// Block on the server until a source is non-empty. `BLMOVE` from the tail back to the
    /// tail moves nothing, so a reply lost to a timeout or a crash loses nothing. With several
    /// sources, one wait runs on each, and the first answer wakes the mover.
    async fn block_until_source_has_messages(
        &mut self,
        shutdown: &CancellationToken,
        wake_in: Duration,
    ) -> Result<Outcome, MoverError> {
        let settings = std::sync::Arc::clone(&self.ctx.settings);
        let block_timeout = settings.redis.block_timeout;
        let block = block_timeout.min(wake_in).max(Duration::from_millis(10));
        for (k, source) in settings.queues.sources.iter().enumerate() {
            if self.idle.waiting[k] {
                continue;
            }
            let conn = match self.idle.blocking[k].take() {
                Some(conn) => conn,
                None => {
                    let connect = self.ctx.connector.blocking_connection(block_timeout);
                    let Some(conn) = until(shutdown, connect).await else {
                        return Ok(Outcome::Stop);
                    };
                    conn.map_err(|source| self.connect_error(source))?
                }
            };
            self.idle.waiting[k] = true;
            self.idle
                .waits
                .spawn(blmove(k, conn, source.clone(), block));
        }
        let Some(woken) = until(shutdown, self.idle.waits.join_next()).await else {
            return Ok(Outcome::Stop);
        };
        match woken {
            Some(Ok((k, conn, Ok(_)))) => {
                self.idle.waiting[k] = false;
                self.idle.blocking[k] = Some(conn);
                Ok(Outcome::Progress)
            }
            Some(Ok((k, _, Err(error)))) => {
                self.idle.close();
                let source = settings.queues.sources[k].clone();
                Err(self.command_error("BLMOVE", source, error))
            }
            // A wait that panicked, or none running: start afresh.
            Some(Err(_)) | None => {
                self.idle.close();
                Ok(Outcome::Continue)
            }
        }
    }
}

/// One blocking wait on `source`, on a connection of its own.
async fn blmove(
    k: usize,
    mut conn: MultiplexedConnection,
    source: String,
    block: Duration,
) -> Woken {
    let mut blmove = redis::cmd("BLMOVE");
    blmove
        .arg(&source)
        .arg(&source)
        .arg("RIGHT")
        .arg("RIGHT")
        .arg(block.as_secs_f64());
    let reply = blmove.query_async::<Value>(&mut conn).await;
    (k, conn, reply)
}
