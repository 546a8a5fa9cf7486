//! The periodic `stats` log line, and the message-rate [`Snapshot`] it shares with the
//! heartbeat.

use std::time::Duration;

use tokio::time::Instant;

use crate::daemon::context::Context;
use crate::daemon::scheduler::{BoxFuture, Job, JobError};
use crate::settings::Queues;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// The periodic `stats` log line.
#[derive(Debug)]
pub(super) struct Stats {
    period: Duration,
    metrics: Metrics,
    health: Health,
    queues: Queues,
    last: Snapshot,
}

/// A message total and when it was read, for rates.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    at: Instant,
    pub(super) messages: u64,
}

impl Snapshot {
    pub(super) fn now(metrics: &Metrics) -> Self {
        Snapshot {
            at: Instant::now(),
            messages: metrics.messages.get(),
        }
    }

    /// Messages per second from `self` to `later`, rounded to hundredths; 0 over no time.
    pub(super) fn rate_to(&self, later: &Snapshot) -> f64 {
        let secs = later.at.saturating_duration_since(self.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let moved = later.messages.saturating_sub(self.messages) as f64;
        (moved / secs * 100.0).round() / 100.0
    }
}

impl Stats {
    pub(super) fn new(ctx: &Context) -> Self {
        Stats {
            period: ctx.settings.stats_interval,
            metrics: ctx.metrics.clone(),
            health: ctx.health.clone(),
            queues: ctx.settings.queues.clone(),
            last: Snapshot::now(&ctx.metrics),
        }
    }

    /// The summed last-seen lengths of `lists`, in the role `queue`.
    fn queue_length(&self, queue: &'static str, lists: &[String]) -> i64 {
        lists
            .iter()
            .map(|list| self.metrics.queue_length_of(queue, list))
            .sum()
    }
}

impl Job for Stats {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn period(&self) -> Duration {
        self.period
    }

    /// A line at start-up would only say zero.
    fn run_at_start(&self) -> bool {
        false
    }

    fn run(&mut self) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let now = Snapshot::now(&self.metrics);
            // List lengths come from the probe's gauges (at most a second old), so this
            // line costs Redis nothing and never waits on it.
            tracing::info!(
                messages = now.messages,
                batches = self.metrics.batches.get(),
                dead_letters = self.metrics.dead_letters.get(),
                source_len = self.queue_length("source", &self.queues.sources),
                processing_len =
                    self.queue_length("processing", std::slice::from_ref(&self.queues.processing)),
                dead_letter_len = self.queue_length(
                    "dead_letter",
                    std::slice::from_ref(&self.queues.dead_letter)
                ),
                rate_per_s = self.last.rate_to(&now),
                redis_reachable = self.health.redis_reachable(),
                "stats"
            );
            self.last = now;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::tests::context;

    #[test]
    fn period_follows_the_settings() {
        let ctx = context(&[("REDIS_STATS_INTERVAL", "7")]);
        assert_eq!(Stats::new(&ctx).period(), Duration::from_secs(7));
        assert!(!Stats::new(&ctx).run_at_start());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_is_messages_per_second_between_snapshots() {
        let metrics = Metrics::new();
        let first = Snapshot::now(&metrics);
        assert_eq!(first.rate_to(&Snapshot::now(&metrics)), 0.0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        metrics.messages.inc_by(10);
        assert_eq!(first.rate_to(&Snapshot::now(&metrics)), 3.33);
    }
}
