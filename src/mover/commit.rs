//! The one atomic step that hands messages over: a MULTI/EXEC transaction that LPUSHes the
//! envelopes and dead letters, then runs a small script that checks the leases and trims
//! exactly the covered items from each source (or undoes the pushes). One commit may take
//! from several sources; it trims all of them or none.
//!
//! Big values stay out of Lua: the envelopes go to plain LPUSHes, and the script only sees
//! counts. The script is sent with EVAL (not EVALSHA) so it can never fail with NOSCRIPT
//! half-way through a transaction. The next reads of the sources ride in the same round trip,
//! after EXEC, so they see the sources as the commit left them.
//!
//! The lease value moves one step with each commit (see [`crate::mover::lease`]), so when several
//! requests are in flight, a commit whose predecessor failed is refused too.

use redis::{RedisError, Value};

use super::packing;
use super::pipeline::ReadReply;
use super::verdict;
use crate::mover::plan::{Peeked, Plan, Runs};
use crate::mover::replica_ack;
use crate::redis::keys::Keys;
use crate::redis::ErrorKind;
use crate::settings::{LedgerSettings, Queues, ReplicaAck};

const COMMIT: &str = include_str!("../redis/scripts/commit.lua");

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The round trip failed; the commit may or may not have been applied.
    #[error("commit round trip failed (source {source_queue}): {source}")]
    Redis {
        /// Source list.
        source_queue: String,
        /// What Redis or the connection said.
        #[source]
        source: RedisError,
    },
    /// Redis refused the transaction or one of its commands; nothing was applied.
    #[error("{command} on {key} failed: {detail}")]
    Refused {
        /// The command that failed.
        command: &'static str,
        /// The key it worked on.
        key: String,
        /// The class of the refusal, from the server's error code (`Server` for a refusal
        /// of the commit script itself, such as `processing_not_list`).
        kind: ErrorKind,
        /// What Redis said.
        detail: String,
    },
    /// The items at the boundaries of the trim are not the ones the daemon read: something
    /// other than the daemon changed the source's tail (a producer that RPUSHes, an
    /// operator's LREM or LSET, another consumer). Nothing was applied.
    #[error("the tail of {source_queue} changed under the daemon; commit undone")]
    TailChanged {
        /// Source list.
        source_queue: String,
    },
    /// The processing list would pass `REDIS_MAX_PROCESSING_QUEUE_LENGTH`: back-pressure, not
    /// a failure. Nothing was applied.
    #[error("the processing list of {source_queue} is at its length limit; commit undone")]
    Paused {
        /// Source list.
        source_queue: String,
    },
    /// The lease was lost before the commit ran; nothing was applied.
    #[error("lease on {source_queue} was lost; commit undone")]
    Fenced {
        /// Source list.
        source_queue: String,
    },
    /// The commit landed, but the `WAIT` after it was refused (`NOPERM` without `+wait`).
    #[error("the commit landed, but WAIT after it failed: {detail}")]
    Wait {
        /// The class of the refusal.
        kind: ErrorKind,
        /// What Redis said.
        detail: String,
    },
    /// The reply did not have the expected shape.
    #[error("unexpected reply to the commit: {0}")]
    Protocol(String),
}

/// What a request brought back.
#[derive(Debug, Default)]
pub struct Reply {
    /// What each read returned.
    pub reads: Vec<ReadReply>,
    /// With `REDIS_MIN_REPLICAS_ACK`, after a commit: how many replicas acknowledged it.
    pub replicas: Option<i64>,
}

/// A read of a source's tail to run after the commit.
#[derive(Debug, Clone, Copy)]
pub struct Read {
    /// Which source (its index in priority order).
    pub source: usize,
    /// Items to skip from the tail (already held locally and not trimmed by this commit).
    pub skip: usize,
    /// Items to read.
    pub count: usize,
}

/// One round trip, packed and ready: an optional commit, then an optional read.
#[derive(Debug)]
pub struct Request {
    /// The commands, packed for the wire.
    packed: Vec<u8>,
    envelopes: usize,
    dead_letters: usize,
    committing: bool,
    /// A `WAIT` follows the commit.
    waiting: bool,
    /// The source of each read, in order.
    reads: Vec<usize>,
    /// For a read without a commit: the lease key and the value it must find there (see
    /// [`Request::new`]).
    lease_check: Option<(String, String)>,
    /// Replies before the reads'.
    small_replies: usize,
}

