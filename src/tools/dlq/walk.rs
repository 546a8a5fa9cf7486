//! The replay's walk up the dead-letter list from the tail.
//!
//! Records the walk leaves in place (undecodable, filtered out, dead-lettered after the
//! start) stay at the tail behind it, at indexes -1, -2, ...; the next record is at the index
//! just past them. Other actors change the list under the walk: daemons LPUSH at the head
//! (indexes from the tail do not move), other replays remove records anywhere (records
//! head-ward of a removal shift one place tail-ward), a purge deletes everything. So every
//! read and every move also checks that the last record left in place is still right next to
//! the walk's index: if a record behind the walk was removed, that neighbour is no longer the
//! one the walk left there, and the walk starts again from the tail instead of stepping over
//! a record it never looked at.

use chrono::{DateTime, Utc};
use redis::Script;
use uuid::Uuid;

use super::record::View;
use super::{ReplayFilter, ReplayReport, Session};
use crate::dead_letter::DeadLetterError;
use crate::redis::RedisFailure;

/// The move of one record; see the header of the script for KEYS and ARGV.
const REPLAY_LUA: &str = include_str!("../../redis/scripts/replay.lua");

/// Undecodable records logged one by one after a replay; the rest are counted.
const SKIPS_LOGGED: usize = 20;

