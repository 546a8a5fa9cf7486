//! `dlq replay`: put dead letters back on their source queues, oldest first, each exactly
//! once (see the module header of [`super`] for how the walk works).

use std::collections::BTreeMap;

use redis::{RedisError, Script};
use uuid::Uuid;

use super::{dead_letters, DlqError, Session};
use crate::dead_letter::{DeadLetter, DeadLetterError};
use crate::redis::RedisFailure;
use crate::settings::Settings;

/// The move of one record; see the header of the file for KEYS and ARGV.
const REPLAY_LUA: &str = include_str!("../../redis/scripts/replay.lua");

/// Undecodable records logged one by one after a replay; the rest are counted.
const SKIPS_LOGGED: usize = 20;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records put back on their source queue.
    pub replayed: u64,
    /// Records that could not be decoded and were left in place.
    pub skipped: u64,
    /// Records put back, by the queue they went to.
    pub queues: BTreeMap<String, u64>,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replayed {}", dead_letters(self.replayed))?;
        if !self.queues.is_empty() {
            let per: Vec<String> = self
                .queues
                .iter()
                .map(|(q, n)| format!("{q}: {n}"))
                .collect();
            write!(f, " ({})", per.join(", "))?;
        }
        if self.skipped > 0 {
            write!(
                f,
                "; skipped {} undecodable records, left in place (see dlq list)",
                self.skipped
            )?;
        }
        Ok(())
    }
}

