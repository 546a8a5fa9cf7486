//! Turning runs of peeked messages into envelopes and dead letters.
//!
//! The mover keeps a local copy of each source's tail ([`Peeked`] messages, oldest first).
//! Every one of them is still in Redis; the copy only saves re-reading. [`plan`] sees the
//! sources' runs one after another, highest priority first ([`Runs`]), and decides which
//! prefix of that sequence the next commit covers: whole batches of good messages, the partial
//! batch once its deadline has passed, and the bad messages in between, which never wait for
//! good ones. A prefix of the sequence is a prefix of each source's run, so each source is
//! trimmed from its tail only.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use uuid::Uuid;

use super::commit;
use crate::envelope;
use crate::message::{self, Profile, Rejection};
use crate::redis::raw::SKIPPED_COST;
use crate::redis::raw::{Item, Skipped};
use crate::settings::Queues;

mod dead_letters;
mod runs;

pub use dead_letters::ByReference;
use dead_letters::{dead_letters, record_len, trailing_dead_letters};
pub use runs::Runs;

/// One message read from the source's tail and not yet committed.
#[derive(Debug)]
pub struct Peeked {
    /// The message, byte for byte (a slice of the connection's read buffer); empty for a
    /// message skipped as it streamed past.
    bytes: Bytes,
    /// Its length in Redis.
    size: usize,
    /// The two ends of a message skipped as it streamed past (over the size limit, so never
    /// held): what the commit's tail fingerprint needs.
    ends: Option<Box<Skipped>>,
    /// Where the JSON value sits inside `bytes`, or why the message was refused.
    verdict: Result<Range<usize>, Rejection>,
    /// When the daemon first read it.
    pub seen: Instant,
}

impl Peeked {
    /// Check `bytes` once, at read time.
    pub fn new(bytes: impl Into<Bytes>, profile: Profile, seen: Instant) -> Self {
        let bytes = bytes.into();
        let verdict = message::check_message(&bytes, profile).map(|value| {
            // `value` is a subslice of `bytes`; keep it as offsets.
            let start = value.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + value.len()
        });
        Peeked {
            size: bytes.len(),
            bytes,
            ends: None,
            verdict,
            seen,
        }
    }

    /// A message over the size limit that streamed past: only its length and ends are kept.
    pub fn skipped(skipped: Skipped, profile: Profile, seen: Instant) -> Self {
        Peeked {
            bytes: Bytes::new(),
            size: skipped.len,
            verdict: Err(Rejection::TooLarge {
                size: skipped.len,
                limit: profile.max_bytes,
            }),
            ends: Some(Box::new(skipped)),
            seen,
        }
    }

    /// An element of an `LRANGE` reply.
    pub fn from_item(item: Item, profile: Profile, seen: Instant) -> Self {
        match item {
            Item::Whole(bytes) => Peeked::new(bytes, profile, seen),
            Item::Skipped(skipped) => Peeked::skipped(skipped, profile, seen),
        }
    }

    /// The message as read, byte for byte (empty when it was skipped: see [`Peeked::held`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its length in Redis.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether its bytes are held (not skipped as they streamed past).
    pub fn held(&self) -> bool {
        self.ends.is_none()
    }

    /// Memory it takes, for the bound on bytes in flight.
    pub fn held_bytes(&self) -> usize {
        match self.ends {
            None => self.bytes.len(),
            Some(_) => SKIPPED_COST,
        }
    }

    /// What the commit script compares with the item at a boundary of the trim.
    pub fn fingerprint(&self) -> String {
        match &self.ends {
            None => commit::fingerprint(&self.bytes),
            Some(ends) => commit::fingerprint_of_ends(ends.len, &ends.head, &ends.tail),
        }
    }

    /// Whether the message goes into an envelope.
    pub fn is_good(&self) -> bool {
        self.verdict.is_ok()
    }

    fn value(&self) -> Option<&[u8]> {
        self.verdict.as_ref().ok().map(|r| &self.bytes[r.clone()])
    }
}

/// Limits for one commit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages in one envelope.
    pub batch_size: usize,
    /// Most envelopes in one commit.
    pub max_envelopes: usize,
    /// Most envelopes in one commit that hold messages from below the first source list
    /// ([`max_lower_envelopes`] in the daemon): with two commits in flight, a message that
    /// lands on a higher list waits behind at most twice this many envelopes.
    pub max_lower_envelopes: usize,
    /// Send the trailing partial batch too if its first message was seen at or before this
    /// instant (now minus the batch timeout): its deadline has passed.
    pub flush_seen_by: Option<Instant>,
    /// Largest envelope in message bytes ([`MAX_ENVELOPE_BYTES`] in the daemon).
    pub max_envelope_bytes: usize,
    /// Message bytes after which a commit takes no further envelope ([`MAX_COMMIT_BYTES`]).
    pub max_commit_bytes: usize,
    /// The largest value the server accepts (`proto-max-bulk-len`). A good message whose
    /// envelope would pass it, and a dead-letter record that would, go by reference.
    pub max_value_bytes: usize,
}