/// Why a record cannot be replayed; it is left in place.
#[derive(Debug, thiserror::Error)]
pub(super) enum Undecodable {
    #[error(transparent)]
    Record(#[from] DeadLetterError),
    #[error("dead-letter record has no source_queue")]
    NoSource,
    #[error("dead-letter record's source_queue is the dead-letter list itself")]
    SourceIsDeadLetter,
    #[error("dead-letter record keeps its message on the list {0}, which is gone or holds more than one element")]
    MessageListMissing(String),
    #[error("dead-letter record names {0} as its message list, which is not one of this dead-letter list's")]
    ForeignList(String),
}

/// Where a record's message is: in the record, or (a record written by reference) as the
/// one element of a list of its own.
#[derive(Debug)]
enum Original {
    Bytes(Vec<u8>),
    OnList(String),
}

/// Why the walk left a record in place.
#[derive(Debug)]
enum Left {
    /// Dead-lettered at or after the run's cutoff.
    AfterStart,
    /// The filters leave it out.
    Filtered,
    /// It cannot be turned back into a message.
    Undecodable(Undecodable),
}

/// What to do with a record just read.
enum Verdict {
    Leave(Left),
    Move {
        target: String,
        original: Original,
        failed_at: Option<String>,
    },
}

/// What a read at the walk's index found.
enum Read {
    Record(Vec<u8>),
    /// The list is shorter than the index: nothing more to walk.
    End,
    /// A record behind the walk was removed.
    Shifted,
}

/// The records left in place by a walk, counted by why.
#[derive(Debug, Default)]
pub(super) struct Walked {
    pub(super) undecodable: u64,
    pub(super) filtered: u64,
    pub(super) after_start: u64,
    /// Why each undecodable record was left, tail first, with its index.
    reasons: Vec<(i64, Undecodable)>,
}

impl Walked {
    /// One warning per undecodable record, up to [`SKIPS_LOGGED`], then a count of the rest.
    pub(super) fn log(&self, list: &str) {
        for (index, why) in self.reasons.iter().take(SKIPS_LOGGED) {
            tracing::warn!(list = %list, index, error = %why, "dead letter left in place");
        }
        if self.reasons.len() > SKIPS_LOGGED {
            tracing::warn!(
                list = %list,
                more = self.reasons.len() - SKIPS_LOGGED,
                "more dead letters left in place"
            );
        }
    }
}

/// One replay's walk.
pub(super) struct Walk<'a> {
    session: &'a mut Session,
    filter: &'a ReplayFilter,
    cutoff: DateTime<Utc>,
    script: Script,
    /// Unique to this run, so its LSET + LREM can only ever remove its own placeholder.
    placeholder: String,
    /// Records left in place behind the walk, tail first, and why.
    left: Vec<(Vec<u8>, Left)>,
    /// Moves that found their record gone (another replay took it, or a purge).
    taken_by_others: u64,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        session: &'a mut Session,
        filter: &'a ReplayFilter,
        cutoff: DateTime<Utc>,
    ) -> Self {
        Walk {
            session,
            filter,
            cutoff,
            script: Script::new(REPLAY_LUA),
            placeholder: format!("batch-processor:replay-placeholder:{}", Uuid::new_v4()),
            left: Vec::new(),
            taken_by_others: 0,
        }
    }

    /// Move records until `limit` are replayed or the run has dealt with `present` records
    /// (its budget), counting into `report`.
    pub(super) async fn run(
        mut self,
        present: u64,
        limit: u64,
        report: &mut ReplayReport,
    ) -> Result<Walked, RedisFailure> {
        while report.replayed < limit
            && report.replayed + self.left.len() as u64 + self.taken_by_others < present
        {
            let index = tail_index(self.left.len());
            let record = match self.read(index).await? {
                Read::Record(record) => record,
                Read::End => break,
                Read::Shifted => {
                    self.restart();
                    continue;
                }
            };
            match self.judge(&record) {
                Verdict::Leave(why) => self.left.push((record, why)),
                Verdict::Move {
                    target,
                    original,
                    failed_at,
                } => match self.move_record(index, &record, &target, &original).await? {
                    1 => {
                        let failed_at = failed_at.as_deref().unwrap_or_default();
                        tracing::debug!(index, queue = %target, failed_at, "dead letter replayed");
                        report.replayed += 1;
                        *report.queues.entry(target).or_default() += 1;
                    }
                    0 => {
                        tracing::debug!(index, "dead letter moved by someone else; reading again");
                        self.taken_by_others += 1;
                    }
                    -2 => {
                        let key = match original {
                            Original::OnList(key) => key,
                            Original::Bytes(_) => String::new(),
                        };
                        let why = Left::Undecodable(Undecodable::MessageListMissing(key));
                        self.left.push((record, why));
                    }
                    _ => self.restart(),
                },
            }
        }
        Ok(self.finish())
    }

    /// Forget the records left behind and start again from the tail; they are looked at
    /// (and counted in the budget) again.
    fn restart(&mut self) {
        tracing::debug!("records behind the walk were removed; starting again from the tail");
        self.left.clear();
    }

    /// The record at `index`, read in one transaction with the record just behind it, which
    /// must be the last one the walk left in place.
    async fn read(&mut self, index: i64) -> Result<Read, RedisFailure> {
        let list = &self.session.list;
        let (neighbour, record): (Option<Vec<u8>>, Option<Vec<u8>>) = match self.left.last() {
            None => {
                let record = redis::cmd("LINDEX")
                    .arg(list)
                    .arg(index)
                    .query_async(&mut self.session.conn)
                    .await
                    .map_err(|source| self.session.failure("LINDEX", source))?;
                (None, record)
            }
            Some(_) => redis::pipe()
                .atomic()
                .cmd("LINDEX")
                .arg(list)
                .arg(index + 1)
                .cmd("LINDEX")
                .arg(list)
                .arg(index)
                .query_async(&mut self.session.conn)
                .await
                .map_err(|source| self.session.failure("MULTI/EXEC LINDEX, LINDEX", source))?,
        };
        if let Some((expected, _)) = self.left.last() {
            if neighbour.as_ref() != Some(expected) {
                return Ok(Read::Shifted);
            }
        }
        Ok(record.map_or(Read::End, Read::Record))
    }

    /// Whether to move the record, and where to, or why to leave it.
    fn judge(&self, record: &[u8]) -> Verdict {
        let view = match View::parse(record) {
            Ok(view) => view,
            Err(e) => return Verdict::Leave(Left::Undecodable(e.into())),
        };
        if view.failed_at().is_some_and(|t| t >= self.cutoff) {
            return Verdict::Leave(Left::AfterStart);
        }
        if !self.filter.matches(&view, self.cutoff) {
            return Verdict::Leave(Left::Filtered);
        }
        match decode(&view, &self.session.list) {
            Ok((target, original)) => Verdict::Move {
                target,
                original,
                failed_at: view.failed_at,
            },
            Err(why) => Verdict::Leave(Left::Undecodable(why)),
        }
    }

    /// Run `replay.lua`: 1 moved, 0 the record was gone, -1 a record behind the walk was
    /// removed (nothing changed in either case).
    async fn move_record(
        &mut self,
        index: i64,
        record: &[u8],
        target: &str,
        original: &Original,
    ) -> Result<i64, RedisFailure> {
        let neighbour: &[u8] = self.left.last().map_or(&[], |(r, _)| &r[..]);
        let mut invocation = self.script.key(&self.session.list);
        invocation.key(target);
        let (bytes, on_list): (&[u8], &str) = match original {
            Original::Bytes(bytes) => (bytes, ""),
            Original::OnList(key) => {
                invocation.key(key);
                (&[], "1")
            }
        };
        invocation
            .arg(record)
            .arg(bytes)
            .arg(index)
            .arg(&self.placeholder)
            .arg(neighbour)
            .arg(on_list)
            .invoke_async(&mut self.session.conn)
            .await
            .map_err(|source| self.session.failure("EVALSHA replay.lua", source))
    }

    /// The counts of what was left in place.
    fn finish(self) -> Walked {
        let mut walked = Walked::default();
        for (i, (_, why)) in self.left.into_iter().enumerate() {
            match why {
                Left::AfterStart => walked.after_start += 1,
                Left::Filtered => walked.filtered += 1,
                Left::Undecodable(why) => {
                    walked.undecodable += 1;
                    walked.reasons.push((tail_index(i), why));
                }
            }
        }
        walked
    }
}

