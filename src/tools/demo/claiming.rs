//! The demo transformer with the batch ledger on: it speaks the claim/ack protocol instead of
//! popping, so the compose stack shows entries going `processing` → `completed`.
//!
//! Each round waits on the server without polling ([`library::wait_for_work`], on a
//! connection of its own, raced against shutdown), claims one envelope into this worker's
//! in-flight list, logs its summary line and acks all its messages completed under a fresh
//! ack id (retried under that id, so it counts once). Shutdown never drops a claimed
//! envelope: the claim and the ack are not raced against it, and an envelope whose ack did
//! not land stays in the in-flight list, where the daemon's recovery requeues it once this
//! worker's heartbeat is older than `REDIS_BATCH_CLAIM_TIMEOUT`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::consume::{log_envelope, ConsumeOptions, Consumed};
use super::{DemoError, Reconnecting, RETRY_DELAY};
use crate::ledger::library::{self, AckReport};
use crate::ledger::{Claim, LedgerError, LedgerKeys};
use crate::redis::connection::Connector;
use crate::settings::Settings;

/// Ack attempts per batch before the envelope is left to recovery.
const ACK_ATTEMPTS: u32 = 3;

/// One worker's protocol state: its name, the ledger's keys, and its connections.
struct Worker<'a> {
    name: String,
    keys: LedgerKeys,
    queue: &'a str,
    /// Heartbeat once a batch has been held this long (a third of the claim timeout).
    heartbeat_after: Duration,
    commands: Reconnecting,
}

/// Claim, log and ack envelopes until `opts.count` is reached or `shutdown` fires.
pub(super) async fn run(
    settings: &Settings,
    opts: ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<Consumed, DemoError> {
    let block = settings.redis.block_timeout;
    let connector = Connector::new(&settings.redis)?;
    let mut waits = Reconnecting::new(connector.clone(), Some(block));
    let mut w = Worker {
        name: worker_name(),
        keys: LedgerKeys::new(&settings.ledger.state_prefix),
        queue: &settings.queues.processing,
        heartbeat_after: settings.ledger.claim_timeout / 3,
        commands: Reconnecting::new(connector, None),
    };
    tracing::info!(
        message = "demo consumer started",
        redis = %settings.redis.display_addr(),
        processing = %w.queue,
        count = opts.count,
        ledger = true,
        worker = %w.name,
    );
    let mut done = Consumed::default();
    while opts.count.is_none_or(|c| done.envelopes < c) && !shutdown.is_cancelled() {
        match w.claim(&shutdown).await {
            Some(claim) => {
                done.envelopes += 1;
                done.messages += w.process(&claim, &shutdown).await;
            }
            None => {
                let Some(c) = waits.get(&shutdown).await else {
                    continue;
                };
                let waited = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    waited = library::wait_for_work(c, w.queue, block) => waited,
                };
                if let Err(LedgerError::Redis { source, .. }) = waited {
                    waits.failed("BLMOVE", source, &shutdown).await;
                }
            }
        }
    }
    tracing::info!(
        message = "demo consumer stopped",
        envelopes = done.envelopes,
        messages = done.messages,
    );
    Ok(done)
}

impl Worker<'_> {
    /// The oldest envelope, claimed; `None` when the queue is empty or Redis failed (logged,
    /// after a pause). The call itself is never cancelled: its envelope would be claimed
    /// with nobody knowing its delivery (recovery would still requeue it, but later).
    async fn claim(&mut self, shutdown: &CancellationToken) -> Option<Claim> {
        let c = self.commands.get(shutdown).await?;
        match library::claim(c, &self.keys, self.queue, &self.name).await {
            Ok(claim) => claim,
            Err(e) => {
                self.failed("batch_claim", e, shutdown).await;
                None
            }
        }
    }

    /// Log the claimed envelope's summary line and ack its messages completed; returns how
    /// many messages it carried.
    async fn process(&mut self, claim: &Claim, shutdown: &CancellationToken) -> u64 {
        let claimed_at = Instant::now();
        let size = log_envelope(&claim.envelope, self.queue);
        if claim.event_id.is_empty() {
            // No id, so no ack: it stays in the in-flight list (see the README's limits).
            tracing::warn!(message = "claimed an item that is not an envelope", worker = %self.name);
            return size;
        }
        // A real transformer works here, heartbeating every third of the claim timeout.
        if claimed_at.elapsed() >= self.heartbeat_after {
            if let Some(c) = self.commands.get(shutdown).await {
                if let Err(e) = library::heartbeat(c, &self.keys, &self.name).await {
                    self.failed("batch_heartbeat", e, shutdown).await;
                }
            }
        }
        self.ack(claim, size, shutdown).await;
        size
    }

    /// Ack `completed` messages of `claim` under one ack id, retried a few times (but not
    /// past shutdown); a batch whose ack never lands is left to recovery.
    async fn ack(&mut self, claim: &Claim, completed: u64, shutdown: &CancellationToken) {
        let ack_id = uuid::Uuid::new_v4().to_string();
        let report = AckReport {
            event_id: &claim.event_id,
            delivery: claim.delivery,
            completed,
            failed: 0,
            ack_id: &ack_id,
        };
        for _ in 0..ACK_ATTEMPTS {
            let Some(c) = self.commands.get(shutdown).await else {
                continue;
            };
            match library::ack(c, &self.keys, &report).await {
                Ok(a) => {
                    tracing::info!(
                        message = "batch acked",
                        event_id = %claim.event_id,
                        delivery = claim.delivery,
                        status = %a.status,
                        completed = a.completed,
                        total = a.total,
                        ack_id = %ack_id,
                    );
                    return;
                }
                Err(e @ LedgerError::Refused { .. }) => {
                    tracing::warn!(message = "ack refused", event_id = %claim.event_id, error = %e);
                    return;
                }
                Err(e) => self.failed("batch_ack", e, shutdown).await,
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::warn!(
            message = "ack not confirmed; recovery requeues the batch after the claim timeout",
            event_id = %claim.event_id,
            ack_id = %ack_id,
            worker = %self.name,
        );
    }

    /// Log a failed call: a Redis failure drops the connection; a refusal (a protocol key
    /// of the wrong type, say) is logged and paused on, since retrying at once would spin.
    async fn failed(
        &mut self,
        function: &'static str,
        e: LedgerError,
        shutdown: &CancellationToken,
    ) {
        match e {
            LedgerError::Redis { source, .. } => {
                self.commands.failed(function, source, shutdown).await
            }
            refused @ LedgerError::Refused { .. } => {
                tracing::warn!(message = "ledger call refused", function, error = %refused);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// A name unique to this process, as the protocol requires of live workers: the host, the
/// PID and a random part (two containers may share both).
fn worker_name() -> String {
    let host = gethostname::gethostname();
    let mut random = uuid::Uuid::new_v4().simple().to_string();
    random.truncate(8);
    format!(
        "demo-{}-{}-{random}",
        host.to_string_lossy(),
        std::process::id()
    )
}
