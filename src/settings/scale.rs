//! Scale-out settings: how many pipelines (`REDIS_SHARDS`) and whether Redis is a cluster
//! (`REDIS_CLUSTER`), validated against the list names.

use super::raw::RawSettings;
use super::{LedgerSettings, Queues, SettingsError};
use crate::scale::{shards, tags};

/// Whether Redis is a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMode {
    /// Ask the server at start-up (`CLUSTER INFO`).
    Auto,
    /// A cluster: route each pipeline to the node owning its slot.
    On,
    /// One server (or a Sentinel-managed primary).
    Off,
}

/// The deployment's pipelines and how Redis is laid out.
#[derive(Debug, Clone)]
pub struct ScaleSettings {
    /// `REDIS_SHARDS`: 0 for today's single pipeline under the configured names.
    pub shards: usize,
    /// `REDIS_CLUSTER`.
    pub cluster: ClusterMode,
    /// Every pipeline's lists: one (the configured names) when `shards` is 0.
    pub pipelines: Vec<Queues>,
}

impl ScaleSettings {
    /// Whether this deployment runs more than today's single pipeline.
    pub fn is_sharded(&self) -> bool {
        self.shards > 0
    }
}

/// Shards and cluster mode. With shards, names may not carry braces (each shard adds its own
/// tag); on a cluster, every pipeline's keys must share a slot.
pub(super) fn validate(
    raw: &RawSettings,
    queues: &Queues,
    key_prefix: &str,
    ledger: &LedgerSettings,
) -> Result<ScaleSettings, SettingsError> {
    let max = shards::MAX_SHARDS;
    let shard_count: usize = raw.int("shards", 0, max)?;
    // The booleans `REDIS_BATCH_LEDGER` takes, plus `auto`.
    let value = raw.required("cluster")?;
    let cluster = match value.trim().to_ascii_lowercase().as_str() {
        "auto" => ClusterMode::Auto,
        "true" | "1" | "yes" | "on" => ClusterMode::On,
        "false" | "0" | "no" | "off" => ClusterMode::Off,
        _ => {
            let expected = "auto, true or false";
            return Err(SettingsError::invalid("cluster", value, expected));
        }
    };
    if shard_count > 0 {
        let named = [
            ("raw_data_queue", queues.sources_label()),
            ("processing_queue", queues.processing.clone()),
            ("dead_letter_queue", queues.dead_letter.clone()),
            ("key_prefix", key_prefix.to_owned()),
            ("batch_state_prefix", ledger.state_prefix.clone()),
        ];
        for (key, value) in named {
            if value.contains(['{', '}']) {
                return Err(SettingsError::invalid(
                    key,
                    &value,
                    "a name without { or } when REDIS_SHARDS is set (each shard adds its own hash tag)",
                ));
            }
        }
    }
    let scale = ScaleSettings {
        shards: shard_count,
        cluster,
        pipelines: shards::pipelines(queues, shard_count),
    };
    if cluster == ClusterMode::On {
        check_slots(&scale, key_prefix, ledger)?;
    }
    Ok(scale)
}

/// On a cluster: every pipeline's keys (with the ledger on, its keys too) in one slot, or a
/// bad `REDIS_RAW_DATA_QUEUE` whose message explains the hash-tag rule and shows corrected
/// names.
pub fn check_slots(
    scale: &ScaleSettings,
    key_prefix: &str,
    ledger: &LedgerSettings,
) -> Result<(), SettingsError> {
    for pipeline in &scale.pipelines {
        let ledger_prefix = match (ledger.enabled, scale.is_sharded()) {
            (false, _) => None,
            (true, false) => Some(ledger.state_prefix.clone()),
            (true, true) => Some(shards::ledger_prefix(&ledger.state_prefix, pipeline)),
        };
        if let Err(e) = tags::check(pipeline, key_prefix, ledger_prefix.as_deref()) {
            return Err(SettingsError::invalid(
                "raw_data_queue",
                &pipeline.sources_label(),
                e.to_string(),
            ));
        }
    }
    Ok(())
}