/// The queue to put a record's message back on and the message's original bytes.
fn decode(view: &View, dead_letter: &str) -> Result<(String, Original), Undecodable> {
    let bytes = match view.original_bytes() {
        Ok(bytes) => Original::Bytes(bytes),
        // Only a list the daemon made for this dead-letter list: a hand-edited record must not
        // make a replay take from (and delete) any other key.
        Err(DeadLetterError::ByReference(key))
            if key.starts_with(&format!("{dead_letter}:oversized:")) =>
        {
            Original::OnList(key)
        }
        Err(DeadLetterError::ByReference(key)) => return Err(Undecodable::ForeignList(key)),
        Err(e) => return Err(e.into()),
    };
    let source = view.source_queue.as_deref().unwrap_or_default();
    if source.is_empty() {
        return Err(Undecodable::NoSource);
    }
    if source == dead_letter {
        // Replaying it would push it straight back onto the list being walked.
        return Err(Undecodable::SourceIsDeadLetter);
    }
    Ok((source.to_string(), bytes))
}

/// The list index of the record after `left` records at the tail: -1, -2, ...
fn tail_index(left: usize) -> i64 {
    -i64::try_from(left).unwrap_or(i64::MAX) - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::dlq::tests::record;

    fn decoded(record: &[u8], dl: &str) -> Result<(String, Vec<u8>), Undecodable> {
        let view = View::parse(record)?;
        decode(&view, dl).map(|(queue, original)| match original {
            Original::Bytes(bytes) => (queue, bytes),
            Original::OnList(key) => (queue, key.into_bytes()),
        })
    }

    #[test]
    fn decode_gives_target_and_exact_bytes() {
        let (q, b) = decoded(&record(b"\xff\x00x", "raw"), "dead").unwrap();
        assert_eq!((q.as_str(), &b[..]), ("raw", &b"\xff\x00x"[..]));
        assert!(matches!(
            decoded(b"nope", "dead"),
            Err(Undecodable::Record(_))
        ));
        assert!(matches!(
            decoded(&record(b"x", ""), "dead"),
            Err(Undecodable::NoSource)
        ));
        assert!(matches!(
            decoded(&record(b"x", "dead"), "dead"),
            Err(Undecodable::SourceIsDeadLetter)
        ));
        let no_raw = br#"{"reason":"r","source_queue":"raw","failed_at":"t"}"#;
        assert!(matches!(
            decoded(no_raw, "dead"),
            Err(Undecodable::Record(DeadLetterError::MissingRaw))
        ));
        // No failed_at: still replayable (the budget decides whether it was there).
        let undated = br#"{"reason":"r","raw":"x","source_queue":"raw"}"#;
        assert_eq!(decoded(undated, "dead").unwrap().1, b"x");
    }

    #[test]
    fn tail_indexes_count_from_minus_one() {
        assert_eq!(tail_index(0), -1);
        assert_eq!(tail_index(2), -3);
    }
}
