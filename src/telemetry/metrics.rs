//! Prometheus metrics. One [`Metrics`] per process; clones share the same series.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::redis::ErrorKind;
use crate::telemetry::ledger::LedgerMetrics;

/// Labels for the list-length gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// `source`, `processing` or `dead_letter`.
    pub queue: &'static str,
    /// The list's name (with several source lists, one series each).
    pub list: String,
}

/// Label for the Redis error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorKindLabel {
    /// [`ErrorKind::as_str`], e.g. `io`, `auth`, `wrong_type`, `timeout`.
    pub kind: &'static str,
}

/// Label for dead letters by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`crate::message::Rejection::class`], e.g. `not_json`, `unpaired_surrogate`.
    pub reason: &'static str,
}

/// Every series the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    /// Messages sent inside envelopes.
    pub messages: Counter,
    /// Envelopes sent.
    pub batches: Counter,
    /// Messages written to the dead-letter list.
    pub dead_letters: Counter,
    /// Messages per envelope.
    pub batch_size: Histogram,
    /// Seconds between first seeing a batch's oldest message and sending the batch.
    pub oldest_message_age: Histogram,
    /// Length of each list, refreshed by the scheduler.
    pub queue_length: Family<QueueLabel, Gauge>,
    /// Redis errors by class.
    pub redis_errors: Family<ErrorKindLabel, Counter>,
    /// 1 while this replica holds the source lease.
    pub lease_held: Gauge,
    /// Commits undone because the source's tail was not what the daemon read.
    pub source_changed: Counter,
    /// Commits that fewer replicas than `REDIS_MIN_REPLICAS_ACK` acknowledged in time.
    pub commits_unreplicated: Counter,
    /// 1 while the mover is stuck (commits failing with a backlog waiting).
    pub mover_stuck: Gauge,
    /// Times the mover became stuck.
    pub mover_stuck_episodes: Counter,
    /// Dead letters by the class of their reason.
    pub dead_letters_by_reason: Family<ReasonLabel, Counter>,
    /// 1 while back-pressure pauses the mover.
    pub paused: Gauge,
    /// Seconds spent paused by back-pressure (added when a pause ends).
    pub paused_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// 1 while `/readyz` answers 200; refreshed on every scrape, for alerts.
    pub ready: Gauge,
    /// The batch ledger's series (see [`crate::telemetry::ledger`]).
    pub ledger: LedgerMetrics,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every series.
    pub fn new() -> Self {
        let mut metrics = Metrics {
            messages: Counter::default(),
            batches: Counter::default(),
            dead_letters: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 18)),
            oldest_message_age: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            queue_length: Family::default(),
            redis_errors: Family::default(),
            lease_held: Gauge::default(),
            source_changed: Counter::default(),
            commits_unreplicated: Counter::default(),
            mover_stuck: Gauge::default(),
            mover_stuck_episodes: Counter::default(),
            dead_letters_by_reason: Family::default(),
            paused: Gauge::default(),
            paused_seconds: Counter::default(),
            ready: Gauge::default(),
            ledger: LedgerMetrics::default(),
            registry: Arc::new(Registry::default()),
        };
        let mut registry = Registry::with_prefix("batch_processor");
        metrics.register(&mut registry);
        metrics.registry = Arc::new(registry);
        metrics
    }

    /// Register every series (clones share their values) under its name and help text: the
    /// flow of messages first.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "messages",
            "Messages sent inside envelopes",
            self.messages.clone(),
        );
        registry.register("batches", "Envelopes sent", self.batches.clone());
        registry.register(
            "dead_letters",
            "Messages written to the dead-letter list",
            self.dead_letters.clone(),
        );
        registry.register(
            "batch_size",
            "Messages per envelope",
            self.batch_size.clone(),
        );
        registry.register(
            "oldest_message_age_seconds",
            "Age of a batch's oldest message (since first seen) when the batch is sent",
            self.oldest_message_age.clone(),
        );
        registry.register(
            "queue_length",
            "Length of each source list, the processing list and the dead-letter list",
            self.queue_length.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis errors by kind",
            self.redis_errors.clone(),
        );
        self.register_state(registry);
        self.ledger.register(registry);
    }

    /// The series about the mover's state (lease, stuck, pause) and the labelled families,
    /// with the families' common series created at zero.
    fn register_state(&self, registry: &mut Registry) {
        registry.register(
            "lease_held",
            "1 while this replica holds the source lease",
            self.lease_held.clone(),
        );
        registry.register(
            "source_changed",
            "Commits undone because something other than the daemon changed the source's tail (RPUSH, LREM, LSET, another consumer)",
            self.source_changed.clone(),
        );
        registry.register(
            "commits_unreplicated",
            "Commits that fewer replicas than REDIS_MIN_REPLICAS_ACK acknowledged within REDIS_MIN_REPLICAS_TIMEOUT (WAIT); they stand, but a failover now could lose them",
            self.commits_unreplicated.clone(),
        );
        registry.register(
            "mover_stuck",
            "1 while the mover's commits keep failing with a backlog waiting (see /readyz)",
            self.mover_stuck.clone(),
        );
        registry.register(
            "mover_stuck_episodes",
            "Times the mover became stuck",
            self.mover_stuck_episodes.clone(),
        );
        registry.register(
            "dead_letters_by_reason",
            "Messages written to the dead-letter list, by the class of their reason",
            self.dead_letters_by_reason.clone(),
        );
        registry.register(
            "paused",
            "1 while the processing list is at REDIS_MAX_PROCESSING_QUEUE_LENGTH and the mover waits",
            self.paused.clone(),
        );
        registry.register(
            "paused_seconds",
            "Seconds spent paused by back-pressure (added when a pause ends)",
            self.paused_seconds.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers 200 (Redis answers, the mover runs and is not stuck)",
            self.ready.clone(),
        );
        for reason in crate::message::Rejection::CLASSES {
            let _ = self
                .dead_letters_by_reason
                .get_or_create(&ReasonLabel { reason });
        }
        // Series for the common error kinds exist from the start, at zero, so dashboards and
        // alerts see them before the first error.
        for kind in [
            ErrorKind::Io,
            ErrorKind::Timeout,
            ErrorKind::Auth,
            ErrorKind::NoPerm,
            ErrorKind::WrongType,
            ErrorKind::Oom,
            ErrorKind::Fenced,
        ] {
            let _ = self.redis_errors.get_or_create(&ErrorKindLabel {
                kind: kind.as_str(),
            });
        }
    }

    /// Count one Redis error of class `kind`.
    pub fn redis_error(&self, kind: ErrorKind) {
        self.redis_errors
            .get_or_create(&ErrorKindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Set the length gauge of the list `list` in the role `queue` (`source`, `processing` or
    /// `dead_letter`).
    pub fn set_queue_length(&self, queue: &'static str, list: &str, len: i64) {
        self.queue_gauge(queue, list).set(len);
    }

    /// The last length seen of the list `list` in the role `queue`.
    pub fn queue_length_of(&self, queue: &'static str, list: &str) -> i64 {
        self.queue_gauge(queue, list).get()
    }

    fn queue_gauge(&self, queue: &'static str, list: &str) -> Gauge {
        let label = QueueLabel {
            queue,
            list: list.to_owned(),
        };
        self.queue_length.get_or_create(&label).clone()
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        m.messages.inc_by(3);
        m.redis_error(ErrorKind::Io);
        m.set_queue_length("source", "raw", 7);
        m.batch_size.observe(3.0);
        let text = m.encode();
        assert!(text.contains("batch_processor_messages_total 3"), "{text}");
        assert!(
            text.contains("batch_processor_redis_errors_total{kind=\"io\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("batch_processor_queue_length{queue=\"source\",list=\"raw\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("batch_processor_batch_size_count 1"),
            "{text}"
        );
    }
}
