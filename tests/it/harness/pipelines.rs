//! Sharded deployments (`REDIS_SHARDS`): the pipelines' list names as the daemon makes them,
//! distinct messages per pipeline, and the exactly-once audit of every pipeline.

use batch_processor::scale::shards;
use batch_processor::settings::Queues;

use super::{assert_accounted_sources, event, push_all, Names};

/// The lists of the `n` shards of a test's deployment.
pub(crate) fn shard_queues(names: &Names, n: usize) -> Vec<Queues> {
    let base = Queues {
        sources: vec![names.source.clone()],
        processing: names.processing.clone(),
        dead_letter: names.dead_letter.clone(),
    };
    shards::pipelines(&base, n)
}

/// Distinct messages for pipeline `p`: `n` good events with a bad one after every
/// `bad_every` (0: none).
pub(crate) fn pipeline_messages(p: usize, n: u64, bad_every: u64) -> Vec<Vec<u8>> {
    let first = (p as u64 + 1) * 10_000_000;
    let mut out = Vec::new();
    for seq in first..first + n {
        out.push(event(seq, 200));
        if bad_every > 0 && (seq - first) % bad_every == bad_every - 1 {
            out.push(format!("not json {seq}").into_bytes());
        }
    }
    out
}

/// Push `pushed[p]` onto pipeline `p`'s (single) source, through `conn_for(p)`.
pub(crate) fn push_pipelines(
    mut conn_for: impl FnMut(&Queues) -> redis::Connection,
    pipelines: &[Queues],
    pushed: &[Vec<Vec<u8>>],
) {
    for (q, messages) in pipelines.iter().zip(pushed) {
        push_all(&mut conn_for(q), &q.sources[0], messages);
    }
}

/// Every pipeline accounted exactly once: its good messages in its own envelopes in push
/// order, its bad ones in its own dead-letter list, nothing elsewhere.
pub(crate) fn assert_pipelines_accounted(
    mut conn_for: impl FnMut(&Queues) -> redis::Connection,
    pipelines: &[Queues],
    pushed: &[Vec<Vec<u8>>],
    complete: bool,
) {
    for (q, messages) in pipelines.iter().zip(pushed) {
        let mut conn = conn_for(q);
        assert_accounted_sources(
            &mut conn,
            &q.processing,
            &q.dead_letter,
            &q.sources,
            std::slice::from_ref(messages),
            complete,
        );
    }
}

/// Sum of the pipelines' source lengths.
pub(crate) fn sources_left(
    mut conn_for: impl FnMut(&Queues) -> redis::Connection,
    pipelines: &[Queues],
) -> usize {
    pipelines
        .iter()
        .map(|q| super::llen(&mut conn_for(q), &q.sources[0]))
        .sum()
}
