//! Turning a run of peeked messages into envelopes and dead letters.
//!
//! The mover keeps a local copy of the source's tail ([`Peeked`] messages, oldest first). Every
//! one of them is still in Redis; the copy only saves re-reading. [`plan`] decides which
//! prefix of that run the next commit covers: whole batches of good messages, the partial
//! batch once its deadline has passed, and the bad messages in between, which never wait for
//! good ones.

use std::ops::Range;
use std::time::Instant;

use uuid::Uuid;

use crate::dead_letter::DeadLetter;
use crate::envelope;
use crate::message::{self, Profile, Rejection};
use crate::settings::Queues;

/// One message read from the source's tail and not yet committed.
#[derive(Debug)]
pub struct Peeked {
    bytes: Vec<u8>,
    /// Where the JSON value sits inside `bytes`, or why the message was refused.
    verdict: Result<Range<usize>, Rejection>,
    /// When the daemon first read it.
    pub seen: Instant,
}

impl Peeked {
    /// Check `bytes` once, at read time.
    pub fn new(bytes: Vec<u8>, profile: Profile, seen: Instant) -> Self {
        let verdict = message::check_message(&bytes, profile).map(|value| {
            // `value` is a subslice of `bytes`; keep it as offsets.
            let start = value.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + value.len()
        });
        Peeked {
            bytes,
            verdict,
            seen,
        }
    }

    /// The message as read, byte for byte.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
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
    /// Write the envelope; `pending` is the run it was planned over.
    pub fn write<W: std::io::Write + ?Sized>(
        &self,
        pending: &[Peeked],
        timestamp: &str,
        out: &mut W,
    ) -> std::io::Result<()> {
        envelope::write_envelope(
            out,
            self.event_id,
            timestamp,
            self.members
                .iter()
                .filter_map(|&i| pending.get(i).and_then(Peeked::value)),
        )
    }

    /// Bytes the envelope will take, roughly (for buffer sizing).
    pub fn len_hint(&self, pending: &[Peeked]) -> usize {
        200 + self
            .members
            .iter()
            .filter_map(|&i| pending.get(i))
            .map(|p| p.bytes.len() + 1)
            .sum::<usize>()
    }
}

/// What one commit does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Items covered, from the source's tail: they are trimmed when the commit succeeds.
    pub trim: usize,
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
    /// `pending` is the run it was planned over.
    pub fn largest_value(&self, pending: &[Peeked]) -> usize {
        let envelopes = self.envelopes.iter().map(|e| e.len_hint(pending));
        let records = self.dead_letters.iter().map(Vec::len);
        envelopes.chain(records).max().unwrap_or(0)
    }

    /// Whether the commit would change anything.
    pub fn is_empty(&self) -> bool {
        self.trim == 0
    }
}

/// A message the commit moves, inside Redis, onto a list of its own (see
/// [`crate::dead_letter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByReference {
    /// Its index in the planned run (0: the oldest, at the tail).
    pub index: usize,
    /// The list that will hold it: `<dead-letter list>:oversized:<uuid>`.
    pub key: String,
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
    p.is_good() && p.bytes.len() + ENVELOPE_OVERHEAD <= limits.max_value_bytes
}

/// When the oldest good message still waiting was first seen, if any.
pub fn oldest_waiting(pending: &[Peeked]) -> Option<Instant> {
    pending.iter().find(|p| p.is_good()).map(|p| p.seen)
}

