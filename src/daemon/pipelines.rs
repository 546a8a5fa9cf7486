//! One [`Context`] per pipeline. A pipeline's context is the daemon's, with that pipeline's
//! lists in its settings and keys, its own labelled state gauges and readiness flags, and a
//! connector that reaches the node owning its slot (on a cluster). The mover reads
//! `ctx.settings.queues` and `ctx.keys` everywhere, so it needs nothing else to know which
//! pipeline it moves.

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::context::Context;
use crate::redis::keys::Keys;
use crate::scale::balance::Balance;
use crate::scale::cluster::Router;
use crate::scale::shards;
use crate::scale::slot::key_slot;
use crate::settings::{Queues, Settings};

/// The contexts of the daemon's movers: `base` itself for today's single pipeline, otherwise
/// one per shard, each reaching its own slot's primary through `router` on a cluster.
pub fn contexts(base: &Context, router: Option<&Router>) -> Vec<Context> {
    let scale = &base.settings.scale;
    if !scale.is_sharded() {
        return vec![base.clone()];
    }
    let labels: Vec<String> = scale.pipelines.iter().map(|q| q.sources_label()).collect();
    let health = base.health.pipelines(&labels);
    scale
        .pipelines
        .iter()
        .zip(health)
        .map(|(queues, health)| {
            let label = queues.sources_label();
            let settings = pipeline_settings(&base.settings, queues);
            let connector = match router {
                Some(router) => base
                    .connector
                    .for_slot(router, key_slot(&queues.processing)),
                None => base.connector.clone(),
            };
            Context {
                keys: Keys::new(&settings.replica.key_prefix, &queues.sources),
                settings: Arc::new(settings),
                connector,
                metrics: base.metrics.for_pipeline(&label),
                health,
                allowance: base.allowance.clone(),
                started_at: base.started_at,
            }
        })
        .collect()
}

/// `base` narrowed to the pipeline `queues`. A shard's batch ledger lives under the shard's
/// hash tag too (`batch:state:{s1}:<event_id>`), so a commit's ledger entries share its slot;
/// today's single pipeline keeps `REDIS_BATCH_STATE_PREFIX` as it is.
pub fn pipeline_settings(base: &Settings, queues: &Queues) -> Settings {
    let mut settings = Settings {
        queues: queues.clone(),
        ..base.clone()
    };
    if base.scale.is_sharded() {
        settings.ledger.state_prefix = shards::ledger_prefix(&base.ledger.state_prefix, queues);
    }
    settings
}

/// The shares of a sharded deployment's pipelines among its replicas (`None` for a single
/// pipeline, which every replica tries, as before). Until the first fleet beat, at most one
/// lease TTL, no mover tries a lease.
pub fn balance(settings: &Settings) -> Option<Balance> {
    settings
        .scale
        .is_sharded()
        .then(|| Balance::new(settings.scale.pipelines.len(), settings.replica.lease_ttl))
}

/// Longest the daemon spends leaving the fleet on shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(250);

/// Leave the fleet on shutdown (the movers have released their leases by now), so the other
/// replicas' shares grow at their next beat rather than a lease TTL later. Best effort and
/// bounded: a replica that cannot leave drops out when its last beat ages past the TTL.
pub async fn leave_fleet(ctx: &Context) {
    let leave = async {
        let mut conn = ctx.connector.command_connection().await.ok()?;
        redis::cmd("ZREM")
            .arg(ctx.keys.fleet())
            .arg(&ctx.settings.replica.consumer_name)
            .query_async::<i64>(&mut conn)
            .await
            .ok()
    };
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, leave).await;
}

/// The keys of the deployment as a whole (its replicas' heartbeats): named after the
/// configured lists, in braces when sharded so that they share one cluster slot.
pub fn deployment_keys(settings: &Settings) -> Keys {
    let prefix = &settings.replica.key_prefix;
    if settings.scale.is_sharded() {
        Keys::new(prefix, &[shards::deployment_tag(&settings.queues)])
    } else {
        Keys::new(prefix, &settings.queues.sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings;

    fn load(vars: &[(&str, &str)]) -> Settings {
        settings::load(&vars.to_vec(), None).unwrap()
    }

    #[test]
    fn a_single_pipeline_keeps_every_name_as_configured() {
        let s = load(&[]);
        let p = pipeline_settings(&s, &s.scale.pipelines[0]);
        assert_eq!(p.queues, s.queues);
        assert_eq!(p.ledger.state_prefix, "batch:state:");
        assert_eq!(
            deployment_keys(&s).replicas(),
            "batch_processor:replicas:raw_data_queue"
        );
        assert!(balance(&s).is_none());
    }

    #[test]
    fn a_shard_tags_its_ledger_and_the_deployment_tags_its_own_keys() {
        let s = load(&[("REDIS_SHARDS", "2")]);
        let shard = &s.scale.pipelines[1];
        let tag = crate::scale::slot::hash_tag(&shard.processing).to_owned();
        let p = pipeline_settings(&s, shard);
        assert_eq!(p.queues, *shard);
        assert_eq!(p.ledger.state_prefix, format!("batch:state:{{{tag}}}:"));
        let keys = deployment_keys(&s);
        assert_eq!(keys.fleet(), "batch_processor:fleet:{raw_data_queue}");
        assert_eq!(
            key_slot(&keys.fleet()),
            key_slot(&keys.replica("any")),
            "heartbeat keys share a slot"
        );
        assert!(balance(&s).is_some());
    }
}
