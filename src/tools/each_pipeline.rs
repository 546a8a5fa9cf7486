//! Operator commands over a sharded deployment: run the command once per pipeline, on that
//! pipeline's lists and, on a cluster, on the node that owns its slot; then join the outputs.

use std::future::Future;

use crate::daemon::pipelines::pipeline_settings;
use crate::scale::cluster::{routed, router_if_cluster, Router};
use crate::settings::{Queues, Settings};

/// `settings` narrowed to the pipeline `queues`, aimed at the node that owns its slot.
pub async fn on_node(settings: &Settings, queues: Queues, router: Option<&Router>) -> Settings {
    let redis = routed(&settings.redis, router, &queues.processing).await;
    Settings {
        redis,
        ..pipeline_settings(settings, &queues)
    }
}

/// Run `command` on each pipeline in turn until one succeeds (a batch lives in exactly one
/// pipeline's ledger); the last failure when none does.
pub async fn first_pipeline<F, Fut, T, E>(settings: &Settings, command: F) -> Result<T, E>
where
    F: Fn(Settings) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let router = router_if_cluster(&settings.redis, settings.scale.cluster).await;
    let mut last = None;
    for queues in &settings.scale.pipelines {
        match command(on_node(settings, queues.clone(), router.as_ref()).await).await {
            Ok(found) => return Ok(found),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e),
        // Invariant: there is always at least one pipeline; run it unnarrowed anyway.
        None => command(settings.clone()).await,
    }
}

/// Run `command` with `settings` narrowed to each pipeline in turn; a single-pipeline
/// deployment runs it once, unchanged. Text outputs are joined under a `pipeline <name>`
/// heading each; with `json`, the result is one array of `{"pipeline", "result"}` objects.
pub async fn each_pipeline<F, Fut, E>(
    settings: &Settings,
    json: bool,
    command: F,
) -> Result<String, E>
where
    F: Fn(Settings) -> Fut,
    Fut: Future<Output = Result<String, E>>,
{
    let router = router_if_cluster(&settings.redis, settings.scale.cluster).await;
    if !settings.scale.is_sharded() {
        return command(on_node(settings, settings.queues.clone(), router.as_ref()).await).await;
    }
    let mut texts = Vec::new();
    let mut docs = Vec::new();
    for queues in &settings.scale.pipelines {
        let name = queues.sources_label();
        let out = command(on_node(settings, queues.clone(), router.as_ref()).await).await?;
        if json {
            let result = serde_json::from_str::<serde_json::Value>(&out)
                .unwrap_or(serde_json::Value::String(out));
            docs.push(serde_json::json!({ "pipeline": name, "result": result }));
        } else {
            texts.push(format!("pipeline {name}\n{out}"));
        }
    }
    Ok(if json {
        // Values built from parsed JSON and strings always serialise.
        serde_json::to_string_pretty(&docs).unwrap_or_default()
    } else {
        texts.join("\n\n")
    })
}
