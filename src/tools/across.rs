//! The operator commands over every pipeline of a deployment (see [`super::each_pipeline`]):
//! what `cli` dispatches to for `dlq`, `batch` and `ledger install`. With one pipeline each
//! is the plain command, on the node that owns the pipeline's slot when Redis is a cluster.

use super::batch::{self, BatchError};
use super::dlq::{self, DlqError, ListOptions, ReplayFilter};
use super::each_pipeline::{each_pipeline, first_pipeline};
use crate::ledger::AckReport;
use crate::settings::Settings;

/// `dlq list` on every pipeline.
pub async fn dlq_list(settings: &Settings, opts: ListOptions) -> Result<String, DlqError> {
    let list = |s: Settings| async move { dlq::list(&s, opts).await };
    each_pipeline(settings, opts.json, list).await
}

/// `dlq replay` on every pipeline; each record goes back to its own pipeline's source.
pub async fn dlq_replay(
    settings: &Settings,
    limit: Option<usize>,
    filter: &ReplayFilter,
) -> Result<String, DlqError> {
    let replay = |s: Settings| {
        let filter = filter.clone();
        async move { dlq::replay(&s, limit, &filter).await.map(|r| r.to_string()) }
    };
    each_pipeline(settings, false, replay).await
}

/// `dlq purge` on every pipeline.
pub async fn dlq_purge(settings: &Settings) -> Result<String, DlqError> {
    let purge = |s: Settings| async move {
        let n = dlq::purge(&s).await?;
        Ok(format!("purged {}", dlq::dead_letters(n)))
    };
    each_pipeline(settings, false, purge).await
}

/// `batch show`: the batch in whichever pipeline's ledger holds it.
pub async fn batch_show(settings: &Settings, id: &str, json: bool) -> Result<String, BatchError> {
    let show = |s: Settings| async move { batch::show(&s, id, json).await };
    first_pipeline(settings, show).await
}

/// `batch list` on every pipeline.
pub async fn batch_list(
    settings: &Settings,
    opts: &batch::ListOptions,
) -> Result<String, BatchError> {
    let list = |s: Settings| async move { batch::list(&s, opts).await };
    each_pipeline(settings, opts.json, list).await
}

/// `batch ack` in whichever pipeline's ledger holds the batch.
pub async fn batch_ack(settings: &Settings, report: AckReport<'_>) -> Result<String, BatchError> {
    let ack = |s: Settings| async move { batch::ack(&s, report).await };
    first_pipeline(settings, ack).await
}

/// `ledger install` on every pipeline's node, so every primary that holds a pipeline has the
/// function library.
pub async fn ledger_install(settings: &Settings) -> Result<String, BatchError> {
    let install = |s: Settings| async move { batch::install(&s).await };
    each_pipeline(settings, false, install).await
}