/// One planned envelope. Its bytes are written straight into the Redis command that pushes
/// it ([`Envelope::write`]), so the messages are copied once, not twice.
#[derive(Debug)]
pub struct Envelope {
    /// Its `event_id`.
    pub event_id: Uuid,
    /// Indices, into the planned run, of its messages.
    members: Vec<usize>,
    /// Messages inside.
    pub size: usize,
    /// When its oldest message was first seen.
    pub oldest_seen: Instant,
}

impl Envelope {
    /// Write the envelope; `pending` is the runs it was planned over.
    pub fn write<W: std::io::Write + ?Sized>(
        &self,
        pending: &Runs<'_>,
        timestamp: &str,
        out: &mut W,
    ) -> std::io::Result<()> {
        envelope::write_envelope(
            out,
            self.event_id,
            timestamp,
            self.members
                .iter()
                .filter_map(|&i| pending.get(i).and_then(|p| p.value())),
        )
    }

    /// The sources its messages came from: their indices, in priority order.
    pub fn sources(&self, pending: &Runs<'_>) -> Vec<usize> {
        let mut sources: Vec<usize> = self
            .members
            .iter()
            .filter_map(|&i| pending.locate(i).map(|(k, _)| k))
            .collect();
        // Members are in sequence order, so their sources never decrease.
        sources.dedup();
        sources
    }

    /// Bytes the envelope will take, roughly (for buffer sizing).
    pub fn len_hint(&self, pending: &Runs<'_>) -> usize {
        200 + self
            .members
            .iter()
            .filter_map(|&i| pending.get(i))
            .map(|p| p.size + 1)
            .sum::<usize>()
    }
}

/// What one commit does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Items covered, counted through the runs: they are trimmed when the commit succeeds.
    pub trim: usize,
    /// Items covered from each source's tail, in priority order (as many as the runs the
    /// plan was made over).
    pub trims: Vec<usize>,
    /// Envelopes, oldest first.
    pub envelopes: Vec<Envelope>,
    /// Dead-letter records, oldest first.
    pub dead_letters: Vec<Vec<u8>>,
    /// The [`crate::message::Rejection::class`] of each dead letter, in the same order.
    pub dead_letter_classes: Vec<&'static str>,
    /// Messages dead-lettered by reference: the commit moves each, inside Redis, onto a list
    /// of its own. Oldest first.
    pub by_reference: Vec<ByReference>,
    /// Messages inside the envelopes.
    pub messages: usize,
    /// The envelopes' `timestamp` and the dead letters' `failed_at`.
    pub timestamp: String,
}

impl Plan {
    /// Bytes of the largest value the commit sends (an envelope or a dead-letter record);
    /// `pending` is the runs it was planned over.
    pub fn largest_value(&self, pending: &Runs<'_>) -> usize {
        let envelopes = self.envelopes.iter().map(|e| e.len_hint(pending));
        let records = self.dead_letters.iter().map(Vec::len);
        envelopes.chain(records).max().unwrap_or(0)
    }

    /// Whether the commit would change anything.
    pub fn is_empty(&self) -> bool {
        self.trim == 0
    }
}

/// Messages per commit, about, that a commit taking from below the first source list carries.
/// The daemon keeps two commits in flight, built before it could see a message that lands on
/// a higher list meanwhile; keeping lower-list commits this small means such a message waits
/// behind about 512 messages' worth of envelopes, not two whole read-aheads, while a commit
/// still carries enough that its fixed cost stays small (see the benchmark).
pub const MAX_LOWER_MESSAGES: usize = 256;

/// Most envelopes per commit that hold messages from below the first source list: about
/// [`MAX_LOWER_MESSAGES`] worth, and at least two.
pub fn max_lower_envelopes(batch_size: usize) -> usize {
    MAX_LOWER_MESSAGES.div_ceil(batch_size.max(1)).max(2)
}

/// What an envelope adds to its messages' bytes, at most (the fixed fields and the commas).
pub const ENVELOPE_OVERHEAD: usize = 512;

/// Largest envelope, in message bytes. Redis takes values of up to 512 MB
/// (`proto-max-bulk-len`); a batch that would pass this is sent in more than one envelope.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024 * 1024;

/// A commit stops taking further envelopes and dead letters once it carries this many bytes,
/// so one transaction (queued whole by Redis until EXEC, and packed whole by the daemon) keeps
/// memory on both sides bounded.
pub const MAX_COMMIT_BYTES: usize = 64 * 1024 * 1024;

/// Whether `p` goes into an envelope: good, and small enough that its envelope stays a value
/// the server accepts.
fn wraps(p: &Peeked, limits: &Limits) -> bool {
    p.is_good() && p.size + ENVELOPE_OVERHEAD <= limits.max_value_bytes
}

/// When the oldest good message still waiting was first seen, if any.
pub fn oldest_waiting<'a>(pending: impl IntoIterator<Item = &'a Peeked>) -> Option<Instant> {
    pending.into_iter().find(|p| p.is_good()).map(|p| p.seen)
}