/// What to commit: the plan and the lease values it moves between.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The runs of messages the plan was made over.
    pub pending: &'a Runs<'a>,
    /// Lease value the commit must find.
    pub lease_before: &'a str,
    /// Lease value it leaves for the next commit.
    pub lease_after: &'a str,
    /// Now, in ms since the epoch, for the stats hash.
    pub now_ms: i64,
    /// The processing list's length limit, if any: the commit is refused (`Paused`) when its
    /// envelopes would take the list past it.
    pub max_processing: Option<usize>,
    /// `REDIS_MIN_REPLICAS_ACK`: `WAIT` after the commit, in the same round trip.
    pub replica_ack: Option<ReplicaAck>,
    /// The batch ledger's settings when it is on: each envelope then gets its entry in the
    /// same transaction (see [`crate::mover::ledger`]).
    pub ledger: Option<&'a LedgerSettings>,
}

impl Request {
    /// Pack `commit` (skipped when its plan is empty) followed by `reads`.
    pub fn new(keys: &Keys, queues: &Queues, commit: Commit<'_>, reads: &[Read]) -> Self {
        let plan = commit.plan;
        // Everything after the envelopes is packed first, so the request's buffer is
        // allocated once, at its final size, and the envelopes are written straight into it.
        let mut pipe = redis::pipe();
        let committing = !plan.is_empty();
        if committing {
            push_dead_letters(&mut pipe, queues, plan);
            commit_script(&mut pipe, keys, queues, &commit);
            if let Some(ledger) = commit.ledger.filter(|_| !plan.envelopes.is_empty()) {
                super::ledger::append(&mut pipe, ledger, &keys.lease(), queues, &commit);
            }
            pipe.cmd("EXEC");
        }
        let ack = commit.replica_ack.filter(|_| committing);
        if let Some(ack) = ack {
            replica_ack::append_wait(&mut pipe, ack);
        }
        // A read without a commit carries no lease check of its own, yet its position assumes
        // every commit sent before it has run: a GET of the lease, compared with the value
        // those commits leave, proves it (and would catch requests reaching Redis out of order).
        let lease_check = (!committing && !reads.is_empty()).then(|| {
            pipe.cmd("GET").arg(keys.lease());
            (keys.lease(), commit.lease_before.to_owned())
        });
        // One reply per command before the reads, plus the hand-packed MULTI and envelopes.
        let small_replies = pipe.len()
            + usize::from(committing)
            + usize::from(committing && !plan.envelopes.is_empty());
        for r in reads {
            pipe.cmd("LRANGE")
                .arg(source_name(queues, r.source))
                .arg(-tail_index(r.skip + r.count))
                .arg(-tail_index(r.skip) - 1);
        }
        let rest = pipe.get_packed_pipeline();
        let mut packed = Vec::new();
        if committing {
            packed.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
            if !plan.envelopes.is_empty() {
                let (processing, envelopes) = (&queues.processing, &plan.envelopes);
                let envelopes = packing::Envelopes::new(envelopes, commit.pending, &plan.timestamp);
                packed.reserve(envelopes.lpush_len(processing) + rest.len());
                envelopes.lpush(&mut packed, processing);
            }
        }
        packed.extend_from_slice(&rest);
        Request {
            packed,
            envelopes: plan.envelopes.len(),
            dead_letters: plan.dead_letters.len(),
            committing,
            waiting: ack.is_some(),
            reads: reads.iter().map(|r| r.source).collect(),
            lease_check,
            small_replies,
        }
    }

    /// The request as bytes for the wire.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Replies before the reads' (`MULTI`, each queued command, `EXEC`, or the lease `GET`).
    pub fn small_replies(&self) -> usize {
        self.small_replies
    }

    /// The source of each read, in order.
    pub fn read_sources(&self) -> &[usize] {
        &self.reads
    }

    /// Check the replies before the reads': the lease check of a plain read, or the commit's
    /// verdict and what `WAIT` said (how many replicas acknowledged it).
    pub fn check(
        &self,
        mut replies: Vec<Value>,
        queues: &Queues,
    ) -> Result<Option<i64>, CommitError> {
        if let Some((lease_key, expected)) = &self.lease_check {
            match replies.pop() {
                Some(Value::BulkString(found)) if found == expected.as_bytes() => {}
                Some(Value::ServerError(e)) => {
                    return Err(verdict::refused("GET", lease_key.clone(), &e))
                }
                _ => {
                    return Err(CommitError::Fenced {
                        source_queue: queues.sources_label(),
                    })
                }
            }
        }
        let replicas = match self.waiting {
            true => Some(replica_ack::parse_wait(replies.pop())?),
            false => None,
        };
        if self.committing {
            let exec = replies
                .pop()
                .ok_or_else(|| CommitError::Protocol("missing EXEC reply".into()))?;
            verdict::check_exec(exec, self.envelopes, self.dead_letters, queues)?;
        }
        Ok(replicas)
    }
}

