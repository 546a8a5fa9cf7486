//! One turn of the mover's loop: keep the lease, send what is ready, handle the oldest reply.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::back_pressure::{BackPressure, Change};
use super::commit;
use super::lease::{Acquired, Standing};
use super::pipeline::Sent;
use super::plan::{self, Limits};
use super::{sleep, until, Mover, MoverError, Outcome};
use crate::envelope::format_timestamp;
use crate::redis::raw::{Keep, RawConnection};
use crate::telemetry::events;

impl Mover {
    /// One turn of the loop: take the lease (or take in the keeper's news of it), then move
    /// or wait.
    pub(super) async fn turn(
        &mut self,
        conn: &mut MultiplexedConnection,
        raw: &mut RawConnection,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, MoverError> {
        if shutdown.is_cancelled() {
            return Ok(Outcome::Stop);
        }
        if self.ctx.connector.generation() != self.generation {
            let addr = self.ctx.connector.addr();
            return Err(MoverError::PrimaryChanged { addr });
        }
        if !self.lease.is_held() {
            return self.take_lease(conn, shutdown).await;
        }
        match self.lease.refresh() {
            Standing::Held if self.should_hand_over() => {
                return Ok(self.hand_over(conn, shutdown).await);
            }
            Standing::Held => {}
            Standing::Lost => {
                self.lease_lost();
                return Ok(Outcome::Continue);
            }
            Standing::Expired => {
                // A failure, not a takeover; noted before the copies of the tail are dropped,
                // which tell whether messages wait.
                self.failed("the lease keeps running out before its renewal is confirmed (Redis unreachable for the keeper, or a round trip too long for REDIS_LEASE_TTL)");
                self.lease_lost();
                return Ok(Outcome::Continue);
            }
        }
        self.step(conn, raw, shutdown).await
    }

    /// Whether the lease lives long enough for a commit built now to run under it. Renewals
    /// come every third of the TTL, so this is false only while the keeper cannot reach
    /// Redis; then the mover waits rather than send commits that Redis would refuse.
    pub(super) fn may_commit(&self) -> bool {
        let settings = &self.ctx.settings;
        let margin = (settings.replica.lease_ttl / 3).min(settings.redis.command_timeout);
        self.lease.remaining() > margin
    }

    /// Try to take the lease; stand by for a while when another replica holds it.
    async fn take_lease(
        &mut self,
        conn: &mut MultiplexedConnection,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, MoverError> {
        if !self.may_try_lease() {
            return Ok(self.wait_for_share(shutdown).await);
        }
        let Some(acquired) = until(shutdown, self.lease.acquire(conn)).await else {
            return Ok(Outcome::Stop);
        };
        let key = self.lease.key().to_owned();
        let acquired =
            acquired.map_err(|source| self.command_error("EVAL lease_acquire", key, source))?;
        let settings = &self.ctx.settings;
        let (source, consumer) = (
            &settings.queues.sources_label(),
            &settings.replica.consumer_name,
        );
        match acquired {
            Acquired::Won => {
                self.standing_by_for = None;
                if let Some(back_pressure) = &mut self.back_pressure {
                    back_pressure.measure_now();
                }
                events::lease_acquired(&self.ctx.metrics, source, consumer);
                self.tails.reset();
                self.pipeline.clear();
                return Ok(Outcome::Continue);
            }
            Acquired::HeldBy(value) => {
                // The place in the share is for a pipeline this replica can take.
                self.claim = None;
                let holder = super::lease::lease_holder(&value);
                if self.standing_by_for.as_deref() != Some(holder) {
                    events::standing_by(source, consumer, holder);
                    self.standing_by_for = Some(holder.to_owned());
                }
            }
        }
        // Standing by is healthy: Redis answered and another replica holds the lease.
        self.ctx.metrics.lease_held.set(0);
        Ok(match sleep(shutdown, self.lease.standby_interval()).await {
            Outcome::Stop => Outcome::Stop,
            _ => Outcome::Progress,
        })
    }

    /// The lease is gone: a pause ends with it (the next holder measures for itself).
    pub(super) fn forget_room(&mut self) {
        if let Some(back_pressure) = &mut self.back_pressure {
            let change = back_pressure.forget(Instant::now());
            self.pause_changed(change);
        }
    }

    pub(super) fn lease_lost(&mut self) {
        self.forget_room();
        let settings = &self.ctx.settings;
        events::lease_lost(
            &self.ctx.metrics,
            &settings.queues.sources_label(),
            &settings.replica.consumer_name,
        );
        self.reset();
    }

    /// Send what is ready (up to [`super::pipeline::PIPELINE_DEPTH`] requests in flight),
    /// then handle the oldest reply; or, with nothing in flight and nothing to send, wait.
    async fn step(
        &mut self,
        conn: &MultiplexedConnection,
        raw: &mut RawConnection,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, MoverError> {
        if self.pipeline.is_empty() {
            match until(shutdown, self.measure_room(conn)).await {
                None => return Ok(Outcome::Stop),
                Some(measured) => measured?,
            }
        }
        let may_commit = self.may_commit();
        // A write that stalls (a silent link) must not hold up shutdown: dropped half-way, the
        // request never counts as sent, and the session's connections go with the mover.
        while may_commit && self.pipeline.has_room() {
            match until(shutdown, self.send_next(raw)).await {
                None => return Ok(Outcome::Stop),
                Some(false) => break,
                Some(true) => {}
            }
        }
        if self.pipeline.is_empty() {
            self.log.roll(Instant::now());
            return self.wait(shutdown).await;
        }
        let keep = Keep {
            up_to: super::inflight::largest_held(self.ctx.settings.batch.message.max_bytes),
        };
        let queues = &self.ctx.settings.queues;
        let Some(next) = until(shutdown, self.pipeline.next(raw, keep, queues)).await else {
            return Ok(Outcome::Stop);
        };
        let Some((sent, answer)) = next else {
            return Ok(Outcome::Continue);
        };
        self.answered(sent, answer)
    }

    /// With back-pressure, learn the processing list's length when the room ran out (only with
    /// nothing in flight, so the count of envelopes sent is settled).
    async fn measure_room(&mut self, conn: &MultiplexedConnection) -> Result<(), MoverError> {
        let now = Instant::now();
        if !self
            .back_pressure
            .as_ref()
            .is_some_and(|b| b.check_due(now))
        {
            return Ok(());
        }
        let processing = &self.ctx.settings.queues.processing;
        let len: usize = redis::cmd("LLEN")
            .arg(processing)
            .query_async(&mut conn.clone())
            .await
            .map_err(|source| self.command_error("LLEN", processing.clone(), source))?;
        if let Some(back_pressure) = &mut self.back_pressure {
            let change = back_pressure.measured(len, Instant::now());
            self.pause_changed(change);
        }
        Ok(())
    }

    /// Log and count entering or leaving the paused state.
    pub(super) fn pause_changed(&self, change: Option<Change>) {
        let settings = &self.ctx.settings;
        let (metrics, source) = (&self.ctx.metrics, &settings.queues.sources_label());
        match change {
            Some(Change::Paused) => events::paused(metrics, source, &settings.queues.processing),
            Some(Change::Resumed(paused_for)) => events::resumed(metrics, source, paused_for),
            None => {}
        }
    }

    /// What the next commit may carry: whole batches up to the read-ahead, within scheduled
    /// mode's allowance, the rate limit, the room on the processing list and the byte caps.
    fn limits(&mut self, now: Instant) -> Limits {
        let settings = &self.ctx.settings;
        let batch_size = settings.batch.size.get();
        let mut max_envelopes = match &self.ctx.allowance {
            Some(allowance) => allowance.available(),
            None => (settings.batch.prefetch / batch_size).max(1),
        };
        if let Some(bucket) = &mut self.rate {
            max_envelopes = max_envelopes.min(bucket.available(now));
        }
        if let Some(room) = self.back_pressure.as_ref().and_then(BackPressure::cap) {
            max_envelopes = max_envelopes.min(room);
        }
        let value_limit = self.value_limit.bytes(now);
        let batch_cap = settings
            .flow
            .max_batch_bytes
            .map_or(usize::MAX, |b| b.get());
        Limits {
            batch_size,
            max_envelopes,
            max_lower_envelopes: plan::max_lower_envelopes(batch_size),
            // A partial batch whose first message was seen this long ago has reached its
            // deadline. (`None` when the clock started less than a timeout ago: then
            // nothing is that old.)
            flush_seen_by: now.checked_sub(settings.batch.timeout),
            max_envelope_bytes: plan::MAX_ENVELOPE_BYTES
                .min(value_limit.saturating_sub(plan::ENVELOPE_OVERHEAD))
                .min(batch_cap),
            max_commit_bytes: plan::MAX_COMMIT_BYTES,
            max_value_bytes: value_limit,
        }
    }

    /// Plan and send the next request, if there is anything to commit or to read.
    async fn send_next(&mut self, raw: &mut RawConnection) -> bool {
        let settings = Arc::clone(&self.ctx.settings);
        let now = Instant::now();
        let limits = self.limits(now);
        let timestamp = format_timestamp(chrono::Utc::now());
        let runs = self.tails.runs();
        let plan = plan::plan(&runs, limits, &settings.queues, &timestamp);
        let largest_value = plan.largest_value(&runs);
        // Read ahead as far as the bound on bytes in flight allows.
        let grant = self.inflight.grant(
            self.tails.held_bytes(),
            self.pipeline.reserved_bytes(),
            2 * settings.batch.prefetch,
        );
        let read_ahead = grant.map_or(0, |g| g.items);
        let Some(reads) = self.tails.next_reads(&plan.trims, read_ahead) else {
            return false;
        };
        let read_grant = match (&reads[..], grant) {
            ([], _) | (_, None) => 0,
            (_, Some(g)) => g.bytes,
        };
        let (lease_before, lease_after) = if plan.is_empty() {
            let value = self.lease.value().unwrap_or_default();
            (value.clone(), value)
        } else {
            match self.lease.advance() {
                Some(values) => values,
                None => return false,
            }
        };
        let commit = commit::Commit {
            plan: &plan,
            pending: &runs,
            lease_before: &lease_before,
            lease_after: &lease_after,
            now_ms: chrono::Utc::now().timestamp_millis(),
            max_processing: self.back_pressure.as_ref().map(BackPressure::limit),
            replica_ack: settings.redis.replica_ack,
            ledger: settings.ledger.enabled.then_some(&settings.ledger),
        };
        let lrange: Vec<commit::Read> = reads
            .iter()
            .map(|&(source, r)| commit::Read {
                source,
                skip: r.skip,
                count: r.count,
            })
            .collect();
        let request = commit::Request::new(&self.ctx.keys, &settings.queues, commit, &lrange);
        if let Some(allowance) = &self.ctx.allowance {
            allowance.spend(plan.envelopes.len());
        }
        if let Some(bucket) = &mut self.rate {
            bucket.spend(plan.envelopes.len(), now);
        }
        if let Some(back_pressure) = &mut self.back_pressure {
            back_pressure.sent(plan.envelopes.len());
        }
        self.tails.reserve(&plan.trims, &reads);
        let sent = Sent {
            plan,
            reads,
            largest_value,
            read_grant,
        };
        self.pipeline
            .push(raw, request, sent, &settings.queues)
            .await;
        true
    }
}
