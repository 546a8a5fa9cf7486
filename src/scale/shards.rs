//! Shard naming: `REDIS_SHARDS=N` turns one deployment's lists into N pipelines whose every
//! key shares one Redis Cluster slot.
//!
//! Shard `i` of `n` names each list `<list>:{<tag>}`, where the tag is `s<i>` when that falls
//! in the `i`-th of `n` equal ranges of the slot space, and otherwise `s<i>.<k>` for the
//! smallest `k` that does. So the shards spread evenly over the slots: on a cluster whose
//! primaries own equal slot ranges (what `redis-cli --cluster create` makes), `n` shards over
//! `n` primaries land one per primary. The names depend on `n`: change it only after the old
//! shards are drained (or move their lists by hand).

use super::slot::{crc16, key_slot, SLOTS};
use crate::settings::Queues;

/// Most shards one deployment may declare: each costs a mover task, a lease keeper and their
/// connections.
pub const MAX_SHARDS: usize = 256;

/// The hash tag of shard `i` of `n` (without braces).
pub fn tag(i: usize, n: usize) -> String {
    let slots = usize::from(SLOTS);
    let (low, high) = (i * slots / n, (i + 1) * slots / n);
    let fits = |t: &str| (low..high).contains(&usize::from(crc16(t.as_bytes()) % SLOTS));
    let plain = format!("s{i}");
    if fits(&plain) {
        return plain;
    }
    // A range holds slots/n >= 64 slots, so some k is found quickly (about n tries).
    (1..)
        .map(|k| format!("s{i}.{k}"))
        .find(|t| fits(t))
        .unwrap_or(plain)
}

/// `name` carrying the hash tag `tag`.
pub fn tagged(name: &str, tag: &str) -> String {
    format!("{name}:{{{tag}}}")
}

/// The lists of shard `i` of `n`.
pub fn shard(base: &Queues, i: usize, n: usize) -> Queues {
    let tag = tag(i, n);
    Queues {
        sources: base.sources.iter().map(|s| tagged(s, &tag)).collect(),
        processing: tagged(&base.processing, &tag),
        dead_letter: tagged(&base.dead_letter, &tag),
    }
}

/// The pipelines of a deployment: `base` alone when `shards` is 0 (today's single pipeline,
/// names untouched), otherwise its `shards` shards.
pub fn pipelines(base: &Queues, shards: usize) -> Vec<Queues> {
    if shards == 0 {
        return vec![base.clone()];
    }
    (0..shards).map(|i| shard(base, i, shards)).collect()
}

/// A shard's ledger prefix: the configured one with the shard's tag, `batch:state:{s1}:`.
pub fn ledger_prefix(base_prefix: &str, shard: &Queues) -> String {
    format!(
        "{base_prefix}{{{}}}:",
        super::slot::hash_tag(&shard.processing)
    )
}

/// What names a sharded deployment as a whole (its replica heartbeats): its configured
/// sources in braces, `{raw_data_queue}`, so those keys share one cluster slot.
pub fn deployment_tag(base: &Queues) -> String {
    format!("{{{}}}", base.sources_label())
}

/// The slot every key of `queues` would hash to, if they share one.
pub fn shared_slot(keys: &[String]) -> Option<u16> {
    let first = key_slot(keys.first()?);
    keys.iter().all(|k| key_slot(k) == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Queues {
        Queues {
            sources: vec!["urgent".into(), "raw".into()],
            processing: "processing_queue".into(),
            dead_letter: "dead_letter_queue".into(),
        }
    }

    #[test]
    fn no_shards_keeps_the_names_untouched() {
        assert_eq!(pipelines(&base(), 0), vec![base()]);
    }

    #[test]
    fn every_list_of_a_shard_carries_its_tag() {
        let p = pipelines(&base(), 3);
        assert_eq!(p.len(), 3);
        let t = tag(1, 3);
        assert_eq!(
            p[1].sources,
            [format!("urgent:{{{t}}}"), format!("raw:{{{t}}}")]
        );
        assert_eq!(p[1].processing, format!("processing_queue:{{{t}}}"));
        let keys = [&p[1].sources[..], &[p[1].processing.clone()]].concat();
        assert_eq!(shared_slot(&keys), Some(key_slot(&format!("x{{{t}}}"))));
    }

    #[test]
    fn shards_spread_evenly_over_the_slot_space() {
        for n in [1, 2, 3, 5, 16, MAX_SHARDS] {
            for i in 0..n {
                let slot = usize::from(key_slot(&tagged("q", &tag(i, n))));
                let range = i * 16384 / n..(i + 1) * 16384 / n;
                assert!(range.contains(&slot), "shard {i} of {n}: slot {slot}");
            }
        }
        // Known names, for the documentation: s0 is slot 11097, so it is not shard 0 of 3.
        assert_eq!(tag(0, 1), "s0");
        assert_ne!(tag(0, 3), "s0");
    }
}
