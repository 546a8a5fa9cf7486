//! The dead letters of a plan: a record per covered message that does not wrap, with its
//! exact bytes, or by reference when the record would pass the server's value limit or the
//! message was too large to hold (skipped as it streamed past); and
//! how many trailing bad messages still fit a commit's byte cap.

use uuid::Uuid;

use super::{source_of, wraps, Limits, Peeked, Plan, Runs};
use crate::dead_letter::DeadLetter;
use crate::message::Rejection;
use crate::settings::Queues;

/// A message the commit moves, inside Redis, onto a list of its own (see
/// [`crate::dead_letter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByReference {
    /// Which source it comes from (its index in priority order).
    pub source: usize,
    /// Its index in that source's planned run (0: the oldest, at the tail).
    pub index: usize,
    /// The list that will hold it: `<dead-letter list>:oversized:<uuid>`.
    pub key: String,
}

/// How many of the messages of `pending` from index `from` on that do not wrap fit the
/// commit, which already carries `plan_bytes`.
pub(super) fn trailing_dead_letters(
    pending: &Runs<'_>,
    from: usize,
    mut plan_bytes: usize,
    limits: &Limits,
    queues: &Queues,
    timestamp: &str,
) -> usize {
    let mut taken = 0;
    for (i, p) in pending.iter().enumerate().skip(from) {
        if wraps(p, limits) {
            break;
        }
        let source = source_of(pending, i, queues);
        let record = record_len(p, limits, source, &queues.dead_letter, timestamp);
        if plan_bytes + record > limits.max_commit_bytes {
            break;
        }
        plan_bytes += record;
        taken += 1;
    }
    taken
}

/// The dead letters of the covered messages (the first `plan.trim` of `pending`): every one
/// that does not wrap.
pub(super) fn dead_letters(plan: &mut Plan, pending: &Runs<'_>, limits: &Limits, queues: &Queues) {
    for (i, p) in pending.iter().enumerate().take(plan.trim) {
        let why = match &p.verdict {
            Err(why) => why.clone(),
            Ok(_) if !wraps(p, limits) => Rejection::TooLargeToWrap {
                size: p.size,
                limit: limits.max_value_bytes,
            },
            Ok(_) => continue,
        };
        let (source, index) = pending.locate(i).unwrap_or((0, i));
        plan_dead_letter(plan, p, (source, index), why, limits, queues);
    }
}

/// Bytes the dead-letter record of `p` (which does not wrap) will take, at most: small when
/// it goes by reference.
pub(super) fn record_len(
    p: &Peeked,
    limits: &Limits,
    source: &str,
    dead_letter: &str,
    timestamp: &str,
) -> usize {
    let reason = match &p.verdict {
        Err(why) => why.to_string(),
        Ok(_) => Rejection::TooLargeToWrap {
            size: p.size,
            limit: limits.max_value_bytes,
        }
        .to_string(),
    };
    let inline = DeadLetter::stored_len(&p.bytes, &reason, source, timestamp);
    if p.held() && inline <= limits.max_value_bytes {
        inline
    } else {
        // A record by reference: the reason, the names and a uuid.
        reason.len() + source.len() + dead_letter.len() + 200
    }
}

/// Add the dead letter for `p` (at `index` in the run of source `source`) to `plan`: the
/// record with its exact bytes, naming its own source, or a record by reference when that
/// would pass the server's value limit.
fn plan_dead_letter(
    plan: &mut Plan,
    p: &Peeked,
    (source_index, index): (usize, usize),
    why: Rejection,
    limits: &Limits,
    queues: &Queues,
) {
    let source = queues.sources.get(source_index).map_or("", String::as_str);
    let failed_at = &plan.timestamp;
    // A message skipped as it streamed past was never held: it can only go by reference.
    let fits = p.held()
        && DeadLetter::stored_len(&p.bytes, &why.to_string(), source, failed_at)
            <= limits.max_value_bytes;
    let record = if fits {
        DeadLetter::new(&p.bytes, &why, source, failed_at)
    } else {
        let key = format!("{}:oversized:{}", queues.dead_letter, Uuid::new_v4());
        let record = DeadLetter::by_reference(&key, &why, source, failed_at);
        plan.by_reference.push(ByReference {
            source: source_index,
            index,
            key,
        });
        record
    };
    plan.dead_letters.push(record.to_bytes());
    plan.dead_letter_classes.push(why.class());
}
