//! Per-pipeline series. With many pipelines (`REDIS_SHARDS`), the state gauges get a
//! `pipeline` label (`batch_processor_pipeline_lease_held{pipeline="…"}`), while the
//! unlabelled series of a single-pipeline deployment stay as they are and count pipelines
//! (`batch_processor_lease_held` is then how many this replica holds).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `pipeline` label: the pipeline's source lists joined with `,`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabel {
    /// The pipeline's sources label.
    pub pipeline: String,
}

/// A 0/1 state gauge of one mover, which also keeps the unlabelled total up to date.
///
/// A single-pipeline daemon's gauge is the unlabelled series itself (no total). A pipeline's
/// gauge is its labelled series, and every change is added to the total, so the total is
/// always the number of pipelines in that state, whatever order movers set their gauges in.
#[derive(Clone, Debug, Default)]
pub struct StateGauge {
    own: Gauge,
    total: Option<Gauge>,
}

impl StateGauge {
    /// Set this mover's value; returns the previous one.
    pub fn set(&self, value: i64) -> i64 {
        let old = self.own.set(value);
        if let Some(total) = &self.total {
            total.inc_by(value - old);
        }
        old
    }

    /// This mover's value (the total, for the unlabelled gauge of a sharded daemon).
    pub fn get(&self) -> i64 {
        self.own.get()
    }

    /// The series to register.
    pub(super) fn series(&self) -> Gauge {
        self.own.clone()
    }

    /// A pipeline's gauge `own` that adds its changes to this (unlabelled) one.
    fn child(&self, own: Gauge) -> StateGauge {
        StateGauge {
            own,
            total: Some(self.own.clone()),
        }
    }
}

/// The labelled families.
#[derive(Clone, Debug, Default)]
pub struct PipelineFamilies {
    lease_held: Family<PipelineLabel, Gauge>,
    paused: Family<PipelineLabel, Gauge>,
    stuck: Family<PipelineLabel, Gauge>,
    messages: Family<PipelineLabel, Counter>,
}

/// What one pipeline's mover updates besides the shared series.
#[derive(Clone, Debug)]
pub struct PipelineSeries {
    /// Lease held by this replica.
    pub lease_held: StateGauge,
    /// Paused by back-pressure.
    pub paused: StateGauge,
    /// Stuck.
    pub stuck: StateGauge,
    /// Messages sent inside envelopes.
    pub messages: Counter,
}

impl PipelineFamilies {
    /// Register the families (empty until a sharded daemon creates its pipelines).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "pipeline_lease_held",
            "1 while this replica holds the pipeline's leases (with REDIS_SHARDS)",
            self.lease_held.clone(),
        );
        registry.register(
            "pipeline_paused",
            "1 while back-pressure pauses the pipeline (with REDIS_SHARDS)",
            self.paused.clone(),
        );
        registry.register(
            "pipeline_stuck",
            "1 while the pipeline's mover is stuck (with REDIS_SHARDS)",
            self.stuck.clone(),
        );
        registry.register(
            "pipeline_messages",
            "Messages sent inside envelopes, by pipeline (with REDIS_SHARDS)",
            self.messages.clone(),
        );
    }

    /// The series of `pipeline`, whose state gauges feed the totals given.
    pub(super) fn series(&self, pipeline: &str, totals: [&StateGauge; 3]) -> PipelineSeries {
        let label = PipelineLabel {
            pipeline: pipeline.to_owned(),
        };
        let [lease_held, paused, stuck] = totals;
        PipelineSeries {
            lease_held: lease_held.child(self.lease_held.get_or_create(&label).clone()),
            paused: paused.child(self.paused.get_or_create(&label).clone()),
            stuck: stuck.child(self.stuck.get_or_create(&label).clone()),
            messages: self.messages.get_or_create(&label).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_counts_pipelines_in_the_state() {
        let total = StateGauge::default();
        let families = PipelineFamilies::default();
        let a = families.series("a", [&total, &total, &total]).lease_held;
        let b = families.series("b", [&total, &total, &total]).lease_held;
        a.set(1);
        b.set(1);
        a.set(1);
        assert_eq!(total.get(), 2);
        a.set(0);
        a.set(0);
        assert_eq!((total.get(), a.get(), b.get()), (1, 0, 1));
    }
}