/// Why a record cannot be replayed; it is left in place.
#[derive(Debug, thiserror::Error)]
enum Undecodable {
    #[error(transparent)]
    Record(#[from] DeadLetterError),
    #[error("dead-letter record has an empty source_queue")]
    NoSource,
    #[error("dead-letter record's source_queue is the dead-letter list itself")]
    SourceIsDeadLetter,
}

/// An undecodable record walked past, and why.
type Skipped = (Vec<u8>, Undecodable);

/// The queue to put a record's message back on and the message's original bytes.
fn decode(record: &[u8], dead_letter: &str) -> Result<(String, Vec<u8>), Undecodable> {
    let rec = DeadLetter::parse(record)?;
    let bytes = rec.original_bytes()?;
    if rec.source_queue.is_empty() {
        return Err(Undecodable::NoSource);
    }
    if rec.source_queue == dead_letter {
        // Replaying it would push it straight back onto the list being walked.
        return Err(Undecodable::SourceIsDeadLetter);
    }
    Ok((rec.source_queue, bytes))
}

/// The list index of the record after `skipped` records at the tail: -1, -2, ...
fn tail_index(skipped: usize) -> i64 {
    -i64::try_from(skipped).unwrap_or(i64::MAX) - 1
}

/// Put up to `limit` dead letters back on their source queues, oldest first; all of them
/// when `None` (the records present when the replay starts, so records dead-lettered again
/// meanwhile are not chased forever).
pub async fn replay(s: &Settings, limit: Option<usize>) -> Result<ReplayReport, DlqError> {
    let mut session = Session::open(s).await?;
    // Only records present at the start are replayed: a message that is still bad comes back
    // to the dead-letter list while the replay runs and must not be replayed again.
    let present: u64 = redis::cmd("LLEN")
        .arg(&session.list)
        .query_async(&mut session.conn)
        .await
        .map_err(session.error("read the length of", "LLEN"))?;
    let budget = limit.map_or(present, |n| {
        present.min(u64::try_from(n).unwrap_or(u64::MAX))
    });
    let mut report = ReplayReport::default();
    let skipped = walk(&mut session, present, budget, &mut report)
        .await
        .map_err(|failure| DlqError::Replay {
            replayed: report.replayed,
            failure,
        })?;
    log_skipped(&session.list, &skipped);
    report.skipped = skipped.len() as u64;
    tracing::info!(
        list = %session.list,
        replayed = report.replayed,
        skipped = report.skipped,
        "dead letters replayed"
    );
    Ok(report)
}

/// Move records from the tail until `budget` are replayed or all `present` ones were dealt
/// with, counting into `report`; returns the undecodable records walked past, tail first.
async fn walk(
    session: &mut Session,
    present: u64,
    budget: u64,
    report: &mut ReplayReport,
) -> Result<Vec<Skipped>, RedisFailure> {
    let script = Script::new(REPLAY_LUA);
    let placeholder = format!("batch-processor:replay-placeholder:{}", Uuid::new_v4());
    // The undecodable records walked past sit at indexes -1, -2, ...
    let mut skipped: Vec<Skipped> = Vec::new();
    // Records another replay (or a purge) took first. The replay stops once it has dealt with
    // as many records as were there at the start, however each one went.
    let mut taken_by_others = 0u64;
    while report.replayed < budget
        && report.replayed + skipped.len() as u64 + taken_by_others < present
    {
        let index = tail_index(skipped.len());
        let record: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(&session.list)
            .arg(index)
            .query_async(&mut session.conn)
            .await
            .map_err(|source| session.failure("LINDEX", source))?;
        let Some(record) = record else { break };
        let (target, original) = match decode(&record, &session.list) {
            Ok(decoded) => decoded,
            Err(why) => {
                skipped.push((record, why));
                continue;
            }
        };
        let moved: i64 = script
            .key(&session.list)
            .key(&target)
            .arg(&record[..])
            .arg(&original[..])
            .arg(index)
            .arg(&placeholder)
            .invoke_async(&mut session.conn)
            .await
            .map_err(|source| session.failure("EVALSHA replay.lua", source))?;
        if moved == 1 {
            tracing::debug!(index, queue = %target, "dead letter replayed");
            report.replayed += 1;
            *report.queues.entry(target).or_default() += 1;
        } else {
            // Someone else moved the record (another replay) or emptied the list (a purge).
            tracing::debug!(index, "dead letter moved by someone else; reading again");
            taken_by_others += 1;
            recheck_skipped(session, &mut skipped).await?;
        }
    }
    Ok(skipped)
}

/// After someone else moved a record: replays never remove undecodable records, so normally
/// they are all still at the tail and the walk resumes at the same index. If not, forget them
/// so the walk starts again from the tail and nothing is taken out of order or left behind.
async fn recheck_skipped(
    session: &mut Session,
    skipped: &mut Vec<Skipped>,
) -> Result<(), RedisFailure> {
    if skipped.is_empty() {
        return Ok(());
    }
    let tail = read_tail(session, skipped.len())
        .await
        .map_err(|source| session.failure("LRANGE", source))?;
    if !tail.iter().eq(skipped.iter().map(|(r, _)| r)) {
        skipped.clear();
    }
    Ok(())
}

/// The last `n` records of the dead-letter list, tail first.
async fn read_tail(session: &mut Session, n: usize) -> Result<Vec<Vec<u8>>, RedisError> {
    let start = -i64::try_from(n).unwrap_or(i64::MAX);
    let mut tail: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(&session.list)
        .arg(start)
        .arg(-1)
        .query_async(&mut session.conn)
        .await?;
    tail.reverse();
    Ok(tail)
}

/// One warning per record left in place, up to [`SKIPS_LOGGED`], then a count of the rest.
fn log_skipped(list: &str, skipped: &[Skipped]) {
    for (i, (_, why)) in skipped.iter().enumerate().take(SKIPS_LOGGED) {
        let index = tail_index(i);
        tracing::warn!(list = %list, index, error = %why, "dead letter left in place");
    }
    if skipped.len() > SKIPS_LOGGED {
        tracing::warn!(
            list = %list,
            more = skipped.len() - SKIPS_LOGGED,
            "more dead letters left in place"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::dlq::tests::record;

    #[test]
    fn decode_gives_target_and_exact_bytes() {
        let (q, b) = decode(&record(b"\xff\x00x", "raw"), "dead").unwrap();
        assert_eq!((q.as_str(), &b[..]), ("raw", &b"\xff\x00x"[..]));
        assert!(matches!(
            decode(b"nope", "dead"),
            Err(Undecodable::Record(_))
        ));
        assert!(matches!(
            decode(&record(b"x", ""), "dead"),
            Err(Undecodable::NoSource)
        ));
        assert!(matches!(
            decode(&record(b"x", "dead"), "dead"),
            Err(Undecodable::SourceIsDeadLetter)
        ));
        let no_raw = br#"{"reason":"r","source_queue":"raw","failed_at":"t"}"#;
        assert!(matches!(
            decode(no_raw, "dead"),
            Err(Undecodable::Record(DeadLetterError::MissingRaw))
        ));
    }

    #[test]
    fn tail_indexes_count_from_minus_one() {
        assert_eq!(tail_index(0), -1);
        assert_eq!(tail_index(2), -3);
    }

    #[test]
    fn report_summary_names_queues_and_skips() {
        let mut r = ReplayReport::default();
        assert_eq!(r.to_string(), "replayed 0 dead letters");
        r.replayed = 3;
        r.queues.insert("a".into(), 2);
        r.queues.insert("b".into(), 1);
        r.skipped = 1;
        assert_eq!(
            r.to_string(),
            "replayed 3 dead letters (a: 2, b: 1); skipped 1 undecodable records, left in place (see dlq list)"
        );
    }
}
