//! This replica's heartbeat, read by `batch-processor status`: a hash describing the
//! process, and its score in the replica set.

use std::time::Duration;

use chrono::Utc;

use super::stats::Snapshot;
use super::{JobsError, OwnConnection};
use crate::daemon::context::Context;
use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::redis::keys::Keys;
use crate::telemetry::metrics::Metrics;

/// Heartbeat entries older than this are dropped from the replica set.
pub const REPLICA_RETENTION: Duration = Duration::from_secs(3600);

/// The commands of one heartbeat, for error messages.
const COMMANDS: &str = "MULTI/EXEC HSET, PEXPIRE, ZADD, ZREMRANGEBYSCORE";

/// This replica's heartbeat: its hash and its score in the replica set.
#[derive(Debug)]
pub(super) struct Heartbeat {
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
    pub(super) fn new(ctx: &Context) -> Self {
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
        let pipe = self.pipeline(&now, Utc::now().timestamp_millis());
        self.conn.query::<()>("heartbeat", COMMANDS, &pipe).await?;
        // The next rate is measured from the last heartbeat that was written.
        self.last = now;
        Ok(())
    }

    /// One atomic write: the hash (expiring after three lease TTLs without a beat), this
    /// replica's score, and the removal of entries past [`REPLICA_RETENTION`].
    fn pipeline(&self, now: &Snapshot, now_ms: i64) -> redis::Pipeline {
        let hash = self.keys.replica(&self.consumer);
        let replicas = self.keys.replicas();
        // With many pipelines the gauge counts the pipelines held.
        let holds_lease = if self.metrics.lease_held.get() >= 1 {
            "1"
        } else {
            "0"
        };
        let expire_ms = self.lease_ttl.saturating_mul(3).as_millis();
        let cutoff =
            now_ms.saturating_sub(i64::try_from(REPLICA_RETENTION.as_millis()).unwrap_or(i64::MAX));
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
            .arg("pipelines_held")
            .arg(self.metrics.lease_held.get().to_string())
            .arg("paused")
            .arg(if self.metrics.paused.get() >= 1 {
                "1"
            } else {
                "0"
            })
            .arg("messages")
            .arg(now.messages)
            .arg("batches")
            .arg(self.metrics.batches.get())
            .arg("dead_letters")
            .arg(self.metrics.dead_letters.get())
            .arg("rate")
            .arg(self.last.rate_to(now).to_string())
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
        pipe
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::tests::context;

    #[test]
    fn period_is_a_third_of_the_lease_ttl() {
        let ctx = context(&[("REDIS_LEASE_TTL", "3")]);
        assert_eq!(Heartbeat::new(&ctx).period(), Duration::from_secs(1));
    }
}
