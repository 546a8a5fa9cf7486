//! The hash-tag rule on Redis Cluster: every key of a pipeline (its lists, leases, totals and
//! heartbeats) must live in one slot, because each commit is one transaction over all of them.
//! [`check`] finds a pipeline that breaks the rule and says how to fix its names.

use super::shards::shared_slot;
use super::slot::{hash_tag, key_slot};
use crate::ledger::LedgerKeys;
use crate::redis::keys::Keys;
use crate::settings::Queues;

/// A pipeline whose keys would fall in different slots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "on Redis Cluster all of a pipeline's keys must share one slot, so every list name needs \
     the same {{hash tag}} (Redis hashes only the text between the first {{ and the next }}); \
     {detail}; for example REDIS_RAW_DATA_QUEUE={sources} REDIS_PROCESSING_QUEUE={processing} \
     REDIS_DEAD_LETTER_QUEUE={dead_letter}{prefix_hint}{ledger_hint}, or leave the names bare and set \
     REDIS_SHARDS=N to get N tagged pipelines"
)]
pub struct CrossSlot {
    /// Which keys disagree, with their slots.
    pub detail: String,
    /// The corrected source list(s), comma-separated.
    pub sources: String,
    /// The corrected processing list.
    pub processing: String,
    /// The corrected dead-letter list.
    pub dead_letter: String,
    /// Advice about `REDIS_KEY_PREFIX` when it carries braces of its own.
    pub prefix_hint: String,
    /// The corrected `REDIS_BATCH_STATE_PREFIX`, with the ledger on.
    pub ledger_hint: String,
}

/// Every key a pipeline's commit, lease, heartbeat and (with `ledger`, its prefix) batch
/// ledger touch together.
pub fn pipeline_keys(queues: &Queues, prefix: &str, ledger: Option<&str>) -> Vec<String> {
    let keys = Keys::new(prefix, &queues.sources);
    let mut all = queues.sources.clone();
    all.extend([queues.processing.clone(), queues.dead_letter.clone()]);
    all.extend(keys.leases().iter().cloned());
    all.extend([keys.stats(), keys.replicas(), keys.replica("replica")]);
    if let Some(ledger) = ledger {
        let l = LedgerKeys::new(ledger);
        all.extend([l.batch("id"), l.inflight("worker"), l.workers(), l.claims()]);
        all.extend([l.finished(), l.totals()]);
    }
    all
}

/// The slot all of `queues`' keys share, or why they do not share one.
pub fn check(queues: &Queues, prefix: &str, ledger: Option<&str>) -> Result<u16, Box<CrossSlot>> {
    let keys = pipeline_keys(queues, prefix, ledger);
    if let Some(slot) = shared_slot(&keys) {
        return Ok(slot);
    }
    let first = &keys[0];
    let odd = keys
        .iter()
        .find(|k| key_slot(k) != key_slot(first))
        .unwrap_or(first);
    // The first source's own tag if it has one, else its name: names already carrying that
    // tag stay as they are.
    let first_source = queues.sources.first().map_or("p", String::as_str);
    let tag = match hash_tag(first_source) {
        t if t != first_source => t.to_owned(),
        _ => bare(first_source),
    };
    let fix = |name: &str| {
        if name.contains(&format!("{{{tag}}}")) && hash_tag(name) == tag {
            name.to_owned()
        } else {
            format!("{}:{{{tag}}}", bare(name))
        }
    };
    let prefix_hint = if prefix.contains(['{', '}']) {
        format!(" REDIS_KEY_PREFIX={}", bare(prefix))
    } else {
        String::new()
    };
    Err(Box::new(CrossSlot {
        detail: format!(
            "{first} is in slot {} but {odd} is in slot {}",
            key_slot(first),
            key_slot(odd)
        ),
        sources: queues
            .sources
            .iter()
            .map(|s| fix(s))
            .collect::<Vec<_>>()
            .join(","),
        processing: fix(&queues.processing),
        dead_letter: fix(&queues.dead_letter),
        prefix_hint,
        ledger_hint: ledger.map_or_else(String::new, |l| {
            format!(" REDIS_BATCH_STATE_PREFIX={}{{{tag}}}:", bare(l))
        }),
    }))
}

/// `name` without braces.
fn bare(name: &str) -> String {
    name.replace(['{', '}'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::shards;

    fn queues(sources: &[&str], processing: &str, dead_letter: &str) -> Queues {
        Queues {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            processing: processing.into(),
            dead_letter: dead_letter.into(),
        }
    }

    #[test]
    fn bare_default_names_are_refused_with_tagged_ones_suggested() {
        let q = queues(&["raw_data_queue"], "processing_queue", "dead_letter_queue");
        let e = check(&q, "batch_processor", None).unwrap_err();
        assert_eq!(e.sources, "raw_data_queue:{raw_data_queue}");
        assert_eq!(e.processing, "processing_queue:{raw_data_queue}");
        let fixed = queues(&[&e.sources], &e.processing, &e.dead_letter);
        assert!(check(&fixed, "batch_processor", None).is_ok());
        let e = check(&fixed, "batch_processor", Some("batch:state:")).unwrap_err();
        assert_eq!(
            e.ledger_hint,
            " REDIS_BATCH_STATE_PREFIX=batch:state:{raw_data_queue}:"
        );
        assert!(check(&fixed, "bp", Some("batch:state:{raw_data_queue}:")).is_ok());
        assert!(e.to_string().contains("REDIS_SHARDS=N"), "{e}");
    }

    #[test]
    fn shards_always_pass_and_a_braced_prefix_is_caught() {
        let q = queues(&["a", "b"], "p", "d");
        for shard in shards::pipelines(&q, 4) {
            let ledger = shards::ledger_prefix("batch:state:", &shard);
            assert!(check(&shard, "bp", Some(&ledger)).is_ok());
            let e = check(&shard, "{bp}", None).unwrap_err();
            assert_eq!(e.prefix_hint, " REDIS_KEY_PREFIX=bp");
        }
    }
}