/// Plan the next commit over `pending` (each run oldest first, highest priority first).
///
/// Covers whole batches (up to `max_envelopes` and about [`MAX_COMMIT_BYTES`]; a batch larger
/// than [`MAX_ENVELOPE_BYTES`] is split), the trailing partial batch when its deadline has
/// passed (see [`Limits::flush_seen_by`]), and every bad message up to the
/// first good message left behind.
pub fn plan(pending: &Runs<'_>, limits: Limits, queues: &Queues, timestamp: &str) -> Plan {
    let batch_size = limits.batch_size.max(1);
    let mut plan = Plan {
        timestamp: timestamp.to_owned(),
        ..Plan::default()
    };
    // Indices (into `pending`) of the good messages of the batch being filled.
    let mut batch: Vec<usize> = Vec::with_capacity(batch_size);
    let mut batch_bytes = 0usize;
    let mut plan_bytes = 0usize;
    let mut covered = 0usize;
    // Messages of the first source come first; from here on they are from lower ones.
    let first_len = pending.run(0).len();
    // Envelopes planned before the first one holding a lower source's message.
    let mut lower_from: Option<usize> = None;
    let at_cap = |plan: &Plan, lower_from: Option<usize>| {
        plan.envelopes.len() >= limits.max_envelopes
            || lower_from.is_some_and(|f| plan.envelopes.len() - f >= limits.max_lower_envelopes)
    };
    for (i, p) in pending.iter().enumerate() {
        if wraps(p, &limits) {
            if i >= first_len && lower_from.is_none() {
                lower_from = Some(plan.envelopes.len());
            }
            let full = at_cap(&plan, lower_from)
                || (!plan.envelopes.is_empty() && plan_bytes >= limits.max_commit_bytes);
            if full {
                break;
            }
            let len = p.size + 1;
            if !batch.is_empty() && batch_bytes + len > limits.max_envelope_bytes {
                // An envelope must stay one Redis value: close this one early.
                plan.envelopes.push(build(pending, &batch));
                covered = batch[batch.len() - 1] + 1;
                plan_bytes += batch_bytes;
                batch.clear();
                batch_bytes = 0;
                if at_cap(&plan, lower_from) || plan_bytes >= limits.max_commit_bytes {
                    break;
                }
            }
            batch.push(i);
            batch_bytes += len;
            // Full by count, or by bytes (a message at or over the cap travels alone, now).
            if batch.len() == batch_size || batch_bytes >= limits.max_envelope_bytes {
                plan.envelopes.push(build(pending, &batch));
                batch.clear();
                plan_bytes += batch_bytes;
                batch_bytes = 0;
                covered = i + 1;
            }
        } else if batch.is_empty() {
            // No good message is waiting before this one: it can go now, unless its record
            // would take the commit past its byte cap (the first item always goes).
            let source = source_of(pending, i, queues);
            let record = record_len(p, &limits, source, &queues.dead_letter, timestamp);
            if covered > 0 && plan_bytes + record > limits.max_commit_bytes {
                break;
            }
            plan_bytes += record;
            covered = i + 1;
        }
    }
    // The batch's clock is its oldest member's, which with several sources need not be the
    // first in sequence order (a higher source's message may be younger).
    let expired = |batch: &[usize]| {
        let oldest = batch
            .iter()
            .filter_map(|&i| pending.get(i))
            .map(|p| p.seen)
            .min();
        limits
            .flush_seen_by
            .is_some_and(|by| oldest.is_some_and(|seen| seen <= by))
    };
    if !batch.is_empty() && expired(&batch) && !at_cap(&plan, lower_from) {
        plan.envelopes.push(build(pending, &batch));
        covered = batch[batch.len() - 1] + 1;
        plan_bytes += batch_bytes;
        // Bad messages right after the partial batch go too, within the byte cap (the rest
        // go in the next commit).
        covered += trailing_dead_letters(pending, covered, plan_bytes, &limits, queues, timestamp);
    }
    plan.trim = covered;
    plan.trims = pending.split(covered);
    plan.messages = plan.envelopes.iter().map(|e| e.size).sum();
    dead_letters(&mut plan, pending, &limits, queues);
    plan
}

/// The name of the source list the `i`-th message of `pending` came from.
fn source_of<'q>(pending: &Runs<'_>, i: usize, queues: &'q Queues) -> &'q str {
    let k = pending.locate(i).map_or(0, |(k, _)| k);
    queues.sources.get(k).map_or("", String::as_str)
}

fn build(pending: &Runs<'_>, batch: &[usize]) -> Envelope {
    Envelope {
        event_id: Uuid::new_v4(),
        members: batch.to_vec(),
        size: batch.len(),
        // With several sources the oldest member need not come first.
        oldest_seen: batch
            .iter()
            .filter_map(|&i| pending.get(i))
            .map(|p| p.seen)
            .min()
            .unwrap_or_else(Instant::now),
    }
}

#[cfg(test)]
pub(crate) mod tests;