/// Plan the next commit over `pending` (oldest first).
///
/// Covers whole batches (up to `max_envelopes` and about [`MAX_COMMIT_BYTES`]; a batch larger
/// than [`MAX_ENVELOPE_BYTES`] is split), the trailing partial batch when its deadline has
/// passed (see [`Limits::flush_seen_by`]), and every bad message up to the
/// first good message left behind.
pub fn plan(pending: &[Peeked], limits: Limits, queues: &Queues, timestamp: &str) -> Plan {
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
    for (i, p) in pending.iter().enumerate() {
        if wraps(p, &limits) {
            let full = plan.envelopes.len() == limits.max_envelopes
                || (!plan.envelopes.is_empty() && plan_bytes >= limits.max_commit_bytes);
            if full {
                break;
            }
            let len = p.bytes.len() + 1;
            if !batch.is_empty() && batch_bytes + len > limits.max_envelope_bytes {
                // An envelope must stay one Redis value: close this one early.
                plan.envelopes.push(build(pending, &batch));
                covered = batch[batch.len() - 1] + 1;
                plan_bytes += batch_bytes;
                batch.clear();
                batch_bytes = 0;
                if plan.envelopes.len() == limits.max_envelopes
                    || plan_bytes >= limits.max_commit_bytes
                {
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
            let record = record_len(p, &limits, queues, timestamp);
            if covered > 0 && plan_bytes + record > limits.max_commit_bytes {
                break;
            }
            plan_bytes += record;
            covered = i + 1;
        }
    }
    let expired = |first: usize| {
        limits
            .flush_seen_by
            .is_some_and(|by| pending[first].seen <= by)
    };
    if !batch.is_empty() && expired(batch[0]) && plan.envelopes.len() < limits.max_envelopes {
        plan.envelopes.push(build(pending, &batch));
        covered = batch[batch.len() - 1] + 1;
        plan_bytes += batch_bytes;
        // Bad messages right after the partial batch go too, within the byte cap (the rest
        // go in the next commit).
        covered +=
            trailing_dead_letters(&pending[covered..], plan_bytes, &limits, queues, timestamp);
    }
    plan.trim = covered;
    plan.messages = plan.envelopes.iter().map(|e| e.size).sum();
    dead_letters(&mut plan, &pending[..covered], &limits, queues);
    plan
}

/// How many of the messages at the start of `rest` that do not wrap fit the commit, which
/// already carries `plan_bytes`.
fn trailing_dead_letters(
    rest: &[Peeked],
    mut plan_bytes: usize,
    limits: &Limits,
    queues: &Queues,
    timestamp: &str,
) -> usize {
    let mut taken = 0;
    for p in rest {
        if wraps(p, limits) {
            break;
        }
        let record = record_len(p, limits, queues, timestamp);
        if plan_bytes + record > limits.max_commit_bytes {
            break;
        }
        plan_bytes += record;
        taken += 1;
    }
    taken
}

/// The dead letters of the covered run: every message in it that does not wrap.
fn dead_letters(plan: &mut Plan, covered: &[Peeked], limits: &Limits, queues: &Queues) {
    for (index, p) in covered.iter().enumerate() {
        let why = match &p.verdict {
            Err(why) => why.clone(),
            Ok(_) if !wraps(p, limits) => Rejection::TooLargeToWrap {
                size: p.bytes.len(),
                limit: limits.max_value_bytes,
            },
            Ok(_) => continue,
        };
        plan_dead_letter(plan, p, index, why, limits, queues);
    }
}

/// Bytes the dead-letter record of `p` (which does not wrap) will take, at most: small when
/// it goes by reference.
fn record_len(p: &Peeked, limits: &Limits, queues: &Queues, timestamp: &str) -> usize {
    let reason = match &p.verdict {
        Err(why) => why.to_string(),
        Ok(_) => Rejection::TooLargeToWrap {
            size: p.bytes.len(),
            limit: limits.max_value_bytes,
        }
        .to_string(),
    };
    let inline = DeadLetter::stored_len(&p.bytes, &reason, &queues.source, timestamp);
    if inline <= limits.max_value_bytes {
        inline
    } else {
        // A record by reference: the reason, the names and a uuid.
        reason.len() + queues.source.len() + queues.dead_letter.len() + 200
    }
}

/// Add the dead letter for `p` (at `index` in the run) to `plan`: the record with its exact
/// bytes, or a record by reference when that would pass the server's value limit.
fn plan_dead_letter(
    plan: &mut Plan,
    p: &Peeked,
    index: usize,
    why: Rejection,
    limits: &Limits,
    queues: &Queues,
) {
    let (source, failed_at) = (&queues.source, &plan.timestamp);
    let fits = DeadLetter::stored_len(&p.bytes, &why.to_string(), source, failed_at)
        <= limits.max_value_bytes;
    let record = if fits {
        DeadLetter::new(&p.bytes, &why, source, failed_at)
    } else {
        let key = format!("{}:oversized:{}", queues.dead_letter, Uuid::new_v4());
        let record = DeadLetter::by_reference(&key, &why, source, failed_at);
        plan.by_reference.push(ByReference { index, key });
        record
    };
    plan.dead_letters.push(record.to_bytes());
    plan.dead_letter_classes.push(why.class());
}

fn build(pending: &[Peeked], batch: &[usize]) -> Envelope {
    Envelope {
        event_id: Uuid::new_v4(),
        members: batch.to_vec(),
        size: batch.len(),
        oldest_seen: pending[batch[0]].seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> crate::settings::Queues {
        crate::settings::Queues {
            source: "src".into(),
            processing: "processing".into(),
            dead_letter: "dead".into(),
        }
    }

    const PROFILE: crate::message::Profile = crate::message::Profile {
        max_bytes: 1024,
        max_depth: 64,
    };

    /// Plan over `items`, all seen at one instant; a `flush_seen_by` in `limits` means "their
    /// deadline has passed".
    fn run(items: &[&str], limits: Limits) -> (Plan, Vec<Peeked>) {
        let now = Instant::now();
        let limits = Limits {
            flush_seen_by: limits.flush_seen_by.map(|_| now),
            ..limits
        };
        let pending: Vec<Peeked> = items
            .iter()
            .map(|s| Peeked::new(s.as_bytes().to_vec(), PROFILE, now))
            .collect();
        (plan(&pending, limits, &queues(), "ts"), pending)
    }

    fn sizes(p: &Plan) -> Vec<usize> {
        p.envelopes.iter().map(|e| e.size).collect()
    }

    const FULL_ONLY: Limits = Limits {
        batch_size: 2,
        max_envelopes: 10,
        flush_seen_by: None,
        max_envelope_bytes: MAX_ENVELOPE_BYTES,
        max_commit_bytes: MAX_COMMIT_BYTES,
        max_value_bytes: 512 << 20,
    };

    #[test]
    fn whole_batches_only_until_the_deadline() {
        let (p, _) = run(&["1", "2", "3", "4", "5"], FULL_ONLY);
        assert_eq!(sizes(&p), vec![2, 2]);
        assert_eq!(p.trim, 4);
        assert_eq!(p.messages, 4);
        let (p, _) = run(
            &["1", "2", "3"],
            Limits {
                flush_seen_by: Some(Instant::now()),
                ..FULL_ONLY
            },
        );
        assert_eq!(sizes(&p), vec![2, 1]);
        assert_eq!(p.trim, 3);
    }

    #[test]
    fn only_the_trailing_batch_s_own_age_decides_its_flush() {
        let old = Instant::now();
        let young = old + std::time::Duration::from_secs(10);
        // Three old messages, then three young ones; batches of 4.
        let pending: Vec<Peeked> = (0..6)
            .map(|i| {
                let seen = if i < 3 { old } else { young };
                Peeked::new(format!("{i}").into_bytes(), PROFILE, seen)
            })
            .collect();
        let limits = |by| Limits {
            batch_size: 4,
            flush_seen_by: Some(by),
            ..FULL_ONLY
        };
        // The old messages' deadline has passed: they fill one batch with a young one, and
        // the trailing two young messages wait for their own deadline.
        let p = plan(&pending, limits(old), &queues(), "ts");
        assert_eq!(sizes(&p), vec![4]);
        assert_eq!(p.trim, 4);
        // Once the young ones' deadline has passed too, they go.
        let p = plan(&pending, limits(young), &queues(), "ts");
        assert_eq!(sizes(&p), vec![4, 2]);
    }

    #[test]
    fn byte_caps_split_envelopes_and_commits() {
        let items = ["\"aaaa\"", "\"bbbb\"", "\"cccc\"", "\"dddd\"", "\"eeee\""];
        // Each message counts 7 bytes: two fit under 15, a third would not.
        let caps = |commit| Limits {
            batch_size: 10,
            max_envelopes: 10,
            flush_seen_by: Some(Instant::now()),
            max_envelope_bytes: 15,
            max_commit_bytes: commit,
            max_value_bytes: 512 << 20,
        };
        let (p, _) = run(&items, caps(1000));
        assert_eq!(sizes(&p), vec![2, 2, 1]);
        assert_eq!(p.trim, 5);
        // Once a commit carries 14 bytes it takes no further envelope.
        let (p, _) = run(&items, caps(14));
        assert_eq!(sizes(&p), vec![2]);
        assert_eq!(p.trim, 2);
    }

    #[test]
    fn nothing_to_do_for_a_young_partial_batch() {
        let (p, _) = run(&["1"], FULL_ONLY);
        assert!(p.is_empty());
        assert!(p.envelopes.is_empty());
    }

    #[test]
    fn bad_messages_never_wait_for_good_ones() {
        let (p, _) = run(&["x", "{", "1"], FULL_ONLY);
        assert_eq!(p.trim, 2);
        assert_eq!(p.dead_letters.len(), 2);
        assert!(p.envelopes.is_empty());
        // A bad message after a waiting good one waits with it, then leaves with it.
        let (p, _) = run(&["1", "bad", "2", "3", "oops"], FULL_ONLY);
        assert_eq!(sizes(&p), vec![2]);
        assert_eq!(p.trim, 3);
        assert_eq!(p.dead_letters.len(), 1);
        let (p, _) = run(&["1", "2", "bad", "oops"], FULL_ONLY);
        assert_eq!(p.trim, 4);
        assert_eq!(p.dead_letters.len(), 2);
        let (p, _) = run(
            &["1", "bad"],
            Limits {
                flush_seen_by: Some(Instant::now()),
                ..FULL_ONLY
            },
        );
        assert_eq!(p.trim, 2);
    }

    #[test]
    fn envelope_count_is_capped() {
        let (p, _) = run(
            &["1", "2", "3", "4", "5", "6"],
            Limits {
                max_envelopes: 2,
                ..FULL_ONLY
            },
        );
        assert_eq!(sizes(&p), vec![2, 2]);
        assert_eq!(p.trim, 4);
        let (p, _) = run(
            &["1", "2", "3"],
            Limits {
                max_envelopes: 1,
                flush_seen_by: Some(Instant::now()),
                ..FULL_ONLY
            },
        );
        assert_eq!(sizes(&p), vec![2]);
        assert_eq!(p.trim, 2);
    }

    /// Review (wip-review-tools): a commit caps its envelopes' bytes at `max_commit_bytes`
    /// (documented as keeping one transaction well inside Redis's query buffer limit), but
    /// its dead letters are not counted: sixteen 1 MiB messages of control bytes (each a
    /// legal size under REDIS_MAX_MESSAGE_BYTES=1048576, each record about 6 MiB) all go into
    /// one commit of ~96 MiB, past MAX_COMMIT_BYTES. A read of REDIS_PREFETCH such messages
    /// makes one commit of up to ~6 GB that must finish within REDIS_COMMAND_TIMEOUT.
    #[test]
    fn dead_letter_bytes_count_against_the_commit_cap() {
        let profile = crate::message::Profile {
            max_bytes: 1 << 20,
            max_depth: 64,
        };
        let now = Instant::now();
        let message = vec![1u8; 1 << 20];
        let pending: Vec<Peeked> = (0..16)
            .map(|_| Peeked::new(message.clone(), profile, now))
            .collect();
        let p = plan(&pending, FULL_ONLY, &queues(), "ts");
        let carried: usize = p.dead_letters.iter().map(Vec::len).sum();
        assert!(
            carried <= MAX_COMMIT_BYTES,
            "one commit carries {carried} bytes of dead letters ({} records), over \
             MAX_COMMIT_BYTES = {MAX_COMMIT_BYTES}",
            p.dead_letters.len()
        );
    }

    #[test]
    fn trailing_dead_letters_after_an_expired_partial_batch_count_against_the_cap() {
        let profile = crate::message::Profile {
            max_bytes: 1 << 20,
            max_depth: 64,
        };
        let now = Instant::now();
        let mut pending = vec![Peeked::new(b"{\"good\":1}".to_vec(), profile, now)];
        let message = vec![1u8; 1 << 20];
        pending.extend((0..16).map(|_| Peeked::new(message.clone(), profile, now)));
        let limits = Limits {
            flush_seen_by: Some(now),
            ..FULL_ONLY
        };
        let p = plan(&pending, limits, &queues(), "ts");
        assert_eq!(p.envelopes.len(), 1, "the expired partial batch goes");
        let carried: usize = p.dead_letters.iter().map(Vec::len).sum();
        assert!(
            carried <= MAX_COMMIT_BYTES,
            "one commit carries {carried} bytes of dead letters ({} records, trim {}), over \
             MAX_COMMIT_BYTES = {MAX_COMMIT_BYTES}",
            p.dead_letters.len(),
            p.trim
        );
    }

    #[test]
    fn envelopes_splice_messages_in_order() {
        let (p, pending) = run(
            &[" {\"a\":1} ", "[2]", "bad"],
            Limits {
                flush_seen_by: Some(Instant::now()),
                ..FULL_ONLY
            },
        );
        let mut bytes = Vec::new();
        p.envelopes[0]
            .write(&pending, &p.timestamp, &mut bytes)
            .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""batch":[{"a":1},[2]],"size":2"#), "{text}");
        let dl: serde_json::Value = serde_json::from_slice(&p.dead_letters[0]).unwrap();
        assert_eq!(dl["raw"], "bad");
        assert_eq!(dl["source_queue"], "src");
    }
}
