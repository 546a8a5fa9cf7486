//! The readiness probe and the list-length gauges.

use std::time::Duration;

use super::{JobsError, OwnConnection};
use crate::daemon::context::Context;
use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::settings::Queues;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Period of the readiness probe. With [`PROBE_TIMEOUT_CAP`] below it, `/readyz` follows
/// Redis going away or coming back within two seconds.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Longest one round trip of a probe may take, whatever the command timeout is, so a probe
/// never hangs on a silent server. Opening a fresh connection (one round trip for the
/// client's handshake) gets the same bound again, apart: a bound shared by both would fail
/// every probe from a fresh connection on a link slower than half of it, and since a failed
/// probe starts afresh, readiness would never come back on such a link.
pub const PROBE_TIMEOUT_CAP: Duration = Duration::from_millis(750);

/// Readiness probe and list-length gauges.
#[derive(Debug)]
pub(super) struct Probe {
    conn: OwnConnection,
    queues: Queues,
    metrics: Metrics,
    health: Health,
    /// Bound of the query: the command timeout, capped.
    bound: Duration,
    /// Bound of opening the connection: the connect timeout, capped.
    open_bound: Duration,
}

impl Probe {
    pub(super) fn new(ctx: &Context) -> Self {
        let redis = &ctx.settings.redis;
        Probe {
            conn: OwnConnection::new(&ctx.connector),
            queues: ctx.settings.queues.clone(),
            metrics: ctx.metrics.clone(),
            health: ctx.health.clone(),
            bound: redis.command_timeout.min(PROBE_TIMEOUT_CAP),
            open_bound: redis.connect_timeout.min(PROBE_TIMEOUT_CAP),
        }
    }

    async fn probe(&mut self) -> Result<(), JobsError> {
        let open_bound = self.open_bound;
        let opened =
            tokio::time::timeout(open_bound, async { self.conn.open().await.map(|_| ()) }).await;
        self.in_time(opened, open_bound)?;
        let mut pipe = redis::pipe();
        pipe.cmd("PING").ignore();
        for list in self.lists() {
            pipe.cmd("LLEN").arg(list);
        }
        let bound = self.bound;
        let outcome =
            tokio::time::timeout(bound, self.conn.query("probe", "PING, LLEN", &pipe)).await;
        let lengths: Vec<i64> = self.in_time(outcome, bound)?;
        let roles = self.queues.sources.iter().map(|_| "source");
        let roles = roles.chain(["processing", "dead_letter"]);
        for ((role, list), len) in roles.zip(self.lists()).zip(lengths) {
            self.metrics.set_queue_length(role, list, len);
        }
        Ok(())
    }

    /// Every list the gauges show: the sources in priority order, then the processing and
    /// dead-letter lists.
    fn lists(&self) -> impl Iterator<Item = &String> {
        let q = &self.queues;
        q.sources.iter().chain([&q.processing, &q.dead_letter])
    }

    /// The result of a step that had `bound` to finish; past it, the connection is dropped
    /// (it may still get the late reply) so the next probe starts afresh.
    fn in_time<T>(
        &mut self,
        outcome: Result<Result<T, JobsError>, tokio::time::error::Elapsed>,
        bound: Duration,
    ) -> Result<T, JobsError> {
        outcome.unwrap_or_else(|_| {
            self.conn.reset();
            Err(JobsError::Timeout {
                what: "probe",
                addr: self.conn.addr(),
                timeout: bound,
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::tests::context;

    #[test]
    fn bound_is_the_command_timeout_capped() {
        let probe = Probe::new(&context(&[("REDIS_COMMAND_TIMEOUT", "0.2")]));
        assert_eq!(probe.period(), PROBE_PERIOD);
        assert_eq!(probe.bound, Duration::from_millis(200));
        assert_eq!(Probe::new(&context(&[])).bound, PROBE_TIMEOUT_CAP);
        let probe = Probe::new(&context(&[("REDIS_CONNECT_TIMEOUT", "0.3")]));
        assert_eq!(probe.open_bound, Duration::from_millis(300));
        assert_eq!(probe.bound, PROBE_TIMEOUT_CAP);
    }
}