/// The name of source `k`.
fn source_name(queues: &Queues, k: usize) -> &str {
    queues.sources.get(k).map_or("", String::as_str)
}

/// The LPUSH of the dead letters (the envelopes' is packed by hand: see [`packing`]).
fn push_dead_letters(pipe: &mut redis::Pipeline, queues: &Queues, plan: &Plan) {
    if !plan.dead_letters.is_empty() {
        let lpush = pipe.cmd("LPUSH").arg(&queues.dead_letter);
        for d in &plan.dead_letters {
            lpush.arg(&d[..]);
        }
    }
}

/// The `EVAL` of `commit.lua` with its KEYS and ARGV (see the script's header). Every
/// source takes part, so every lease is checked, even where nothing is trimmed.
fn commit_script(pipe: &mut redis::Pipeline, keys: &Keys, queues: &Queues, commit: &Commit<'_>) {
    let plan = commit.plan;
    let sources = queues.sources.len();
    let eval = pipe.cmd("EVAL");
    eval.arg(COMMIT)
        .arg(3 + 3 * sources + plan.by_reference.len())
        .arg(&queues.processing)
        .arg(&queues.dead_letter)
        .arg(keys.stats());
    // Source lease then legacy lease, per source (see `Keys::leases`).
    let leases = keys.leases();
    for (source, pair) in queues.sources.iter().zip(leases.chunks(2)) {
        eval.arg(source).arg(pair);
    }
    for moved in &plan.by_reference {
        eval.arg(&moved.key);
    }
    eval.arg(commit.lease_before)
        .arg(commit.lease_after)
        .arg(token_prefix(commit.lease_before))
        .arg(plan.envelopes.len())
        .arg(plan.dead_letters.len())
        .arg(plan.messages)
        .arg(commit.now_ms)
        .arg(commit.max_processing.unwrap_or(0))
        .arg(sources);
    let fingerprint = |p: Option<&Peeked>| p.map_or_else(String::new, Peeked::fingerprint);
    for k in 0..sources {
        let trim = plan.trims.get(k).copied().unwrap_or(0);
        let run = commit.pending.run(k);
        let covered = &run[..trim.min(run.len())];
        eval.arg(trim)
            .arg(fingerprint(covered.first()))
            .arg(fingerprint(covered.last()));
    }
    eval.arg(plan.by_reference.len());
    for moved in &plan.by_reference {
        // Its source, and its position from that source's tail once the commits before this
        // one have run.
        eval.arg(moved.source + 1).arg(moved.index + 1);
    }
}

/// The acquisition part of a lease value `<consumer>/<token>.<seq>`: everything up to and
/// including the last `.` (consumer names hold no `/`, tokens are hex).
pub fn token_prefix(lease_value: &str) -> &str {
    lease_value
        .rfind('.')
        .map_or(lease_value, |dot| &lease_value[..=dot])
}

/// What the commit script compares with the item it finds at a boundary of the trim:
/// `<length>:<sha1 hex>` of the item, or of its first and last 1024 bytes when it is longer
/// than 2048 bytes (see `commit.lua`).
pub fn fingerprint(item: &[u8]) -> String {
    if item.len() > 2048 {
        fingerprint_of_ends(item.len(), &item[..1024], &item[item.len() - 1024..])
    } else {
        let mut sha = sha1_smol::Sha1::new();
        sha.update(item);
        format!("{}:{}", item.len(), sha.digest())
    }
}

/// [`fingerprint`] of an item longer than 2048 bytes, from its length and its first and last
/// 1024 bytes (all that is kept of a message skipped as it streamed past).
pub fn fingerprint_of_ends(len: usize, head: &[u8], tail: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(head);
    sha.update(tail);
    format!("{len}:{}", sha.digest())
}

/// An LRANGE index counted from the tail. A list cannot hold more than `i64::MAX` items.
fn tail_index(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl CommitError {
    /// Error class for metrics and the `error_kind` log field.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CommitError::Redis { source, .. } => ErrorKind::of(source),
            CommitError::Refused { kind, .. } => *kind,
            CommitError::Fenced { .. } => ErrorKind::Fenced,
            CommitError::TailChanged { .. } => ErrorKind::TailChanged,
            CommitError::Paused { .. } => ErrorKind::Other,
            CommitError::Wait { kind, .. } => *kind,
            CommitError::Protocol(_) => ErrorKind::Protocol,
        }
    }
}
