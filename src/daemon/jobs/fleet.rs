//! The fleet beat of a sharded deployment: this replica marks itself alive in the fleet set
//! and learns how many replicas are alive, which sizes its share of the pipelines.

use std::time::Duration;

use super::{JobsError, OwnConnection};
use crate::daemon::context::Context;
use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::scale::balance::Balance;
use crate::telemetry::metrics::Metrics;

const BEAT: &str = include_str!("../../redis/scripts/fleet_beat.lua");

/// Beats four times per lease TTL; a replica counts as alive for one TTL after its beat, so
/// a SIGKILLed replica leaves the count about when its leases expire.
#[derive(Debug)]
pub(super) struct FleetBeat {
    conn: OwnConnection,
    fleet: String,
    consumer: String,
    lease_ttl: Duration,
    balance: Balance,
    metrics: Metrics,
}

impl FleetBeat {
    pub(super) fn new(ctx: &Context, balance: Balance) -> Self {
        FleetBeat {
            conn: OwnConnection::new(&ctx.connector),
            fleet: ctx.keys.fleet(),
            consumer: ctx.settings.replica.consumer_name.clone(),
            lease_ttl: ctx.settings.replica.lease_ttl,
            balance,
            metrics: ctx.metrics.clone(),
        }
    }

    async fn beat(&mut self) -> Result<(), JobsError> {
        let alive_ms = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        // EVAL, not EVALSHA: a pipeline does not reload a script Redis forgot, and this one is
        // small.
        pipe.cmd("EVAL")
            .arg(BEAT)
            .arg(1)
            .arg(&self.fleet)
            .arg(&self.consumer)
            .arg(alive_ms);
        let (mut live,): (Vec<String>,) =
            self.conn.query("fleet", "EVAL fleet_beat", &pipe).await?;
        live.sort();
        let rank = live.iter().position(|name| *name == self.consumer);
        let replicas = live.len();
        let before = (self.balance.replicas(), self.balance.share());
        self.balance
            .replicas_seen(replicas, rank.unwrap_or(replicas));
        if before != (replicas, self.balance.share()) {
            tracing::info!(
                message = "fleet changed",
                replicas,
                share = self.balance.share(),
                held = self.balance.held()
            );
        }
        Ok(())
    }
}

impl Job for FleetBeat {
    fn name(&self) -> &'static str {
        "fleet"
    }

    fn period(&self) -> Duration {
        self.lease_ttl / 4
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let result = self.beat().await;
            if let Err(e) = &result {
                self.metrics.redis_error(e.kind());
            }
            Ok(result?)
        })
    }
}
