//! The mover's side of sharing pipelines among replicas ([`crate::scale::balance`]): claim
//! a place in this replica's share before trying a pipeline's leases, and hand the pipeline
//! over (release, then stay away) when the replica holds more than its share.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::{sleep, Mover, Outcome};
use crate::scale::balance::Balance;

/// How often a mover asks for a place before the first fleet beat.
const FIRST_BEAT_POLL: Duration = Duration::from_millis(50);

impl Mover {
    /// Share this mover's pipeline with the other replicas through `balance`.
    pub fn with_balance(mut self, balance: Balance) -> Self {
        self.balance = Some(balance);
        self
    }

    /// Whether this mover may try the leases now: always without balancing, otherwise when it
    /// holds or gets a place in the replica's share.
    pub(super) fn may_try_lease(&mut self) -> bool {
        let Some(balance) = &self.balance else {
            return true;
        };
        if self.claim.is_none() {
            self.claim = balance.claim();
        }
        let claimed = self.claim.is_some();
        if claimed {
            self.waiting_for_share = false;
        } else if !self.waiting_for_share {
            self.waiting_for_share = true;
            tracing::info!(
                message = "standing by",
                source = %self.ctx.settings.queues.sources_label(),
                reason = "this replica holds its share of the pipelines",
                share = balance.share(),
                replicas = balance.replicas(),
            );
        }
        claimed
    }

    /// The share is full: stand by (healthy, like standing by for another holder) before
    /// asking again.
    pub(super) async fn wait_for_share(&mut self, shutdown: &CancellationToken) -> Outcome {
        self.ctx.metrics.lease_held.set(0);
        match sleep(shutdown, self.share_wait()).await {
            Outcome::Stop => Outcome::Stop,
            _ => Outcome::Progress,
        }
    }

    /// How long to wait before asking for a place again: a standby interval, or 50 ms while
    /// the first fleet beat is still to come (it comes within milliseconds of the start).
    fn share_wait(&self) -> Duration {
        match &self.balance {
            Some(balance) if balance.replicas() == 0 => FIRST_BEAT_POLL,
            _ => self.lease.standby_interval(),
        }
    }

    /// Whether the replica holds more than its share and this pipeline is the one to go.
    pub(super) fn should_hand_over(&mut self) -> bool {
        self.claim.as_mut().is_some_and(|c| c.yield_if_over())
    }

    /// Release the leases so a replica under its share takes the pipeline, then stay away
    /// for two standby intervals, long enough for it to do so.
    pub(super) async fn hand_over(
        &mut self,
        conn: &mut MultiplexedConnection,
        shutdown: &CancellationToken,
    ) -> Outcome {
        self.release(conn).await;
        self.forget_room();
        self.reset();
        if let Some(balance) = &self.balance {
            tracing::info!(
                message = "pipeline handed over",
                source = %self.ctx.settings.queues.sources_label(),
                share = balance.share(),
                replicas = balance.replicas(),
            );
        }
        match sleep(shutdown, self.lease.standby_interval() * 2).await {
            Outcome::Stop => Outcome::Stop,
            _ => Outcome::Progress,
        }
    }
}
