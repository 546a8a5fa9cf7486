//! `status` of a sharded deployment (`REDIS_SHARDS`): one row per pipeline with its lists,
//! totals and the replica holding it, then the deployment's replicas.
//!
//! Each pipeline is read like a single-pipeline deployment (one consistent snapshot of its
//! keys, which share one slot), on a connection to the node that owns that slot.

use std::fmt::Write as _;

use serde::Serialize;

use super::{read, ListLengths, Replica, StatusError, Totals};
use crate::scale::cluster::Router;
use crate::scale::shards;
use crate::settings::{Queues, Settings};
use crate::tools::each_pipeline::on_node;

/// One pipeline's state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PipelineStatus {
    /// The pipeline's name: its source lists joined with `,`.
    pub name: String,
    /// Who holds the pipeline's leases (consumer name), `null` when nobody does.
    pub holder: Option<String>,
    /// Its lists and their lengths.
    pub queues: ListLengths,
    /// Its totals.
    pub totals: Totals,
}

/// Everything `status` reports for a sharded deployment (the `--json` document).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardedStatus {
    /// The configured Redis address (never contains credentials).
    pub redis: String,
    /// Every pipeline, in shard order.
    pub pipelines: Vec<PipelineStatus>,
    /// Totals over all pipelines.
    pub totals: Totals,
    /// The deployment's live replicas.
    pub replicas: Vec<Replica>,
    /// Sum of the live replicas' rates, messages per second.
    pub rate_per_s: f64,
}

/// Read every pipeline, then the replicas.
pub async fn read_sharded(
    settings: &Settings,
    router: Option<&Router>,
) -> Result<ShardedStatus, StatusError> {
    let mut pipelines = Vec::new();
    let mut totals = Totals::default();
    for queues in &settings.scale.pipelines {
        let status = read(&on_node(settings, queues.clone(), router).await).await?;
        totals.messages += status.totals.messages;
        totals.batches += status.totals.batches;
        totals.dead_letters += status.totals.dead_letters;
        pipelines.push(PipelineStatus {
            name: queues.sources_label(),
            holder: status.lease.map(|l| l.holder),
            queues: status.queues,
            totals: status.totals,
        });
    }
    // The deployment's heartbeats live under its tag (see `daemon::pipelines`); every key
    // this read touches is named after it, so they share the tag's slot.
    let tag = shards::deployment_tag(&settings.queues);
    let deployment = Queues {
        sources: vec![tag.clone()],
        processing: tag.clone(),
        dead_letter: tag,
    };
    let fleet_settings = on_node(settings, deployment, router).await;
    let fleet = read(&fleet_settings).await?;
    Ok(ShardedStatus {
        redis: fleet.redis,
        pipelines,
        totals,
        replicas: fleet.replicas,
        rate_per_s: fleet.rate_per_s,
    })
}

/// The human-readable table.
pub fn render_sharded(s: &ShardedStatus) -> String {
    let mut out = String::new();
    let width = s
        .pipelines
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    // Writing into a String cannot fail.
    let _ = writeln!(out, "redis          {}", s.redis);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10} {:>10} {:>12} {:>12}  holder",
        "pipeline", "source", "processing", "dead letters", "messages"
    );
    for p in &s.pipelines {
        let source: u64 = p.queues.sources.iter().map(|l| l.length).sum();
        let holder = p.holder.as_deref().unwrap_or("(free)");
        let _ = writeln!(
            out,
            "{:<width$}  {source:>10} {:>10} {:>12} {:>12}  {holder}",
            p.name, p.queues.processing.length, p.queues.dead_letter.length, p.totals.messages
        );
    }
    let _ = writeln!(
        out,
        "totals         messages {}  batches {}  dead letters {}",
        s.totals.messages, s.totals.batches, s.totals.dead_letters
    );
    let _ = writeln!(out, "rate           {:.1} messages/s", s.rate_per_s);
    let _ = write!(out, "replicas       {} alive", s.replicas.len());
    for r in &s.replicas {
        let held = s
            .pipelines
            .iter()
            .filter(|p| p.holder.as_deref() == Some(&r.consumer))
            .count();
        let _ = write!(
            out,
            "\n  {}  host {}  pipelines {held}  messages {}  rate {:.1}/s",
            r.consumer, r.host, r.messages, r.rate_per_s
        );
    }
    out
}
