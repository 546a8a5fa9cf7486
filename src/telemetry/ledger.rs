//! The batch ledger's metrics and log lines.
//!
//! Claims, acks and most redeliveries happen in Redis functions called by transformers, not
//! in the daemon, so the counters mirror the ledger's `totals` hash (kept in Redis across all
//! transformers) as the recovery job reads it, and the gauge comes from the oldest claim.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of the ledger's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// For batches: `claimed`, `completed`, `completed_with_failures`, `redelivered`, `dead`;
    /// for items: `completed`, `failed`.
    pub outcome: &'static str,
}

/// The fields of the ledger's `totals` hash counted per batch, as metric labels.
pub const BATCH_OUTCOMES: [&str; 5] = [
    "claimed",
    "completed",
    "completed_with_failures",
    "redelivered",
    "dead",
];

/// The fields of the `totals` hash counted per item, and their labels.
pub const ITEM_OUTCOMES: [(&str, &str); 2] =
    [("items_completed", "completed"), ("items_failed", "failed")];

/// The ledger's series.
#[derive(Clone, Debug, Default)]
pub struct LedgerMetrics {
    /// Batches by outcome, over all transformers.
    pub batches: Family<OutcomeLabel, Counter>,
    /// Items by outcome, over all transformers.
    pub items: Family<OutcomeLabel, Counter>,
    /// Seconds since the oldest batch still being processed was claimed (0 when none).
    pub oldest_inflight: Gauge<f64, AtomicU64>,
}

impl LedgerMetrics {
    /// Register the series (clones share their values), each label at zero from the start.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ledger_batches",
            "Batches claimed, completed, completed with failures, redelivered and dead, over all transformers (from the ledger's totals in Redis)",
            self.batches.clone(),
        );
        registry.register(
            "ledger_items",
            "Items acked completed or failed, over all transformers",
            self.items.clone(),
        );
        registry.register(
            "ledger_oldest_inflight_seconds",
            "Age of the oldest claim not yet acked in full (0 when nothing is in flight)",
            self.oldest_inflight.clone(),
        );
        for outcome in BATCH_OUTCOMES {
            let _ = self.batches.get_or_create(&OutcomeLabel { outcome });
        }
        for (_, outcome) in ITEM_OUTCOMES {
            let _ = self.items.get_or_create(&OutcomeLabel { outcome });
        }
    }

    /// Bring a counter up to `total` as read from Redis. A total lower than the counter (the
    /// ledger was flushed) restarts the mirror from there instead of going backwards.
    pub fn mirror(family: &Family<OutcomeLabel, Counter>, outcome: &'static str, total: u64) {
        let counter = family.get_or_create(&OutcomeLabel { outcome });
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }
}

/// The recovery job gave batches of dead workers back (or dead-lettered them).
pub fn batches_recovered(requeued: u64, dead: u64, workers: u64) {
    if dead > 0 {
        tracing::error!(
            message = "batches dead-lettered",
            dead,
            requeued,
            workers,
            reason = "delivered REDIS_MAX_DELIVERIES times without completion",
        );
    } else {
        tracing::warn!(message = "batches redelivered", requeued, workers);
    }
}

/// The function library was loaded (at start-up, or because Redis had lost it).
pub fn library_loaded(redis: &str) {
    tracing::info!(
        message = "ledger library loaded",
        redis,
        library = crate::ledger::LIBRARY_NAME
    );
}
