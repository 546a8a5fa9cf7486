//! Operator commands over a sharded deployment: run the command once per pipeline, on that
//! pipeline's lists (and so on the node that owns its slot), and join the outputs.

use std::future::Future;

use crate::settings::Settings;

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
    if !settings.scale.is_sharded() {
        return command(settings.clone()).await;
    }
    let mut texts = Vec::new();
    let mut docs = Vec::new();
    for queues in &settings.scale.pipelines {
        let name = queues.sources_label();
        let narrowed = Settings {
            queues: queues.clone(),
            ..settings.clone()
        };
        let out = command(narrowed).await?;
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
